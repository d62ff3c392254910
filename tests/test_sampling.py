"""`wrpo sample` on tiny local models: settings, stopping, resuming, shards, bad input, `wrpo merge`."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import TINY, WORDS, prompts_file, read, write_jsonl
from wrpo.cli import app
from wrpo.errors import InputError
from wrpo.generation.sample import sample
from wrpo.generation.settings import SamplingSettings
from wrpo.reward.score import score
from wrpo.stop_request import STOP_FILE_VARIABLE, StopRequested


def test_sample_writes_n_responses_per_prompt_with_the_settings(zoo, tmp_path):
    output = sample(str(zoo["gpt2-bpe"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl",
                    TINY.model_copy(update={"batch_size": 4}))
    rows = read(output)
    assert sorted(r["prompt_id"] for r in rows) == sorted(f"w{i}" for i in range(len(WORDS)))
    assert all(len(r["responses"]) == 3 and r["model"] == "gpt2-bpe" for r in rows)
    assert rows[0]["generation"] == {"n": 3, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 1,
                                     "backend": "hf", "batch_size": 4}
    assert not (tmp_path / "s.jsonl.partial").exists()


def test_greedy_sampling_gives_n_identical_answers(zoo, tmp_path):
    greedy = SamplingSettings(n=3, temperature=0.0, max_new_tokens=8)
    rows = read(sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", greedy))
    assert all(len(set(r["responses"])) == 1 and len(r["responses"]) == 3 for r in rows)


def test_sampling_stops_at_every_end_of_turn_token_of_the_model(zoo, tmp_path):
    from transformers import AutoModelForCausalLM

    from wrpo.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(zoo["llama-char"]))
    model = AutoModelForCausalLM.from_pretrained(zoo["llama-char"])
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("e")]
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    rows = read(sample(str(tmp_path / "model"), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl",
                       SamplingSettings(n=4, temperature=1.0, top_p=1.0, max_new_tokens=24)))
    assert not any("e" in response[:-1] for row in rows for response in row["responses"])


def test_resuming_with_other_settings_is_refused(zoo, tmp_path):
    output = tmp_path / "s.jsonl"
    rows = read(sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), output, TINY))
    output.rename(tmp_path / "s.jsonl.partial")  # as if it had not finished
    with pytest.raises(InputError, match="with other settings"):
        sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), output,
               TINY.model_copy(update={"batch_size": 3}))
    assert read(sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), output, TINY)) == rows


def test_shards_split_the_prompts_without_overlap_into_the_rows_of_one_run(zoo, tmp_path):
    prompts = prompts_file(tmp_path / "p.jsonl")
    settings = TINY.model_copy(update={"batch_size": 2})
    shards = [read(sample(str(zoo["llama-char"]), prompts, tmp_path / f"s{i}.jsonl", settings, shard=(i, 3)))
              for i in range(3)]
    ids = [{r["prompt_id"] for r in rows} for rows in shards]
    assert set().union(*ids) == {f"w{i}" for i in range(len(WORDS))} and sum(map(len, ids)) == len(WORDS)
    # A shard takes whole batches of the one-process run, whose samples are seeded by their prompts.
    whole = {r["prompt_id"]: r for r in read(sample(str(zoo["llama-char"]), prompts, tmp_path / "all.jsonl", settings))}
    assert {r["prompt_id"]: r for rows in shards for r in rows} == whole


@pytest.mark.slow
def test_a_killed_sample_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run(zoo, tmp_path):
    words = [w + str(i) for i in range(5) for w in WORDS]  # 60 prompts, one per batch: long enough to kill
    prompts = prompts_file(tmp_path / "p.jsonl", words)
    settings = SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=5)
    whole = read(sample(str(zoo["llama-char"]), prompts, tmp_path / "whole.jsonl",
                        settings.model_copy(update={"batch_size": 1})))

    output = tmp_path / "killed.jsonl"
    partial = tmp_path / "killed.jsonl.partial"
    command = [sys.executable, "-m", "wrpo.cli", "sample", "--model", str(zoo["llama-char"]), "--prompts", str(prompts),
               "--output", str(output), "-n", "2", "--temperature", "1", "--top-p", "1", "--max-new-tokens", "24",
               "--seed", "5", "--batch-size", "1"]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not partial.exists() or partial.read_text().count("\n") < 3):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists() and not output.exists(), "the run finished before it could be killed"
    kept = partial.read_text().count("\n")
    assert 3 <= kept < len(words)
    with partial.open("a") as handle:  # as if killed in the middle of a write
        handle.write('{"prompt_id": "torn", "respon')

    resumed = read(sample(str(zoo["llama-char"]), prompts, output, settings.model_copy(update={"batch_size": 1})))
    assert resumed == whole


@pytest.mark.parametrize("case, expected", [
    ("missing_prompts", "missing.jsonl: file does not exist"),
    ("empty_prompt", "p.jsonl:2: 'prompt' is empty"),
    ("repeated_id", "p.jsonl:2: prompt_id 'a' repeats the one on line 1"),
    ("no_tokenizer", "no tokenizer could be loaded"),
    ("bad_shard", "--shard must look like I/N"),
])
def test_sample_bad_input_is_one_line_and_exit_2(zoo, tmp_path, case, expected):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt_id": "a", "prompt": "x"},
                                                 {"prompt_id": "a" if case == "repeated_id" else "b",
                                                  "prompt": "" if case == "empty_prompt" else "y"}])
    model, extra = zoo["llama-char"], []
    if case == "missing_prompts":
        prompts = tmp_path / "missing.jsonl"
    elif case == "no_tokenizer":
        model = tmp_path / "weights-only"
        (model).mkdir()
        for file in zoo["llama-char"].iterdir():
            if file.name in ("config.json", "model.safetensors", "generation_config.json"):
                (model / file.name).write_bytes(file.read_bytes())
    elif case == "bad_shard":
        extra = ["--shard", "3"]
    result = CliRunner().invoke(app, ["sample", "--model", str(model), "--prompts", str(prompts),
                                      "--output", str(tmp_path / "out.jsonl"), *extra])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and expected in result.stderr


def test_the_vllm_backend_without_vllm_says_how_to_install_it(zoo, tmp_path):
    if importlib.util.find_spec("vllm"):
        pytest.skip("vLLM is installed here")
    result = CliRunner().invoke(app, ["sample", "--model", str(zoo["llama-char"]), "--prompts",
                                      str(prompts_file(tmp_path / "p.jsonl")), "--output", str(tmp_path / "o.jsonl"),
                                      "--backend", "vllm"])
    assert result.exit_code == 2 and "pip install 'wrpo[vllm]'" in result.stderr


def test_engine_kwargs_come_from_the_command_line_as_json(zoo, tmp_path, monkeypatch):
    import wrpo.generation.sample

    called = {}
    monkeypatch.setattr(wrpo.generation.sample, "sample", lambda *args, **kwargs: called.update(kwargs) or "out")
    result = CliRunner().invoke(app, ["sample", "--model", "m", "--prompts", "p.jsonl", "--output", "o.jsonl",
                                      "--backend", "vllm", "--engine-kwargs",
                                      '{"max_model_len": 4096, "trust_remote_code": true}'])
    assert result.exit_code == 0, result.output
    assert called["backend"].engine_kwargs == {"max_model_len": 4096, "trust_remote_code": True}
    assert "--engine-kwargs" in CliRunner().invoke(app, ["sample", "--help"]).output


@pytest.mark.parametrize("given, expected", [
    ("{max_model_len: 4096}", "error: --engine-kwargs is not valid JSON (Expecting property name enclosed in "
                              "double quotes: line 1 column 2 (char 1)): '{max_model_len: 4096}'\n"),
    ("[4096]", "error: --engine-kwargs must be a JSON object ({...}), got '[4096]'\n"),
])
def test_engine_kwargs_that_are_not_a_json_object_end_with_one_line(given, expected):
    result = CliRunner().invoke(app, ["sample", "--model", "m", "--prompts", "p.jsonl", "--output", "o.jsonl",
                                      "--backend", "vllm", "--engine-kwargs", given])
    assert result.exit_code == 2 and result.stderr == expected


def test_the_vllm_backend_refuses_data_parallel_in_one_process_before_starting(zoo, tmp_path):
    result = CliRunner().invoke(app, ["sample", "--model", str(zoo["llama-char"]), "--prompts",
                                      str(prompts_file(tmp_path / "p.jsonl")), "--output", str(tmp_path / "o.jsonl"),
                                      "--backend", "vllm", "--data-parallel-size", "2"])
    assert result.exit_code == 2 and "--shard I/N" in result.stderr and result.stderr.count("\n") == 1


def test_sharded_sampling_and_scoring_merge_into_the_whole(zoo, tmp_path):
    prompts = prompts_file(tmp_path / "p.jsonl")
    shards = [sample(str(zoo["llama-char"]), prompts, tmp_path / f"s{i}.jsonl", TINY, shard=(i, 2)) for i in range(2)]
    result = CliRunner().invoke(app, ["merge", *map(str, shards), "--output", str(tmp_path / "all.jsonl")])
    assert result.exit_code == 0, result.output
    merged = read(tmp_path / "all.jsonl")
    assert sorted(r["prompt_id"] for r in merged) == sorted(f"w{i}" for i in range(len(WORDS)))
    scored = [score([tmp_path / "all.jsonl"], "scorers:reversal_similarity", tmp_path / f"c{i}.jsonl", shard=(i, 3))
              for i in range(3)]
    assert sum(len(read(path)) for path in scored) == len(WORDS)
    twice = CliRunner().invoke(app, ["merge", str(shards[0]), str(shards[0]), "--output", str(tmp_path / "x.jsonl")])
    assert twice.exit_code == 2 and "is also at" in twice.stderr


def test_sampling_and_scoring_asked_to_stop_end_after_a_batch_and_resume_to_the_uninterrupted_rows(zoo, tmp_path,
                                                                                                 monkeypatch):
    prompts = prompts_file(tmp_path / "p.jsonl")
    settings = TINY.model_copy(update={"batch_size": 2})
    whole = sample(str(zoo["llama-char"]), prompts, tmp_path / "whole.jsonl", settings)
    scored_whole = read(score([whole], "scorers:reversal_similarity", tmp_path / "scored-whole.jsonl", batch_size=2))

    stop = tmp_path / "stop"
    monkeypatch.setenv(STOP_FILE_VARIABLE, str(stop))
    stop.touch()  # asked before it started: it stops before its first batch
    with pytest.raises(StopRequested):
        sample(str(zoo["llama-char"]), prompts, tmp_path / "s.jsonl", settings)
    stop.unlink()
    assert read(sample(str(zoo["llama-char"]), prompts, tmp_path / "s.jsonl", settings)) == read(whole)

    with pytest.raises(StopRequested):  # the scorer asks once it scores a plum (WORDS[7]), mid-way
        score([whole], "scorers:asks_to_stop_on_plum", tmp_path / "scored.jsonl", batch_size=2)
    kept = read(tmp_path / "scored.jsonl.partial")
    assert 0 < len(kept) < len(WORDS) and all(row in scored_whole for row in kept)
    stop.unlink()
    assert read(score([whole], "scorers:reversal_similarity", tmp_path / "scored.jsonl", batch_size=2)) == scored_whole
