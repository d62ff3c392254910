"""`wrpo run` at scale: the stages as processes (sharded sampling and scoring, training under accelerate
launch), `--plan`, `wrpo status`, failures and resumption, and the paper recipe's plan on 8 GPUs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from test_recipe import recipe_file
from wrpo.cli import app
from wrpo.errors import InputError
from wrpo.pipeline.placement import steps
from wrpo.pipeline.plan import plan
from wrpo.pipeline.recipe import load_recipe
from wrpo.pipeline.run import recipe_status

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def with_resources(path: Path, resources: dict, **sections) -> Path:
    recipe = yaml.safe_load(path.read_text())
    recipe["resources"] = resources
    for section, values in sections.items():
        recipe[section] = {**recipe[section], **values}
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_the_paper_recipe_plans_for_one_node_of_8_gpus():
    stages = {stage.name: stage for stage in plan(load_recipe(RECIPES / "llama3-8b-ultrafeedback.yaml"))}
    sampling = [stage for name, stage in stages.items() if name.startswith("sample/sources/")]
    assert len(sampling) == 10
    for stage in sampling:
        shards = steps(stage.placement)[0]
        width = stage.spec.backend.tensor_parallel_size
        assert stage.spec.backend.backend == "vllm"
        assert len(shards) == 8 // width  # the devices the tensor parallelism leaves: data parallel shards
        assert sorted(d for process in shards for d in process.devices) == list(range(8))  # disjoint, all used
        assert all(len(process.devices) == width for process in shards)
        if len(shards) > 1:
            assert [process.worker_args for process in shards] == [("--shard", f"{i}/{len(shards)}")
                                                                   for i in range(len(shards))]
            assert steps(stage.placement)[1][0].worker_args == ("--merge",)
    widths = {name.split("/")[-1]: stage.placement.devices for name, stage in stages.items()
              if name.startswith("sample/sources/")}
    assert widths["mistral-large-instruct-2407"] == 8 and widths["qwen2-72b-instruct"] == 4
    assert widths["gemma-2-27b-it"] == 2 and widths["gemma-2-9b-it"] == 1
    scoring = stages["score/sources/gemma-2-9b-it"]
    assert [process.devices for process in steps(scoring.placement)[0]] == [(i,) for i in range(8)]
    for name in ("sft", "wrpo"):
        ((process,),) = steps(stages[name].placement)
        launch = " ".join(process.launch)
        assert launch.startswith("--config_file") and "deepspeed_zero3.yaml" in launch
        assert "--num_processes 8" in launch and stages[name].kind == name
        assert stages[name].placement.description.endswith("= 128")
        assert "DeepSpeed" in stages[name].placement.description


def test_plan_prints_every_command_and_runs_nothing(tmp_path):
    result = CliRunner().invoke(app, ["run", "--plan", str(RECIPES / "llama3-8b-ultrafeedback.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.count("would run") == 26
    gemma = result.output[result.output.index("sample/sources/gemma-2-27b-it: would run"):]
    gemma = gemma[:gemma.index("score/sources/gemma-2-27b-it")]
    assert "launch: vllm, tensor parallel 2, 4 shards of 2 devices each, then merge" in gemma
    assert '"temperature": 0.8' in gemma and "inputs: google/gemma-2-27b-it" in gemma
    assert "$ CUDA_VISIBLE_DEVICES=6,7 " in gemma and "-m wrpo.pipeline.worker" in gemma
    assert "sample--sources--gemma-2-27b-it.stage.json --merge\n" in gemma
    assert "-m accelerate.commands.launch --config_file" in result.output
    assert not (RECIPES / "runs").exists()


def test_deepspeed_given_twice_is_refused_naming_the_line(tmp_path):
    recipe = (RECIPES / "llama3-8b-ultrafeedback.yaml").read_text().replace(
        "  activation_checkpointing: true\n", "  activation_checkpointing: true\n  deepspeed: deepspeed/zero3.json\n")
    path = RECIPES / "twice.yaml"
    try:
        path.write_text(recipe)
        with pytest.raises(InputError) as raised:
            load_recipe(path)
    finally:
        path.unlink()
    line = recipe.splitlines().index("  deepspeed: deepspeed/zero3.json") + 1
    assert str(raised.value).startswith(f"{path}:{line}: sft.deepspeed: this stage is launched with the accelerate "
                                        "config")


def test_a_resources_override_of_no_stage_names_its_line(zoo, tmp_path):
    path = with_resources(recipe_file(tmp_path, zoo), {"stages": {"scores": {"shards": 2}}})
    with pytest.raises(InputError) as raised:
        plan(load_recipe(path))
    assert "resources.stages: no stage or stage kind 'scores' (did you mean 'score'?)" in str(raised.value)


def test_the_slurm_plan_shows_job_scripts(zoo, tmp_path):
    path = with_resources(recipe_file(tmp_path, zoo), {
        "devices_per_node": 2, "nodes": 2, "slurm": {"partition": "gpu", "time": "1:00:00"},
        "stages": {"wrpo": {"slurm": {"time": "4:00:00"}}}})
    result = CliRunner().invoke(app, ["run", "--plan", "--executor", "slurm", str(path)])
    assert result.exit_code == 0, result.output
    assert "#SBATCH --array=0-3" in result.output and "#SBATCH --gres=gpu:1" in result.output
    wrpo_job = result.output[result.output.index("job wrpo:wrpo:"):]
    assert "#SBATCH --nodes=2" in wrpo_job and "#SBATCH --time=4:00:00" in wrpo_job
    assert '--machine_rank "$SLURM_NODEID"' in wrpo_job and "--num_processes 4 --num_machines 2" in wrpo_job
    assert "-m wrpo.pipeline.worker" in wrpo_job and "wrpo.stage.json" in wrpo_job
    assert "--start-stage" not in result.output and "wrpo.cli" not in result.output  # no call back into the CLI
    # The local executor cannot run the 2-node training stage, and says so before anything runs.
    refused = CliRunner().invoke(app, ["run", str(path)])
    assert refused.exit_code == 2 and "use --executor slurm" in refused.output
    assert not (tmp_path / "work" / "samples").exists()


@pytest.fixture
def scorers_in_subprocesses(monkeypatch):
    """The stage processes import the tests' scorers module too."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return dict(AutoModelForCausalLM.from_pretrained(folder).named_parameters())


