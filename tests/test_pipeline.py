"""The data-construction pipeline on tiny local models: sample, score, build, SFT, and `wrpo run`."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from wrpo.cli import app
from wrpo.data.construct import build_pairs, build_sft, in_sft_split
from wrpo.data.records import iter_quadruples
from wrpo.demo.tiny import build_bpe_tokenizer, build_char_tokenizer, save_tiny_model
from wrpo.errors import InputError
from wrpo.generation.settings import SamplingSettings
from wrpo.generation.sample import sample
from wrpo.reward.score import score

TINY = SamplingSettings(n=3, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=1)


def prompts_file(path, words=WORDS):
    return write_jsonl(path, [{"prompt_id": f"w{i}", "prompt": f"reverse {w}"} for i, w in enumerate(words)])


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Two sources and a target of three architectures and three tokenizers."""
    root = tmp_path_factory.mktemp("zoo")
    corpus = [f"reverse {w} {w[::-1]}" for w in WORDS * 5]
    return {
        "llama-char": save_tiny_model(root / "llama-char", build_char_tokenizer(), "llama", seed=1),
        "gpt2-bpe": save_tiny_model(root / "gpt2-bpe", build_bpe_tokenizer(corpus, 300), "gpt2", seed=2),
        "qwen2-bpe": save_tiny_model(root / "qwen2-bpe", build_bpe_tokenizer(corpus, 280), "qwen2", seed=3),
    }


def test_sample_writes_n_responses_per_prompt_with_the_settings(zoo, tmp_path):
    output = sample(str(zoo["gpt2-bpe"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY.model_copy(update={"batch_size": 4}))
    rows = read(output)
    assert sorted(r["prompt_id"] for r in rows) == sorted(f"w{i}" for i in range(len(WORDS)))
    assert all(len(r["responses"]) == 3 and r["model"] == "gpt2-bpe" for r in rows)
    assert rows[0]["generation"] == {"n": 3, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 1,
                                     "backend": "hf", "batch_size": 4, "shard": "0/1"}
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
        sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), output, TINY.model_copy(update={"batch_size": 3}))
    assert read(sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), output, TINY)) == rows


def test_shards_split_the_prompts_without_overlap(zoo, tmp_path):
    prompts = prompts_file(tmp_path / "p.jsonl")
    ids = [{r["prompt_id"] for r in read(sample(str(zoo["llama-char"]), prompts, tmp_path / f"s{i}.jsonl", TINY,
                                                shard=(i, 3)))} for i in range(3)]
    assert set().union(*ids) == {f"w{i}" for i in range(len(WORDS))} and sum(map(len, ids)) == len(WORDS)


def test_a_killed_sample_run_resumes_to_exactly_the_rows_of_an_uninterrupted_run(zoo, tmp_path):
    words = [w + str(i) for i in range(5) for w in WORDS]  # 60 prompts, one per batch: long enough to kill
    prompts = prompts_file(tmp_path / "p.jsonl", words)
    settings = SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=5)
    whole = read(sample(str(zoo["llama-char"]), prompts, tmp_path / "whole.jsonl", settings.model_copy(update={"batch_size": 1})))

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


def test_a_prompt_scored_twice_is_an_error(zoo, tmp_path):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    with pytest.raises(InputError, match=r"s.jsonl:1: model 'llama-char' and prompt '.*' were already read at"):
        score([samples, samples], "scorers:reversal_similarity", tmp_path / "scored.jsonl")


def test_score_with_a_python_scorer(zoo, tmp_path):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    rows = read(score([samples], "scorers:reversal_similarity", tmp_path / "scored.jsonl", batch_size=5))
    assert len(rows) == len(WORDS)
    for row in rows:
        word = row["prompt"].split()[-1]
        assert row["scores"] == [pytest.approx(__import__("difflib").SequenceMatcher(None, r, word[::-1]).ratio())
                                 for r in row["responses"]]


@pytest.mark.parametrize("scorer, message", [("scorers:fails_on_grape", "failed on prompt 'w1' (ValueError: cannot score grapes)"),
                                             ("scorers:nan_on_grape", "returned nan for response 0 of prompt 'w1'")])
