"""`wrpo eval` with models and judges behind a real OpenAI-compatible server on loopback (`transformers
serve`, tiny local models): answers through the openai backend, and the LLM judge (--judge-llm). The
judges are deterministic by construction: tiny Llamas whose output head is zero, so that every logit
is 0 and greedy decoding always emits token id 0, which is "A" (a judge that always picks the first
output) or "?" (a judge whose replies never parse)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from conftest import WORDS, read, scorers_env, write_jsonl
from servers import stop, transformers_serve
from wrpo.cli import app
from wrpo.demo.tiny import (
    CHAT_TEMPLATE,
    DEFAULT_ALPHABET,
    SPECIAL_TOKENS,
    build_char_tokenizer,
    save_tiny_model,
    tiny_config,
)
from wrpo.evaluation.llm_judge import BASELINE_FIRST, MODEL_FIRST
from wrpo.evaluation.llm_judge_settings import LLMJudge
from wrpo.evaluation.run import run_eval
from wrpo.generation.settings import GREEDY
from wrpo.pipeline.local import free_port

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
pytest.importorskip("openai")
pytestmark = [pytest.mark.server, pytest.mark.slow]

PROMPTS = 6


def save_constant_judge(folder, reply_token):
    """A tiny Llama that answers `reply_token` at every step: it is token 0 of its tokenizer, and with
    the output head's weights zero (untied from the embeddings, which stay) every logit is 0, so greedy
    decoding picks the first id. Its tokenizer decodes with a space between tokens: "A A A ...", in
    which A stands alone."""
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    tokens = [reply_token, *SPECIAL_TOKENS, *sorted(set(DEFAULT_ALPHABET) - {reply_token})]
    backend = Tokenizer(models.WordLevel({token: index for index, token in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = tiny_config("llama", tokenizer)
    config.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server that serves every model of `root` by its folder name: two answering models (character
    Llamas: transformers serve answers them as the hf backend does) and the two judges."""
    root = tmp_path_factory.mktemp("served")
    for name, seed in (("mine", 4), ("base", 5)):
        save_tiny_model(root / name, build_char_tokenizer(), "llama", seed=seed)
    save_constant_judge(root / "judge-a", "A")
    save_constant_judge(root / "judge-unsure", "?")
    port = free_port()
    server = transformers_serve(None, port, root / "server.log", cwd=root)
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{port}/v1")
    stop(server)


def prompts(path):
    return write_jsonl(path, [{"prompt_id": f"w{i}", "prompt": f"reverse {w}"} for i, w in enumerate(WORDS[:PROMPTS])])


def answers(output, label):
    (path,) = (output / "answers").glob(f"{label}-*.jsonl")
    return {row["prompt_id"]: row["responses"] for row in read(path)}


