"""The stage file and the worker: every planned stage survives its JSON file unchanged (the worker's
fingerprint is the planner's, or a job would find its stage changed), the worker runs a stage from its file
alone and marks it, a bad stage is one line and exit status 2, and the fingerprints of existing workdirs are
the ones wrpo computed before stages became data (a new version must not redo days of sampling)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import native_rows, write_jsonl
from test_recipe import recipe_file
from wrpo.ablation.variants import plan_ablation
from wrpo.pipeline.kinds import KINDS, Stage
from wrpo.pipeline.plan import plan
from wrpo.pipeline.recipe import load_recipe
from wrpo.pipeline.state import read_manifest, stage_fingerprint
from wrpo.pipeline.worker import write_stage_files

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def worker(stage_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wrpo.pipeline.worker", str(stage_file), *args],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_every_planned_stage_survives_its_file(zoo, tmp_path):
    path = recipe_file(tmp_path, zoo)
    path.write_text(path.read_text() + "ablation: {eval_prompts: heldout.jsonl}\n")
    write_jsonl(tmp_path / "heldout.jsonl", [{"prompt_id": "h1", "prompt": "reverse banana"}])
    (tmp_path / "work" / "data").mkdir(parents=True)
    write_jsonl(tmp_path / "work" / "data" / "quadruples.jsonl", native_rows())  # as if the pipeline had run
    recipe = load_recipe(path)
    stages = [*plan(load_recipe(RECIPES / "llama3-8b-ultrafeedback.yaml")),
              *plan(load_recipe(RECIPES / "fusechat3-llama31-8b.yaml")), *plan(recipe),
              *plan_ablation(recipe, ["dpo", "sft-continued", "rft", "sources-1"], [0, 1], str(path))]
    assert set(KINDS) == {stage.kind for stage in stages}  # every kind is planned somewhere
    for stage in stages:
        again = Stage.model_validate_json(stage.model_dump_json())
        assert again == stage and type(again.spec) is KINDS[stage.kind].spec, stage.name
        assert stage_fingerprint(again) == stage_fingerprint(stage), stage.name


def test_the_fingerprinted_settings_are_those_of_before_stages_became_data():
    """As wrpo 0.x planned them (`wrpo run` argv), so a workdir it finished is skipped, not redone."""
    stages = {stage.name: stage for stage in plan(load_recipe(RECIPES / "llama3-8b-ultrafeedback.yaml"))}
    assert stages["sample/sources/gemma-2-27b-it"].settings == {
        "sampling": {"n": 5, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 2048, "batch_size": 512,
                     "seed": 0},
        "backend": "vllm", "name": "gemma-2-27b-it",
        "options": {"tensor_parallel_size": 2, "data_parallel_size": 1, "engine_kwargs": {}}}
    assert stages["score/target-sft"].settings == {"model": "RLHFlow/ArmoRM-Llama3-8B-v0.1", "function": None,
                                                   "trust_remote_code": True, "batch_size": 16}
    assert stages["build-sft"].settings == {"sft_fraction": 0.3333333333, "seed": 42}  # as the recipe says
    assert stages["build-pairs"].settings == {"top_k_sources": 1}
    assert stages["wrpo"].settings["beta"] == 0.01 and "output_dir" not in stages["wrpo"].settings


def write_scores(paths: list[Path]) -> None:
    """Scored samples of two sources, the first's second response the best of each prompt."""
    rows = [{"prompt_id": f"p{i}", "prompt": f"say {i}"} for i in range(6)]
    for path, model in zip(paths, ("a", "b"), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, [{**row, "model": model, "responses": ["x", f"y{model}"],
                            "scores": [0.1, 0.5 if model == "a" else 0.3]} for row in rows])


def test_the_worker_runs_a_stage_from_its_file_and_marks_it(zoo, tmp_path):
    path = recipe_file(tmp_path, zoo)
    recipe = load_recipe(path)
    layout = recipe.layout
    write_scores([layout.source_scores(source.name) for source in recipe.sources])
    stage = next(stage for stage in plan(recipe) if stage.name == "build-sft")
    done = worker(write_stage_files(stage))
    assert done.returncode == 0, done.stderr
    assert layout.sft_data.exists() and layout.preference_prompts.exists()
    manifest = read_manifest(layout, "build-sft")
    assert manifest["complete"] and manifest["fingerprint"] == stage_fingerprint(stage)
    assert "build-sft: " in done.stdout and " s of work" in done.stdout
    sft_rows = [json.loads(line) for line in layout.sft_data.read_text().splitlines()]
    assert sft_rows and all(row["response"] == "ya" for row in sft_rows)  # y_ws: source a's best


def test_a_bad_stage_is_one_line_and_exit_status_2(zoo, tmp_path):
    recipe = load_recipe(recipe_file(tmp_path, zoo))
    stage = next(stage for stage in plan(recipe) if stage.name == "build-sft")  # its scores were never made
    done = worker(write_stage_files(stage))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not read_manifest(stage.layout, stage.name)["complete"]
    wrong = worker(write_stage_files(stage), "--shard", "3/2")
    assert wrong.returncode == 2 and "--shard 3/2: I must lie in 0..N-1" in wrong.stderr