def test_a_failing_scorer_names_the_row_and_keeps_every_row_scored_before_it(zoo, tmp_path, scorer, message):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    order = [row["prompt_id"] for row in read(samples)]
    with pytest.raises(InputError) as raised:
        score([samples], scorer, tmp_path / "scored.jsonl", batch_size=1)
    grape_line = order.index("w1") + 1
    assert str(raised.value) == f"{samples}:{grape_line}: scorer {scorer} {message}"
    kept = read(tmp_path / "scored.jsonl.partial")
    assert [row["prompt_id"] for row in kept] == order[: grape_line - 1]
    # A fixed scorer continues from there.
    rows = read(score([samples], "scorers:reversal_similarity", tmp_path / "scored.jsonl", batch_size=1))
    assert [row["prompt_id"] for row in rows] == order


def scored_rows(model, scores_per_prompt):
    return [{"prompt_id": pid, "prompt": f"reverse {pid}", "model": model, "responses": [f"{model}-{pid}-{i}" for i in range(len(s))],
             "scores": s} for pid, s in scores_per_prompt.items()]


def test_build_sft_picks_the_best_response_over_all_sources_and_splits_stably(tmp_path):
    ids = [f"p{i}" for i in range(30)]
    a = write_jsonl(tmp_path / "a.jsonl", scored_rows("a", {pid: [0.1, 0.9 if i % 2 else 0.2] for i, pid in enumerate(ids)}))
    b = write_jsonl(tmp_path / "b.jsonl", scored_rows("b", {pid: [0.5, 0.4] for pid in ids}))
    summary = build_sft([a, b], tmp_path / "sft.jsonl", tmp_path / "pref.jsonl", sft_fraction=1 / 3, seed=7)
    sft_rows, pref_rows = read(tmp_path / "sft.jsonl"), read(tmp_path / "pref.jsonl")
    assert sorted(r["prompt_id"] for r in sft_rows + pref_rows) == sorted(ids)
    assert {r["prompt_id"] for r in sft_rows} == {pid for pid in ids if in_sft_split(pid, 1 / 3, 7)}
    for row in sft_rows:
        odd = int(row["prompt_id"][1:]) % 2
        assert row["response"] == (f"a-{row['prompt_id']}-1" if odd else f"b-{row['prompt_id']}-0")
    for row in pref_rows:
        assert [s["score"] for s in row["source_responses"]] == sorted([s["score"] for s in row["source_responses"]], reverse=True)
    assert summary.wins == {"a": 15, "b": 15}
    # The split is a function of the id and seed alone: other data, same ids, same split.
    build_sft([b], tmp_path / "sft2.jsonl", tmp_path / "pref2.jsonl", sft_fraction=1 / 3, seed=7)
    assert {r["prompt_id"] for r in read(tmp_path / "sft2.jsonl")} == {r["prompt_id"] for r in sft_rows}


def test_build_pairs_takes_best_and_worst_target_samples_and_drops_ties(tmp_path):
    pref = write_jsonl(tmp_path / "pref.jsonl", [
        {"prompt_id": pid, "prompt": f"reverse {pid}", "source_responses": [
            {"model": "a", "text": f"best-{pid}", "score": 0.9}, {"model": "b", "text": f"second-{pid}", "score": 0.5}]}
        for pid in ("p1", "p2", "p3")])
    target = write_jsonl(tmp_path / "t.jsonl", scored_rows("t", {"p1": [0.3, 0.8, 0.1], "p2": [0.4, 0.4, 0.4]}))
    summary = build_pairs(pref, [target], tmp_path / "q.jsonl", top_k_sources=2)
    quadruples = [q for _, q in iter_quadruples(tmp_path / "q.jsonl")]
    assert len(quadruples) == 1
    q = quadruples[0]
    assert (q.chosen_source, q.chosen_target, q.rejected) == (["best-p1", "second-p1"], "t-p1-1", "t-p1-2")
    assert q.source_scores == [0.9, 0.5]
    assert summary.dropped == {"prompts whose target samples all score the same": 1,
                               "prompts with fewer than 2 target samples": 1}


