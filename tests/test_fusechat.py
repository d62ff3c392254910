"""FuseChat-3.0's construction as one recipe, on tiny models: sampling settings per source and per prompt
category (repetition penalty included), a reward model with verifiers by category, the authors' pairs and
drops, and the checkpoint chosen by held-out reward; the shipped recipe validated and planned."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import WORDS, read, write_jsonl
from test_recipe import recipe_file
from wrpo.cli import app
from wrpo.data.construct import build_pairs, build_sft
from wrpo.data.resumable import merge_jsonl, model_prompt_key
from wrpo.errors import InputError
from wrpo.generation.sample import sample
from wrpo.generation.settings import ModelSampling, SamplingSettings
from wrpo.reward.score import score

MATH = "wrpo.reward.verifiable:math_exact_match"
CODE = "wrpo.reward.verifiable:code_tests"


def mixed_prompts(path: Path, count: int = 12, tests: tuple[str, ...] = ("assert f(1) == 2",)) -> Path:
    """Chat, math and code prompts in turn, each with its category (and the gold a verifier reads)."""
    rows = []
    for index in range(count):
        word = WORDS[index % len(WORDS)]
        category = ("chat", "math", "code")[index % 3]
        gold = {"math": {"answer": str(index)}, "code": {"tests": list(tests)}}.get(category, {})
        rows.append({"prompt_id": f"{category}{index}", "prompt": f"reverse {word}", "category": category, **gold})
    return write_jsonl(path, rows)


SETTINGS = SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6, batch_size=4, seed=3,
                            by_category={"code": {"n": 5}, "math": {"temperature": 0.0}})


def test_each_category_is_sampled_with_its_own_settings_and_shards_and_resumes_give_the_same_rows(zoo, tmp_path):
    prompts = mixed_prompts(tmp_path / "p.jsonl")
    whole = {row["prompt_id"]: row for row in read(sample(str(zoo["llama-char"]), prompts, tmp_path / "s.jsonl",
                                                          SETTINGS))}
    counts = {row["meta"]["category"]: len(row["responses"]) for row in whole.values()}
    assert counts == {"chat": 2, "math": 2, "code": 5}
    assert all(len(set(row["responses"])) == 1 for row in whole.values() if row["meta"]["category"] == "math")
    assert any(len(set(row["responses"])) > 1 for row in whole.values() if row["meta"]["category"] == "code")
    assert whole["code2"]["generation"]["by_category"] == {"code": {"n": 5}, "math": {"temperature": 0.0}}
    shards = [sample(str(zoo["llama-char"]), prompts, tmp_path / f"s{index}.jsonl", SETTINGS, shard=(index, 2))
              for index in range(2)]
    merged = merge_jsonl(shards, tmp_path / "merged.jsonl", key=model_prompt_key)
    assert {row["prompt_id"]: row for row in read(merged)} == whole
    # Cut short after two batches, then resumed.
    lines = (tmp_path / "s.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "r.jsonl.partial").write_text("".join(lines[:8]))
    resumed = sample(str(zoo["llama-char"]), prompts, tmp_path / "r.jsonl", SETTINGS)
    assert {row["prompt_id"]: row for row in read(resumed)} == whole


def test_a_repetition_penalty_reaches_the_hf_engine(zoo, tmp_path):
    prompts = mixed_prompts(tmp_path / "p.jsonl")
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=12, batch_size=1)
    plain, penalised = (
        {row["prompt_id"]: row["responses"][0] for row in read(sample(
            str(zoo["llama-char"]), prompts, tmp_path / f"{name}.jsonl",
            greedy.model_copy(update={"repetition_penalty": penalty})))}
        for name, penalty in (("plain", 1.0), ("penalised", 3.0)))
    assert plain != penalised
    assert read(tmp_path / "penalised.jsonl")[0]["generation"]["repetition_penalty"] == 3.0
    assert "repetition_penalty" not in read(tmp_path / "plain.jsonl")[0]["generation"]  # as before it existed


def test_a_sources_settings_replace_the_recipes_field_by_field_and_category_by_category():
    recipe = SamplingSettings(n=5, temperature=0.8, top_p=0.95, by_category={"code": {"n": 8}})
    qwen = recipe.over(ModelSampling(temperature=0.7, top_p=0.8, repetition_penalty=1.05,
                                     by_category={"code": {"max_new_tokens": 64}, "math": {"n": 1}}))
    assert (qwen.n, qwen.temperature, qwen.top_p, qwen.repetition_penalty) == (5, 0.7, 0.8, 1.05)
    code = qwen.for_category("code")
    assert (code.n, code.max_new_tokens, code.temperature) == (8, 64, 0.7)
    assert qwen.for_category("math").n == 1 and qwen.for_category("chat") == qwen
    assert recipe.over(None) == recipe


@pytest.fixture(scope="module")
def reward_model(zoo, tmp_path_factory):
    """A tiny sequence classifier as the reward model, with the llama-char tokenizer and its chat template."""
    from transformers import LlamaForSequenceClassification

    from wrpo.demo.tiny import tiny_config
    from wrpo.modeling import load_tokenizer

    folder = tmp_path_factory.mktemp("reward") / "reward"
    tokenizer = load_tokenizer(str(zoo["llama-char"]))
    torch.manual_seed(0)
    config = tiny_config("llama", tokenizer)
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sample_rows(path: Path) -> Path:
    """Sampled rows of two sources, as `wrpo sample` writes them, with answers whose correctness is known."""
    rows = []
    for model in ("a", "b"):
        rows += [
            {"prompt_id": "chat0", "prompt": "reverse kiwi", "model": model, "responses": ["iwik", "kiwi"],
             "meta": {"category": "chat"}},
            {"prompt_id": "math1", "prompt": "What is 2+3?", "model": model,
             "responses": ["It is \\boxed{5}", "It is 6", "5", "4.0"], "meta": {"category": "math", "answer": "5"}},
            {"prompt_id": "code2", "prompt": "Write f, adding one", "model": model,
             "responses": ["```python\ndef f(x):\n    return x + 1\n```", "def f(x): return x"],
             "meta": {"category": "code", "tests": ["assert f(1) == 2"]}},
            {"prompt_id": "math3", "prompt": "What is 7*6?", "model": model, "responses": ["41", "43"],
             "meta": {"category": "math", "answer": "42"}},
        ]
    return write_jsonl(path, rows)


def test_verifiers_check_their_categories_answers_beside_the_reward_model(reward_model, tmp_path):
    samples = sample_rows(tmp_path / "s.jsonl")
    verifiers = {"math": MATH, "code": CODE}
    verified = {(row["model"], row["prompt_id"]): row for row in read(score(
        [samples], str(reward_model), tmp_path / "v.jsonl", batch_size=5, verifiers=verifiers))}
    plain = {(row["model"], row["prompt_id"]): row for row in read(score(
        [samples], str(reward_model), tmp_path / "plain.jsonl", batch_size=5))}
    assert "verification" not in verified[("a", "chat0")]
    assert verified[("a", "math1")]["verification"] == [1.0, 0.0, 1.0, 0.0]
    assert verified[("b", "code2")]["verification"] == [1.0, 0.0]
    assert verified[("a", "math3")]["verification"] == [0.0, 0.0]
    for key, row in plain.items():  # the reward model's scores are the same with or without verifiers
        assert verified[key]["scores"] == pytest.approx(row["scores"], abs=1e-5)


def test_a_verifier_that_fails_on_a_row_names_it(reward_model, tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt_id": "m", "prompt": "What is 1+1?", "model": "a", "responses": ["2"], "meta": {"category": "math"}}])
    with pytest.raises(InputError, match=r"verifier .*math_exact_match failed on response 0 of prompt 'm'") as error:
        score([samples], str(reward_model), tmp_path / "v.jsonl", verifiers={"math": MATH})
    assert error.value.line == 1
    kept = read(score([samples], str(reward_model), tmp_path / "skipped.jsonl", verifiers={"math": MATH},
                      skip_failures=True))
    assert kept[0]["scores"] is None and "no 'answer'" in kept[0]["error"]


def scored_row(model: str, prompt_id: str, category: str, answers: list[tuple[float, bool]]) -> dict:
    """A scored row whose answers have these (reward, correct) pairs."""
    return {"prompt_id": prompt_id, "prompt": f"question {prompt_id}", "model": model,
            "responses": [f"{model} answer {index}" for index in range(len(answers))],
            "scores": [reward for reward, _ in answers], "verification": [float(ok) for _, ok in answers],
            "meta": {"category": category}}


def test_a_correct_answer_outranks_any_incorrect_one_and_prompts_with_none_are_dropped(tmp_path):
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        scored_row("a", "m1", "math", [(0.9, False), (0.5, True), (0.6, True)]),
        scored_row("b", "m1", "math", [(0.95, False), (0.2, True)]),
        scored_row("a", "m2", "math", [(0.9, False), (0.8, False)]),
        scored_row("b", "m2", "math", [(0.7, False)]),
        {"prompt_id": "c1", "prompt": "chat", "model": "a", "responses": ["x", "y"], "scores": [0.1, 0.3],
         "meta": {"category": "chat"}},
    ])
    summary = build_sft([scores], tmp_path / "sft.jsonl", tmp_path / "pref.jsonl", sft_fraction=1.0)
    sft = {row["prompt_id"]: row for row in read(tmp_path / "sft.jsonl")}
    assert sft["m1"]["response"] == "a answer 2"  # the best correct answer, not the best-scored one
    assert sft["c1"]["response"] == "y" and "m2" not in sft
    assert summary.dropped == {"prompts whose source responses all fail verification": 1}


def test_same_source_pairs_take_the_best_correct_answer_over_the_worst_incorrect_one_in_the_window(tmp_path):
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        # a: correct 0.50 and 0.45, incorrect 0.48 and 0.44: 0.50 over 0.44, a gap of 0.06.
        scored_row("a", "m1", "math", [(0.45, True), (0.48, False), (0.50, True), (0.44, False)]),
        scored_row("b", "m1", "math", [(0.9, True), (0.8, True)]),        # no incorrect answer: no pair
        scored_row("c", "m1", "math", [(0.6, True), (0.65, False)]),     # the incorrect one scores higher
        scored_row("a", "m2", "math", [(0.9, True), (0.1, False)]),      # a gap of 0.8: outside the window
        scored_row("a", "m3", "math", [(0.9, False), (0.1, False)]),     # none correct: dropped by build sft
    ])
    build_sft([scores], tmp_path / "sft.jsonl", tmp_path / "pref.jsonl", sft_fraction=0.0)
    summary = build_pairs(tmp_path / "pref.jsonl", [], tmp_path / "q.jsonl", same_source=True,
                          min_reward_gap=0.01, max_reward_gap=0.1)
    (quadruple,) = read(tmp_path / "q.jsonl")
    assert quadruple["prompt_id"] == "m1"
    assert (quadruple["chosen_source"], quadruple["rejected"]) == (["a answer 2"], "a answer 3")
    meta = quadruple["meta"]
    assert (meta["source_scores"], meta["rejected_score"]) == ([0.5], 0.44)
    assert (meta["source_correct"], meta["rejected_correct"]) == ([True], False)
    assert summary.dropped == {"prompts without a source with a correct and an incorrect response whose best-worst "
                               "reward gap lies in [0.01, 0.1]": 1}


def test_target_pairs_of_a_verified_category_rank_by_correctness_first(tmp_path):
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        *(scored_row("s", p, "math", [(0.5, True)]) for p in ("m1", "m2")),
        *(scored_row("w", p, "math", [(0.9, False)]) for p in ("m1", "m2"))])
    build_sft([scores], tmp_path / "sft.jsonl", tmp_path / "pref.jsonl", sft_fraction=0.0)
    target = write_jsonl(tmp_path / "target.jsonl", [
        scored_row("t", "m1", "math", [(0.9, False), (0.3, True), (0.2, False)]),
        scored_row("t", "m2", "math", [(0.9, False), (0.3, False)]),
    ])
    summary = build_pairs(tmp_path / "pref.jsonl", [target], tmp_path / "q.jsonl", top_k_sources=2)
    (quadruple,) = read(tmp_path / "q.jsonl")
    assert (quadruple["chosen_target"], quadruple["rejected"]) == ("t answer 1", "t answer 2")
    assert quadruple["chosen_source"] == ["s answer 0"]  # the incorrect, better-scored one is no y_ws
    assert summary.dropped == {"prompts whose target samples all fail verification": 1}
    # Same-source pairs with target samples: the same drop.
    build_sft([write_jsonl(tmp_path / "pairs.jsonl", [scored_row("s", p, "math", [(0.5, True), (0.45, False)])
                                                       for p in ("m1", "m2")])],
              tmp_path / "sft2.jsonl", tmp_path / "pref2.jsonl", sft_fraction=0.0)
    summary = build_pairs(tmp_path / "pref2.jsonl", [target], tmp_path / "q2.jsonl", same_source=True)
    assert [row["prompt_id"] for row in read(tmp_path / "q2.jsonl")] == ["m1"]
    assert summary.dropped == {"prompts whose target samples all fail verification": 1}


def fusechat_recipe(tmp_path: Path, zoo) -> Path:
    """FuseChat-3.0's shape on the tiny zoo: per-source and per-category sampling, a judge with verifiers, same-source
    pairs without target samples, and the WRPO run's checkpoint chosen among its last two."""
    write_jsonl(tmp_path / "heldout.jsonl", [{"prompt_id": f"h{index}", "prompt": f"reverse {word}x"}
                                             for index, word in enumerate(WORDS[:4])])
    path = recipe_file(tmp_path, zoo, max_steps=4, save_steps=2, loss="ln_dpo", beta=10.0)
    recipe = yaml.safe_load(path.read_text())
    recipe["sources"][1].update(categories=["chat", "math"],
                                sampling={"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05})
    recipe["reward"]["verifiers"] = {"math": "scorers:even_length", "code": CODE}
    recipe["sampling"]["by_category"] = {"code": {"n": 6}}
    recipe["split"] = {"sft_fraction": 0.4, "seed": 1, "sft_fraction_by_category": {"chat": 0.0}}
    recipe["pairs"] = {"same_source": True, "min_reward_gap": 0.0, "max_reward_gap": 1.0, "target_samples": False}
    recipe["checkpoint_choice"] = {"eval_prompts": "heldout.jsonl", "last": 2, "max_new_tokens": 6}
    path.write_text(yaml.safe_dump(recipe))
    mixed_prompts(tmp_path / "prompts.jsonl", 18, tests=("assert True",))  # correct: any code that runs
    return path


@pytest.mark.slow
def test_a_fusechat_recipe_runs_end_to_end_and_chooses_its_checkpoint(zoo, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = fusechat_recipe(tmp_path, zoo)
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    work = tmp_path / "work"
    # Each source sampled with its own settings, on its own categories, each category with its own n.
    for source, own, categories in (
            ("llama-char", {"temperature": 1.0, "top_p": 1.0}, {"chat", "math", "code"}),
            ("gpt2-bpe", {"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05}, {"chat", "math"})):
        rows = read(work / "samples" / "sources" / f"{source}.jsonl")
        assert {row["meta"]["category"] for row in rows} == categories and len(rows) == 6 * len(categories)
        for row in rows:
            assert len(row["responses"]) == (6 if row["meta"]["category"] == "code" else 4)
            assert own.items() <= row["generation"].items()
    # The judge's scores, with the verifiers' verdicts on math and code.
    scored = [row for source in ("llama-char", "gpt2-bpe") for row in read(work / "scores" / "sources" /
                                                                          f"{source}.jsonl")]
    for row in scored:
        category = row["meta"]["category"]
        assert ("verification" in row) == (category != "chat")
        if category == "math":
            assert row["verification"] == [float(len(text) % 2 == 0) for text in row["responses"]]
    correct = {}
    for row in scored:
        for text, verdict in zip(row["responses"], row.get("verification", [1.0] * len(row["responses"])),
                                 strict=True):
            if text.strip():
                correct.setdefault(row["prompt_id"], {})[text] = verdict == 1.0
    # Prompts whose answers all fail are dropped; the SFT rows of math and code are correct answers.
    sft, preference = read(work / "data" / "sft.jsonl"), read(work / "data" / "preference_prompts.jsonl")
    kept = {row["prompt_id"] for row in [*sft, *preference]}
    assert kept == {prompt for prompt, verdicts in correct.items() if any(verdicts.values())}
    assert any(prompt.startswith("math") for prompt in kept), "no math prompt had a correct answer"
    assert all(correct[row["prompt_id"]][row["response"]] for row in sft)
    assert not any(row["prompt_id"].startswith("chat") for row in sft)  # chat: all preference prompts
    quadruples = read(work / "data" / "quadruples.jsonl")
    assert quadruples
    for quadruple in quadruples:
        verdicts = correct[quadruple["prompt_id"]]
        if not quadruple["prompt_id"].startswith("chat"):
            assert verdicts[quadruple["chosen_source"][0]] and not verdicts[quadruple["rejected"]]
    # The WRPO run's checkpoint, chosen among its last two by held-out reward.
    chosen = work / "models" / "target-sft-wrpo-chosen"
    choice = json.loads((chosen / "choice.json").read_text())
    assert [each["checkpoint"] for each in choice["candidates"]] == ["checkpoint-2", "checkpoint-4"]
    best = max(choice["candidates"], key=lambda each: (each["mean_reward"], each["step"]))
    assert choice["chosen"] == best["checkpoint"] and all(each["judged"] == 4 for each in choice["candidates"])
    weights = AutoModelForCausalLM.from_pretrained(chosen).state_dict()
    original = AutoModelForCausalLM.from_pretrained(work / "models" / "target-sft-wrpo" / best["checkpoint"])
    assert all(torch.equal(weights[name], value) for name, value in original.state_dict().items())
    assert not (chosen / "optimizer.pt").exists()
    status = CliRunner().invoke(app, ["status", str(recipe)])
    assert status.exit_code == 0 and f"chose {best['checkpoint']} by mean held-out reward" in status.output


def test_the_shipped_recipe_is_the_authors_whole_construction_and_its_plan_shows_each_sources_settings():
    """Validated and planned, not run: its models are far too large for this machine."""
    from wrpo.pipeline.plan import plan
    from wrpo.pipeline.recipe import load_recipe

    path = Path(__file__).parent.parent / "recipes" / "fusechat3-llama31-8b.yaml"
    recipe = load_recipe(path)
    assert recipe.target.model == "meta-llama/Llama-3.1-8B-Instruct"
    stages = {stage.name: stage for stage in plan(recipe)}
    sampled = {name.removeprefix("sample/sources/"): stage.spec for name, stage in stages.items()
               if name.startswith("sample/sources/")}
    effective = {name: (spec.sampling.temperature, spec.sampling.top_p, spec.sampling.repetition_penalty)
                 for name, spec in sampled.items()}
    assert effective == {"gemma-2-27b-it": (0.8, 0.95, 1.0), "mistral-large-instruct-2407": (0.8, 0.95, 1.0),
                         "qwen2.5-72b-instruct": (0.7, 0.8, 1.05), "llama-3.1-70b-instruct": (0.8, 0.95, 1.0),
                         "qwen2.5-math-72b-instruct": (0.7, 0.8, 1.05)}
    assert all(spec.sampling.for_category("code").n == 8 and spec.sampling.for_category("chat").n == 5
               for spec in sampled.values())
    assert sampled["qwen2.5-math-72b-instruct"].categories == ["math"]
    assert sampled["qwen2.5-72b-instruct"].sampling.for_category("chinese").n == 1
    assert recipe.reward.verifiers == {"math": MATH, "code": CODE}
    assert recipe.reward.model == "RLHFlow/ArmoRM-Llama3-8B-v0.1"
    assert (recipe.split.sft_fraction, recipe.split.sft_fraction_by_category) == (0.4, {"chinese": 1.0})
    pairs = stages["build-pairs"].spec.pairs
    assert (pairs.same_source, pairs.min_reward_gap, pairs.max_reward_gap, pairs.target_samples) == (True, 0.01, 0.1,
                                                                                                    False)
    assert "sample/target-sft" not in stages and "score/target-sft" not in stages
    assert (recipe.wrpo["loss"], recipe.wrpo["beta"], recipe.wrpo["save_steps"]) == ("ln_dpo", 10.0, 100)
    choice = stages["choose/wrpo"].spec
    assert (choice.last, choice.trained.name, choice.output.name) == (2, "target-sft-wrpo", "target-sft-wrpo-chosen")
    assert list(stages)[-2:] == ["wrpo", "choose/wrpo"]
    shown = CliRunner().invoke(app, ["run", str(path), "--plan"])
    assert shown.exit_code == 0, shown.output
    qwen = shown.output[shown.output.index("sample/sources/qwen2.5-72b-instruct"):]
    assert '"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05' in qwen.split("\n[")[0]


def test_a_category_no_prompt_has_is_named_with_its_line(zoo, tmp_path):
    recipe = fusechat_recipe(tmp_path, zoo)
    data = yaml.safe_load(recipe.read_text())
    data["sampling"]["by_category"] = {"cod": {"n": 6}}
    recipe.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2
    line = next(number for number, text in enumerate(recipe.read_text().splitlines(), 1) if "cod:" in text)
    assert result.stderr.count("\n") == 1
    assert (f"{recipe}:{line}: sampling.by_category.cod: no prompt of {tmp_path / 'prompts.jsonl'} has the category "
            "'cod' (its categories: chat, code, math)") in result.stderr


@pytest.mark.parametrize(("last", "wrpo", "refusal"), [
    (3, {}, "wrpo.save_total_limit: 2 keeps too few checkpoints for checkpoint_choice"),
    (2, {"save_strategy": "epoch"}, "wrpo.save_strategy: epoch keeps too few checkpoints for checkpoint_choice"),
    (2, {"lora_r": 4}, "wrpo.lora_r: a LoRA run's checkpoints hold its adapters alone"),
])
def test_checkpoint_choice_refuses_runs_whose_checkpoints_it_cannot_choose_among(zoo, tmp_path, last, wrpo, refusal):
    recipe = fusechat_recipe(tmp_path, zoo)
    data = yaml.safe_load(recipe.read_text())
    data["checkpoint_choice"]["last"] = last
    data["wrpo"].update(wrpo)
    recipe.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(recipe), "--plan"])
    assert result.exit_code == 2 and refusal in result.stderr, result.output


def test_a_chosen_sft_checkpoint_is_what_every_later_stage_starts_from(zoo, tmp_path):
    from wrpo.ablation.variants import plan_ablation
    from wrpo.pipeline.plan import plan
    from wrpo.pipeline.recipe import load_recipe

    path = fusechat_recipe(tmp_path, zoo)
    data = yaml.safe_load(path.read_text())
    data["checkpoint_choice"]["stages"] = ["sft", "wrpo"]
    data["pairs"] = {"target_samples": True}
    data["sft"]["save_steps"] = 1
    data["ablation"] = {"eval_prompts": "heldout.jsonl", "seeds": [0], "variants": ["dpo", "sft-continued"]}
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path)
    stages = {stage.name: stage for stage in plan(recipe)}
    chosen_sft = str(tmp_path / "work" / "models" / "target-sft-chosen")
    assert list(stages)[list(stages).index("sft") + 1] == "choose/sft"
    assert stages["sample/target-sft"].spec.model == chosen_sft and stages["wrpo"].spec.model == chosen_sft
    assert stages["choose/wrpo"].spec.output.name == "target-sft-wrpo-chosen"
    (tmp_path / "work" / "data").mkdir(parents=True)
    write_jsonl(tmp_path / "work" / "data" / "quadruples.jsonl", [{"prompt_id": "p"}])  # the SFT variants' budget
    ablation = plan_ablation(recipe, ["dpo", "sft-continued"], [0], str(path))
    assert {stage.spec.model for stage in ablation if stage.kind in ("sft", "wrpo")} == {chosen_sft}
    assert str(ablation[-1].spec.target_sft) == chosen_sft


def test_the_best_of_the_last_checkpoints_by_held_out_reward_is_chosen_and_copied(zoo, tmp_path):
    """Three 'checkpoints' that are three different models: the choice takes the best of the last two."""
    from transformers import AutoModelForCausalLM

    from wrpo.evaluation.checkpoint_choice import CheckpointChoiceSpec, choose_checkpoint
    from wrpo.evaluation.compare import evaluate_model
    from wrpo.generation.settings import GREEDY, BackendSettings
    from wrpo.reward.settings import RewardSettings

    trained = tmp_path / "run"
    for step, model in ((1, "gpt2-bpe"), (2, "llama-char"), (3, "qwen2-bpe")):
        shutil.copytree(zoo[model], trained / f"checkpoint-{step}")
        (trained / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (trained / f"checkpoint-{step}" / "optimizer.pt").write_text("")
    held_out = write_jsonl(tmp_path / "heldout.jsonl", [{"prompt_id": f"h{i}", "prompt": f"reverse {word}"}
                                                        for i, word in enumerate(WORDS[:6])])
    settings = GREEDY.model_copy(update={"max_new_tokens": 6})
    means = {step: evaluate_model(model, str(zoo[model]), held_out, "scorers:reversal_similarity", tmp_path / "own",
                                  settings).mean_reward for step, model in ((2, "llama-char"), (3, "qwen2-bpe"))}
    assert means[2] != means[3]
    spec = CheckpointChoiceSpec(trained=trained, last=2, eval_prompts=held_out,
                                reward=RewardSettings(function="scorers:reversal_similarity"),
                                backend=BackendSettings(), max_new_tokens=6, batch_size=4, output=tmp_path / "chosen")
    choice = choose_checkpoint(spec)
    best = max(means, key=means.get)
    assert choice["chosen"] == f"checkpoint-{best}"
    assert {each["step"]: each["mean_reward"] for each in choice["candidates"]} == pytest.approx(means)
    chosen = AutoModelForCausalLM.from_pretrained(tmp_path / "chosen").state_dict()
    expected = AutoModelForCausalLM.from_pretrained(trained / f"checkpoint-{best}").state_dict()
    assert chosen.keys() == expected.keys() and all(torch.equal(chosen[k], expected[k]) for k in expected)
    assert not (tmp_path / "chosen" / "optimizer.pt").exists()
    assert json.loads((tmp_path / "chosen" / "choice.json").read_text()) == choice
    # Again over the chosen model and what a killed run left: the same folder, nothing else.
    (tmp_path / "chosen.partial").mkdir()
    (tmp_path / "chosen.partial" / "half-written").write_text("")
    assert choose_checkpoint(spec.model_copy(update={"last": 1}))["chosen"] == "checkpoint-3"
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("chosen")) == ["chosen"]
    assert json.loads((tmp_path / "chosen" / "choice.json").read_text())["chosen"] == "checkpoint-3"


def test_the_commands_take_the_per_category_settings_as_json(zoo, tmp_path):
    prompts = mixed_prompts(tmp_path / "p.jsonl", 6)
    sampled = CliRunner().invoke(app, ["sample", "--model", str(zoo["llama-char"]), "--prompts", str(prompts),
                                       "--output", str(tmp_path / "s.jsonl"), "-n", "2", "--max-new-tokens", "4",
                                       "--by-category", '{"code": {"n": 3}}', "--categories", "math,code"])
    assert sampled.exit_code == 0, sampled.output
    rows = read(tmp_path / "s.jsonl")
    assert sorted((row["meta"]["category"], len(row["responses"])) for row in rows) == [("code", 3)] * 2 + [
        ("math", 2)] * 2
    scored = CliRunner().invoke(app, ["score", "--responses", str(tmp_path / "s.jsonl"), "--reward-model",
                                      "scorers:reversal_similarity", "--output", str(tmp_path / "v.jsonl"),
                                      "--verifiers", json.dumps({"math": MATH})])
    assert scored.exit_code == 0, scored.output
    assert {row["meta"]["category"]: "verification" in row for row in read(tmp_path / "v.jsonl")} == {
        "math": True, "code": False}


def test_the_old_target_sampling_key_says_where_it_went(zoo, tmp_path):
    recipe = fusechat_recipe(tmp_path, zoo)
    recipe.write_text(recipe.read_text() + "target_sampling: {n: 2}\n")
    result = CliRunner().invoke(app, ["run", str(recipe), "--plan"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "target_sampling is now the target's own sampling" in result.stderr and str(recipe) in result.stderr
