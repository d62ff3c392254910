"""Two runs of one stage never both write: each output is locked while written (the lock names its
holder), a stale lock left by a dead process is taken over and reported, and a stage is finished only
when its output holds every expected row once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import WORDS, write_jsonl
from wrpo.cli import app
from wrpo.locks import lock_path, output_lock

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def prompts(path, count):
    return write_jsonl(path, [{"prompt_id": f"q{i}", "prompt": f"reverse {WORDS[i % len(WORDS)]}{i}"}
                              for i in range(count)])


def sample_command(model, prompts_path, output):
    return [sys.executable, "-m", "wrpo.cli", "sample", "--model", str(model), "--prompts", str(prompts_path),
            "--output", str(output), "-n", "1", "--max-new-tokens", "12", "--batch-size", "1"]


def wait_for(condition, seconds=120):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def row_ids(output):
    return [json.loads(line)["prompt_id"] for line in output.read_text().splitlines()]


@pytest.mark.slow
def test_a_second_run_on_a_locked_output_stops_with_one_line_and_the_first_finishes(tiny_model, tmp_path):
    command = sample_command(tiny_model, prompts(tmp_path / "p.jsonl", 200), tmp_path / "s.jsonl")
    first = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "s.jsonl.partial"
    wait_for(lambda: partial.exists() and partial.read_text().count("\n") >= 2)
    second = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1
    assert second.stderr.startswith(f"error: {tmp_path / 's.jsonl'}: being written by pid {first.pid} on this host")
    assert "wrote" not in second.stdout
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert sorted(row_ids(tmp_path / "s.jsonl")) == sorted(f"q{i}" for i in range(200))
    assert not lock_path(tmp_path / "s.jsonl").exists()


@pytest.mark.slow
def test_a_stale_lock_of_a_dead_process_is_taken_over_and_reported(tiny_model, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path / "s.jsonl").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid,
                                                           "started": "2026-11-24 10:00:00", "command": "wrpo"}))
    result = subprocess.run(sample_command(tiny_model, prompts(tmp_path / "p.jsonl", 3), tmp_path / "s.jsonl"),
                            env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"took over the lock left by pid {dead.pid} on this host" in result.stderr
    assert sorted(row_ids(tmp_path / "s.jsonl")) == ["q0", "q1", "q2"]


@pytest.mark.slow
def test_kill_9_then_a_rerun_resumes_and_holds_every_row_once(tiny_model, tmp_path):
    command = sample_command(tiny_model, prompts(tmp_path / "p.jsonl", 60), tmp_path / "s.jsonl")
    victim = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "s.jsonl.partial"
    wait_for(lambda: partial.exists() and partial.read_text().count("\n") >= 5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert partial.read_text().count("\n") < 60, "the run finished before it could be killed"
    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over the lock left by pid {victim.pid}" in resumed.stderr
    ids = row_ids(tmp_path / "s.jsonl")
    assert sorted(ids) == sorted(f"q{i}" for i in range(60)) and len(set(ids)) == len(ids)


def test_an_output_holding_a_row_twice_is_not_finished_and_nothing_is_reported_written(tiny_model, tmp_path):
    output, command = tmp_path / "s.jsonl", ["sample", "--model", str(tiny_model), "--prompts",
                                             str(prompts(tmp_path / "p.jsonl", 4)),
                                             "--output", str(tmp_path / "s.jsonl"), "-n", "1", "--max-new-tokens", "4"]
    assert CliRunner().invoke(app, command).exit_code == 0
    lines = output.read_text().splitlines()
    (tmp_path / "s.jsonl.partial").write_text("\n".join([*lines, lines[0]]) + "\n")  # as two writers would leave it
    output.unlink()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2 and "wrote" not in result.stdout
    assert f"holds {json.loads(lines[0])['prompt_id']!r} twice (lines 1 and 5)" in result.stderr
    assert not output.exists()


def test_a_locked_training_folder_refuses_train_and_sft(tiny_model, native_data, tmp_path):
    output = tmp_path / "out"
    with output_lock(output):
        for command in (["train", "--data", str(native_data)], ["sft", "--data", str(native_data)]):
            result = CliRunner().invoke(app, [*command, "--model", str(tiny_model), "--output", str(output)])
            assert result.exit_code == 2
            assert f"being written by pid {os.getpid()} on this host" in result.stderr
    assert not output.exists()