def test_eval_answers_through_a_server_as_the_hf_backend_on_the_same_weights(served, tmp_path):
    questions = write_jsonl(tmp_path / "question.jsonl", [
        {"question_id": 81 + i, "turns": [f"reverse {w}", f"now reverse {w[::-1]}"]} for i, w in enumerate(WORDS[:4])])
    common = ["eval", "--prompts", str(questions), "--judge", "scorers:reversal_similarity", "--max-new-tokens", "6",
              "--export", "arena_hard,mt_bench"]
    # The server's models by their names there: no such folder here, so nothing can be loaded locally.
    assert not (tmp_path / "mine").exists() and os.getcwd() != str(served.root)
    result = CliRunner().invoke(app, [*common, "--models", "mine", "--baseline", "base", "--backend", "openai",
                                      "--base-url", served.url, "--output", str(tmp_path / "served")])
    assert result.exit_code == 0, result.output
    local = CliRunner().invoke(app, [*common, "--models", f"mine={served.root / 'mine'}", "--baseline",
                                     f"base={served.root / 'base'}", "--output", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    report = json.loads((tmp_path / "served" / "report.json").read_text())
    assert set(report["comparisons"]) == {"mine"} and report["models"]["mine"]["judged"] == 4
    for label in ("mine", "base"):
        assert answers(tmp_path / "served", label) == answers(tmp_path / "local", label)
        assert set(answers(tmp_path / "served", label)) == {"81", "82", "83", "84"}
        # Later MT-Bench turns through the server too, and Arena-Hard's lengths counted without a tokenizer.
        turns = [[row["choices"][0]["turns"] for row in read(tmp_path / where / "exports" / "mt_bench" /
                                                             f"{label}.jsonl")] for where in ("served", "local")]
        assert turns[0] == turns[1] and all(len(answered) == 2 for answered in turns[0])
        for row in read(tmp_path / "served" / "exports" / "arena_hard" / f"{label}.jsonl"):
            (turn,) = row["choices"][0]["turns"]
            assert turn["token_len"] == len(turn["content"].split())


def judge_eval(served, tmp_path, judge, **options):
    """run_eval with the two models answering locally (hf) and `judge` on the server."""
    models = {"mine": str(served.root / "mine"), "base": str(served.root / "base")}
    settings = GREEDY.model_copy(update={"max_new_tokens": options.pop("max_new_tokens", 6)})
    return run_eval(models, "base", prompts(tmp_path / "p.jsonl"), None, tmp_path / "out", settings,
                    llm_judge=LLMJudge(model=judge, base_url=options.pop("base_url", served.url), **options))


def test_an_always_first_judge_is_cancelled_by_asking_both_orders(served, tmp_path):
    section = judge_eval(served, tmp_path, "judge-a")["llm_judge"]
    figures = section["comparisons"]["mine"]
    assert figures["win_rate"] == 0.5 and figures["ci95"] == [0.5, 0.5]
    assert (figures["wins"], figures["ties"], figures["losses"]) == (0, PROMPTS, 0)  # every prompt 0.5
    assert figures["first_position_share"] == 1.0 and figures["judged"] == PROMPTS
    assert figures["unparseable"] == {MODEL_FIRST: 0, BASELINE_FIRST: 0} and section["unparseable"] == []
    assert section["asked"] == 2 * PROMPTS and section["from_cache"] == 0
    # transformers serve reports usage: 16 tokens a reply (the judge never stops), the prompt's in the hundreds.
    assert figures["completion_tokens"] == 2 * PROMPTS * 16 and figures["prompt_tokens"] > 2 * PROMPTS * 100
    assert section["seconds"] > 0 and figures["seconds"] > 0
    rows = read(Path(section["cache"]))
    assert len(rows) == 2 * PROMPTS and {row["verdict"] for row in rows} == {"A"}
    assert {row["reply"] for row in rows} == {" ".join(["A"] * 16)}
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## LLM judge `judge-a`" in markdown and "| mine | 0.500 | 0.500-0.500 |" in markdown
    assert (tmp_path / "out" / "llm_win_rates.png").read_bytes()[:4] == b"\x89PNG"
    assert "models" not in json.loads((tmp_path / "out" / "report.json").read_text())  # no reward judge given


def test_a_judge_whose_replies_never_parse_is_counted_named_and_ends_with_one_line(served, tmp_path):
    result = CliRunner().invoke(app, [
        "eval", "--models", f"mine={served.root / 'mine'}", "--baseline", f"base={served.root / 'base'}", "--prompts",
        str(prompts(tmp_path / "p.jsonl")), "--output", str(tmp_path / "out"), "--max-new-tokens", "6",
        "--judge-llm", "judge-unsure", "--judge-base-url", served.url])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("error: the LLM judge's replies about mine could not be parsed for any prompt")
    assert str(tmp_path / "out" / "report.md") in result.stderr
    section = json.loads((tmp_path / "out" / "report.json").read_text())["llm_judge"]
    figures = section["comparisons"]["mine"]
    assert figures["win_rate"] is None and figures["judged"] == 0
    assert figures["unjudged"] == [f"w{i}" for i in range(PROMPTS)]
    assert figures["unparseable"] == {MODEL_FIRST: PROMPTS, BASELINE_FIRST: PROMPTS}
    listed = {(item["model"], item["prompt_id"], item["order"]) for item in section["unparseable"]}
    assert listed == {("mine", f"w{i}", order) for i in range(PROMPTS) for order in (MODEL_FIRST, BASELINE_FIRST)}
    assert all(item["reply"].startswith("?") for item in section["unparseable"])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"### Unparseable replies ({2 * PROMPTS})" in markdown and "- mine, prompt w3, baseline_first: " in markdown
    assert "| mine | n/a | n/a |" in markdown


def test_judgements_come_from_the_cache_and_a_new_template_or_answer_is_asked_again(served, tmp_path):
    first = judge_eval(served, tmp_path, "judge-a")["llm_judge"]
    assert first["asked"] == 2 * PROMPTS
    # A crash mid-write leaves half a line: it is dropped, the rest is used.
    cache = tmp_path / "out" / "judgements"
    (cache_file,) = cache.glob("*.jsonl")
    with cache_file.open("a") as handle:
        handle.write('{"prompt_id": "w0", "ord')
    # Nothing listens at this address: a single request would fail. The server is not part of the key.
    dead = f"http://127.0.0.1:{free_port()}/v1"
    again = judge_eval(served, tmp_path, "judge-a", base_url=dead)["llm_judge"]
    assert again["asked"] == 0 and again["from_cache"] == 2 * PROMPTS
    assert again["comparisons"] == first["comparisons"]
    assert cache_file.read_text().endswith("}\n") and len(read(cache_file)) == 2 * PROMPTS

    changed = judge_eval(served, tmp_path, "judge-a", template="Pick: {instruction}\nA: {output_a}\nB: {output_b}\n")
    assert changed["llm_judge"]["asked"] == 2 * PROMPTS and len(list(cache.glob("*.jsonl"))) == 2

    # Longer answers: the pairs whose answers changed are asked again, the others come from the cache.
    longer = judge_eval(served, tmp_path, "judge-a", max_new_tokens=10)["llm_judge"]
    assert longer["asked"] > 0 and longer["asked"] + longer["from_cache"] == 2 * PROMPTS
    assert len(read(cache_file)) == 2 * PROMPTS + longer["asked"]


def test_the_command_end_to_end_in_a_process_of_its_own(served, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "wrpo.cli", "eval", "--models", f"mine={served.root / 'mine'}", "--baseline",
         f"base={served.root / 'base'}", "--prompts", str(prompts(tmp_path / "p.jsonl")), "--output",
         str(tmp_path / "out"), "--max-new-tokens", "6", "--judge", "scorers:reversal_similarity",
         "--judge-llm", "judge-a", "--judge-base-url", served.url, "--judge-concurrency", "3"],
        env=scorers_env({**os.environ, "HF_HUB_OFFLINE": "1"}),
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == f"report: {tmp_path / 'out' / 'report.md'}\n"
    assert "judged by judge-a (both orders)" in done.stderr and f"{2 * PROMPTS} requests asked" in done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["comparisons"]) == set(report["llm_judge"]["comparisons"]) == {"mine"}  # both judges
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Reward judge" in markdown and "## LLM judge `judge-a`" in markdown