def recipe_file(tmp_path, zoo, **wrpo):
    recipe = {
        "workdir": "work", "prompts": "prompts.jsonl",
        "sources": [{"name": "llama-char", "model": str(zoo["llama-char"])},
                    {"name": "gpt2-bpe", "model": str(zoo["gpt2-bpe"])}],
        "target": {"name": "qwen2-bpe", "model": str(zoo["qwen2-bpe"])},
        "reward": {"function": "scorers:reversal_similarity"},
        "sampling": {"n": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "batch_size": 6},
        "split": {"sft_fraction": 0.34, "seed": 1},
        "sft": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 64},
        "wrpo": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "beta": 0.5,
                 "max_length": 64, "max_prompt_length": 32, **wrpo},
    }
    prompts_file(tmp_path / "prompts.jsonl", [w + s for s in ("", "s", "x") for w in WORDS])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_recipe_runs_end_to_end_then_skips_what_is_done_and_redoes_what_changed(zoo, tmp_path):
    recipe = recipe_file(tmp_path, zoo)
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    work = tmp_path / "work"
    quadruples = [q for _, q in iter_quadruples(work / "data" / "quadruples.jsonl")]
    assert quadruples and all(q.meta["source_models"][0] in ("llama-char", "gpt2-bpe") for q in quadruples)
    assert len(read(work / "models" / "target-sft-wrpo" / "metrics.jsonl")) == 2
    assert (work / "models" / "target-sft" / "tokenizer.json").exists()
    first = result.output.strip().splitlines()[-1]
    assert "wrpo: ran" in first and "sample/sources/llama-char: ran" in first

    again = CliRunner().invoke(app, ["run", str(recipe)])
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1].count("skipped") == 10

    changed = recipe_file(tmp_path, zoo, beta=0.3)
    last = CliRunner().invoke(app, ["run", str(changed)]).output.strip().splitlines()[-1]
    assert "wrpo: redone" in last and last.count("skipped") == 9


def test_an_edited_python_scorer_redoes_the_scoring_stages(zoo, tmp_path, monkeypatch):
    module = tmp_path / "edited_scorer.py"
    module.write_text("from scorers import reversal_similarity as score\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = recipe_file(tmp_path, zoo)
    recipe.write_text(recipe.read_text().replace("scorers:reversal_similarity", "edited_scorer:score"))
    assert CliRunner().invoke(app, ["run", str(recipe)]).exit_code == 0
    module.write_text("# same scores, edited source\nfrom scorers import reversal_similarity as score\n")
    last = CliRunner().invoke(app, ["run", str(recipe)]).output.strip().splitlines()[-1]
    # Scores are the same, so the stages after them find their inputs unchanged.
    assert last.count("redone") == 3 and "score/target-sft: redone" in last and "wrpo: skipped" in last


def test_top_k_sources_reaches_training(zoo, tmp_path):  # a mismatch: test_settings.py
    from wrpo.pipeline.recipe import load_recipe
    from wrpo.pipeline.run import plan

    path = recipe_file(tmp_path, zoo)
    path.write_text(path.read_text() + "pairs: {top_k_sources: 2}\n")
    recipe = load_recipe(path)
    stages = {stage.name: stage for stage in plan(recipe)}
    assert stages["wrpo"].settings["top_k_sources"] == 2


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


def test_the_shipped_paper_recipe_is_valid(tmp_path):
    """Validated, not run: its models are far too large for this machine."""
    import dataclasses
    from pathlib import Path

    from wrpo.pipeline.recipe import load_recipe
    from wrpo.pipeline.run import plan
    from wrpo.training.config import WRPOConfig
    from wrpo.training.sft import WRPOSFTConfig

    path = Path(__file__).parent.parent / "recipes" / "llama3-8b-ultrafeedback.yaml"
    recipe = load_recipe(path)
    assert len(recipe.sources) == 10 and recipe.target.model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert recipe.reward.model == "RLHFlow/ArmoRM-Llama3-8B-v0.1" and recipe.reward.trust_remote_code
    assert (recipe.sampling.n, recipe.sampling.temperature, recipe.sampling.top_p) == (5, 0.8, 0.95)
    assert all(source.backend == "vllm" for source in recipe.sources)
    wrpo, sft = recipe.wrpo, recipe.sft
    assert (wrpo["beta"], wrpo["alpha"], wrpo["alpha_schedule"], wrpo["learning_rate"]) == (0.01, 0.1, "linear", 3e-7)
    assert (wrpo["max_length"], wrpo["max_prompt_length"], sft["learning_rate"], sft["max_length"]) == (2048, 1800, 7e-6, 2048)
    assert wrpo["per_device_train_batch_size"] * wrpo["gradient_accumulation_steps"] * 8 == 128
    assert sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] * 8 == 128
    for section, config_class in ((wrpo, WRPOConfig), (sft, WRPOSFTConfig)):
        assert set(section) <= {f.name for f in dataclasses.fields(config_class)}
        assert json.loads((path.parent / section["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3
    # Every stage can be planned here, on a machine without the GPUs its bf16 and DeepSpeed settings need:
    # those are checked by the machine that trains.
    assert [stage.name for stage in plan(recipe)][-3:] == ["score/target-sft", "build-pairs", "wrpo"]


def test_score_and_sft_through_the_command_line(zoo, tmp_path):
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl"), tmp_path / "s.jsonl", TINY)
    failed = CliRunner().invoke(app, ["score", "--responses", str(samples), "--reward-model", "scorers:nan_on_grape",
                                      "--output", str(tmp_path / "scored.jsonl")])
    assert failed.exit_code == 2 and failed.stderr.count("\n") == 1
    assert failed.stderr.startswith(f"error: {samples}:") and "returned nan" in failed.stderr

    sft_rows = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"reverse {w}", "response": w[::-1]} for w in WORDS])
    result = CliRunner().invoke(app, ["sft", "--model", str(zoo["gpt2-bpe"]), "--data", str(sft_rows), "--output",
                                      str(tmp_path / "sft"), "--max-steps", "2", "--batch-size", "4", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    assert len(read(tmp_path / "sft" / "metrics.jsonl")) == 2
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_sft_honours_the_older_gradient_checkpointing_name(tmp_path):
    from wrpo.training.sft import WRPOSFTConfig

    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated"):  # transformers' own warning
        assert WRPOSFTConfig(output_dir=str(tmp_path), gradient_checkpointing=True).activation_checkpointing is True
    assert WRPOSFTConfig(output_dir=str(tmp_path)).activation_checkpointing is False


def test_sft_trains_on_response_tokens_only(zoo, tmp_path):
    from trl import SFTTrainer

    from wrpo.modeling import load_causal_lm, load_tokenizer
    from wrpo.training.sft import WRPOSFTConfig, load_sft_dataset

    tokenizer = load_tokenizer(str(zoo["llama-char"]))
    rows = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "reverse apple", "response": "elppa"}])
    trainer = SFTTrainer(model=load_causal_lm(str(zoo["llama-char"])), processing_class=tokenizer,
                         args=WRPOSFTConfig(output_dir=str(tmp_path / "out")),
                         train_dataset=load_sft_dataset(rows, tokenizer))
    # The collated batch, what the loss sees (TRL puts the labels in the dataset or makes them here).
    batch = trainer.data_collator([trainer.train_dataset[0]])
    tokens, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    trained = [token for token, label in zip(tokens, labels) if label != -100]
    untrained = [token for token, label in zip(tokens, labels) if label == -100]
    assert tokenizer.decode(trained) == "elppa</s>"
    assert tokenizer.decode(untrained) == "<|user|>reverse apple</s><|assistant|>"