def rows_by_id(path: Path) -> dict:
    return {row["prompt_id"]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
@pytest.mark.distributed
def test_sharded_stages_and_two_training_processes_match_one_process(zoo, tmp_path, scorers_in_subprocesses):
    """2 shards for sampling and scoring, 2 processes (accelerate, gloo on CPU) for SFT and WRPO: the
    same rows, and the same weights within float tolerance, as one process with the same global batch."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = recipe_file(tmp_path / "one", zoo, gradient_accumulation_steps=2)
    two = with_resources(recipe_file(tmp_path / "two", zoo),
                         {"devices_per_node": 2, "device_type": "cpu",
                          "accelerate_config": str(RECIPES / "accelerate" / "ddp_cpu.yaml")},
                         sft={"gradient_accumulation_steps": 1}, wrpo={"gradient_accumulation_steps": 1})
    with_resources(one, {}, sft={"gradient_accumulation_steps": 2})
    for recipe in (one, two):
        result = CliRunner().invoke(app, ["run", str(recipe)])
        assert result.exit_code == 0, result.output
    first, second = tmp_path / "one" / "work", tmp_path / "two" / "work"
    assert (second / "samples" / "sources" / ".shards" / "llama-char.1-of-2.jsonl").exists()
    for data in ("samples/sources/llama-char.jsonl", "scores/sources/gpt2-bpe.jsonl", "samples/target-sft.jsonl",
                 "scores/target-sft.jsonl"):
        assert rows_by_id(second / data) == rows_by_id(first / data), data
    for data in ("data/sft.jsonl", "data/quadruples.jsonl"):
        assert (second / data).read_text() == (first / data).read_text(), data
    assert "accelerate launch" in (second / "logs" / "wrpo.log").read_text() or (second / "logs" / "wrpo.log").exists()
    for model in ("target-sft", "target-sft-wrpo"):
        a, b = weights(first / "models" / model), weights(second / "models" / model)
        for name, value in a.items():
            torch.testing.assert_close(b[name], value, atol=1e-5, rtol=1e-4, msg=f"{model}: {name}")
    assert {state.state for state in recipe_status(two)} == {"done"}


@pytest.mark.slow
@pytest.mark.distributed
def test_a_failed_stage_stops_the_run_with_its_log_and_the_next_run_resumes(zoo, tmp_path, monkeypatch):
    module = tmp_path / "flaky_scorer.py"
    module.write_text("def score(prompt, response):  # fails on sampled responses, not on the preflight's\n"
                      "    if response != 'a response':\n        raise SystemExit(3)\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).parent}")  # the stage processes import it too
    path = recipe_file(tmp_path, zoo)
    path.write_text(path.read_text().replace("scorers:reversal_similarity", "flaky_scorer:score"))
    with_resources(path, {"devices_per_node": 2, "device_type": "cpu", "stages": {"sample": {"shards": 1}}})
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1, result.output
    assert "stage score/sources/llama-char failed with exit status" in result.output
    states = {state.name: state for state in recipe_status(path)}
    assert states["sample/sources/llama-char"].state == "done"
    assert states["score/sources/llama-char"].state == "failed"
    assert "score--sources--llama-char" in states["score/sources/llama-char"].detail
    assert states["wrpo"].state == "pending"
    status = CliRunner().invoke(app, ["status", str(path)])
    assert status.exit_code == 0 and "failed" in status.output

    module.write_text("from scorers import reversal_similarity as score\n")
    again = CliRunner().invoke(app, ["run", str(path)])
    assert again.exit_code == 0, again.output
    last = again.output.strip().splitlines()[-1]
    assert "sample/sources/llama-char: skipped" in last and "score/sources/llama-char: redone" in last


@pytest.mark.slow
@pytest.mark.distributed
def test_a_rank_killed_by_a_signal_fails_its_stage_saying_where_it_was(zoo, tmp_path):
    """A rank aborted (as a C++ library's fatal error does) mid-training: the launcher stops the other, and the
    run's error shows the aborted rank's Python stack and the launcher's word on it, not the launcher's traceback."""
    path = with_resources(recipe_file(tmp_path, zoo), {"devices_per_node": 2, "device_type": "cpu"},
                          sft={"max_steps": 100_000})  # still training when the abort comes
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen([sys.executable, "-m", "wrpo.cli", "run", str(path)], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        metrics = tmp_path / "work" / "models" / "target-sft" / "metrics.jsonl"  # a line per step, from the first
        deadline = time.monotonic() + 300
        while not (metrics.exists() and metrics.stat().st_size):
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read() if run.poll() else "timed out"
            time.sleep(0.5)
        (rank_1,) = [process for process in psutil.Process(run.pid).children(recursive=True)
                     if "wrpo.pipeline.worker" in process.cmdline() and process.environ().get("LOCAL_RANK") == "1"]
        rank_1.send_signal(signal.SIGABRT)
        output, _ = run.communicate(timeout=120)
    finally:
        for process in psutil.Process(run.pid).children(recursive=True) if run.poll() is None else ():
            process.kill()
        run.kill()
    assert run.returncode == 1, output
    assert "stage sft failed with exit status" in output
    error = output[output.index("stage sft failed"):]
    assert "Fatal Python error: Aborted" in error and "Current thread" in error
    log = (tmp_path / "work" / "logs" / "sft.log").read_text().splitlines()
    innermost = log[log.index(next(line for line in log if line.startswith("Current thread"))) + 1]
    assert innermost.startswith('  File "') and innermost in error  # where it was when killed
    assert f"rank 1 (local_rank: 1); exitcode -6 (pid: {rank_1.pid}) (SIGABRT)" in error
    assert "ChildFailedError" not in error
    assert {state.name: state.state for state in recipe_status(path)}["sft"] == "failed"


def test_status_names_the_process_running_a_stage(zoo, tmp_path):
    from wrpo.locks import output_lock
    from wrpo.pipeline.state import write_manifest

    path = recipe_file(tmp_path, zoo)
    recipe = load_recipe(path)
    first = plan(recipe)[0]
    assert {state.state for state in recipe_status(path)} == {"pending"}
    with output_lock(recipe.workdir):  # as `wrpo run` holds it while it runs a stage
        write_manifest(first, fingerprint="-", complete=False, host="here", pid=os.getpid())
        running = recipe_status(path)[0]
    assert running.state == "running" and f"pid {os.getpid()} on here" in running.detail
    assert recipe_status(path)[0].state == "pending"  # its runner gone, it is left to resume


def test_a_source_behind_a_server_is_one_process_of_concurrent_requests(zoo, tmp_path):
    path = recipe_file(tmp_path, zoo)
    recipe = yaml.safe_load(path.read_text())
    recipe["sources"].append({"name": "served", "model": "big-model", "backend": "openai",
                              "base_url": "http://10.0.0.5:8000/v1", "api_key_env": "MY_KEY", "concurrency": 32})
    path.write_text(yaml.safe_dump(recipe))
    with_resources(path, {"devices_per_node": 8})
    stage = next(s for s in plan(load_recipe(path)) if s.name == "sample/sources/served")
    ((process,),) = steps(stage.placement)
    assert process.devices == () and "32 requests at once" in stage.placement.description
    backend = stage.spec.backend
    assert (backend.backend, backend.base_url, backend.api_key_env, backend.concurrency) == (
        "openai", "http://10.0.0.5:8000/v1", "MY_KEY", 32)