def test_a_reward_model_folder_scores_with_its_own_chat_template(zoo, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification

    from wrpo.demo.tiny import tiny_config
    from wrpo.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(zoo["llama-char"]))
    torch.manual_seed(0)
    reward_dir = tmp_path / "reward"
    config = tiny_config("llama", tokenizer)
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(reward_dir)
    tokenizer.save_pretrained(reward_dir)
    samples = sample(str(zoo["llama-char"]), prompts_file(tmp_path / "p.jsonl", WORDS[:3]), tmp_path / "s.jsonl", TINY)
    rows = read(score([samples], str(reward_dir), tmp_path / "scored.jsonl", batch_size=4))

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    for row in rows:
        for response, value in zip(row["responses"], row["scores"]):
            text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                                  {"role": "assistant", "content": response}], tokenize=False)
            with torch.no_grad():
                expected = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0]
            assert value == pytest.approx(expected.item(), abs=1e-4)


def test_the_vllm_backend_without_vllm_says_how_to_install_it(zoo, tmp_path):
    if importlib.util.find_spec("vllm"):
        pytest.skip("vLLM is installed here")
    result = CliRunner().invoke(app, ["sample", "--model", str(zoo["llama-char"]), "--prompts",
                                      str(prompts_file(tmp_path / "p.jsonl")), "--output", str(tmp_path / "o.jsonl"),
                                      "--backend", "vllm"])
    assert result.exit_code == 2 and "pip install 'wrpo[vllm]'" in result.stderr


def test_a_bad_recipe_names_the_file_line_and_setting(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("workdir: w\nprompts: p.jsonl\nsources:\n  - {name: a, model: m}\n  - name: b\n    model: m\n"
                      "    backend: tgi\ntarget: {name: t, model: m}\nreward: {function: 'scorers:reversal_similarity'}\n")
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {recipe}:7: sources.1.backend: Input should be 'hf', 'vllm' or 'openai'\n"


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
