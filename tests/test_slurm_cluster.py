"""What a Slurm executor can rely on, asserted on a real cluster (tests/slurm_cluster.py, Slurm 22.05):

- `sbatch --parsable ...` prints the job id alone ("123\\n"; "123;cluster" only on a federation).
- `sbatch --array=0-1` runs two tasks that see SLURM_ARRAY_TASK_ID 0 and 1 (and SLURM_ARRAY_JOB_ID); the id
  --parsable printed is the array's, and `--dependency=afterok:ARRAY_ID` waits for every task.
- `--dependency=afterok:ID --kill-on-invalid-dep=yes` on a job whose dependency failed: the dependent
  ends CANCELLED (Reason=DependencyNeverSatisfied) without running; without the flag it stays PENDING
  with that reason for ever.
- `sbatch --ntasks 2` with `srun CMD` inside runs CMD twice, SLURM_PROCID 0 and 1, SLURM_NODEID 0,
  SLURM_NTASKS 2, SLURM_JOB_NODELIST "localhost"; `scontrol show hostnames $SLURM_JOB_NODELIST` expands
  the list, one host a line, the first of them the rendezvous host (MASTER_ADDR) for a launcher.
- A request larger than the cluster (more CPUs than the node has, two nodes) fails at sbatch, exit status 1,
  "sbatch: error: Batch job submission failed: ..." on stderr (the cluster sets EnforcePartLimits=ALL).
- Jobs inherit the submitting environment (sbatch --export=ALL by default): SLURM_CONF, PATH, PYTHONPATH.
- Without slurmdbd there is no sacct. A job's state and exit code come from the controller, which keeps a
  finished job for MinJobAge seconds (3600 on this cluster; Slurm's default is 300):

      scontrol show job -o JOBID

  prints one line per job (an array: one line per task, or one line "ArrayTaskId=0-1" for tasks not
  started yet) of space-separated Key=Value fields, among them JobState=PENDING|RUNNING|COMPLETING|
  COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL..., Reason=None|NonZeroExitCode|
  DependencyNeverSatisfied|Dependency|..., ExitCode=CODE:SIGNAL (exit 3 gives FAILED, 3:0; a batch script
  killed by SIGKILL gives FAILED, 0:9; scancel gives CANCELLED, 0:15), ArrayJobId=, ArrayTaskId=.
  An id the controller no longer knows: exit status 1, "slurm_load_jobs error: Invalid job id specified".
  Values may hold spaces (WorkDir, Command), so `show_job` below splits on " Key=", not on spaces.
  Alternatives that work too: `squeue -h -t all -j ID -o "%i %T %r"` (state and reason; -t all includes
  finished jobs), `squeue -h -t all -j ID -O JobID,State,exit_code` (exit_code: a raw wait status,
  768 for exit 3) and `squeue --json -t all` ("job_state", "exit_code" as a wait status).
  `show_job` and `wait_job` below are the helpers to copy.
"""

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}
FIELD = re.compile(r"(?:^| )([A-Za-z][\w:/]*)=")


def show_job(cluster, job_id) -> list[dict[str, str]]:
    """`scontrol show job -o JOB_ID` as one dict per line (an array's tasks: one each)."""
    records = []
    for line in cluster.run("scontrol", "show", "job", "-o", str(job_id)).splitlines():
        if line.strip():
            keys = list(FIELD.finditer(line))
            records.append({key.group(1): line[key.end():following.start() if following else None].strip()
                            for key, following in zip(keys, [*keys[1:], None], strict=True)})
    return records


def exit_code(record: dict[str, str]) -> tuple[int, int]:
    """ExitCode=CODE:SIGNAL as (code, signal)."""
    code, signal = record["ExitCode"].split(":")
    return int(code), int(signal)


def wait_job(cluster, job_id, timeout: float = 120) -> list[dict[str, str]]:
    """Poll `scontrol show job` until every record (task) of the job is in a final state."""
    deadline = time.monotonic() + timeout
    while True:
        records = show_job(cluster, job_id)
        if all(r["JobState"] in FINAL for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not done after {timeout} s: {[r['JobState'] for r in records]}")
        time.sleep(0.2)


def sbatch(cluster, folder: Path, script: str, *options: str) -> str:
    """Submit a bash script; its output in FOLDER/slurm-%j.out (arrays: slurm-%A_%a.out); the job id."""
    path = folder / f"job-{time.monotonic_ns()}.sh"
    path.write_text("#!/bin/bash\nset -eu\n" + script)
    job_id = cluster.run("sbatch", "--parsable", "--chdir", str(folder), "--output", str(folder / "slurm-%j.out"),
                         *options, str(path))
    assert re.fullmatch(r"\d+\n", job_id), repr(job_id)
    return job_id.strip()


def test_a_batch_job_runs_and_completes(slurm_cluster, tmp_path):
    job = sbatch(slurm_cluster, tmp_path, "echo ran on $(hostname) in $PWD > result\n")
    [record] = wait_job(slurm_cluster, job)
    assert (record["JobState"], record["Reason"], exit_code(record)) == ("COMPLETED", "None", (0, 0))
    assert record["NodeList"] == slurm_cluster.node
    assert (tmp_path / "result").read_text().startswith("ran on ")
    assert (tmp_path / "result").read_text().strip().endswith(f"in {tmp_path}")
    assert (tmp_path / f"slurm-{job}.out").exists()


def test_an_array_then_a_job_that_waits_for_all_its_tasks(slurm_cluster, tmp_path):
    array = sbatch(slurm_cluster, tmp_path, "sleep 1\necho $SLURM_ARRAY_JOB_ID > task-$SLURM_ARRAY_TASK_ID\n",
                   "--array=0-1", "--output", str(tmp_path / "slurm-%A_%a.out"))
    after = sbatch(slurm_cluster, tmp_path, "cat task-0 task-1 > after\n", f"--dependency=afterok:{array}")
    pending = show_job(slurm_cluster, after)[0]
    assert (pending["JobState"], pending["Dependency"]) == ("PENDING", f"afterok:{array}_*(unfulfilled)")
    tasks = wait_job(slurm_cluster, array)
    assert sorted((r["ArrayJobId"], r["ArrayTaskId"], r["JobState"], r["ExitCode"]) for r in tasks) == \
        [(array, "0", "COMPLETED", "0:0"), (array, "1", "COMPLETED", "0:0")]
    assert [(tmp_path / f"task-{i}").read_text() for i in (0, 1)] == [f"{array}\n"] * 2
    [done] = wait_job(slurm_cluster, after)
    assert (done["JobState"], done["ExitCode"]) == ("COMPLETED", "0:0")
    assert done["StartTime"] >= max(r["EndTime"] for r in tasks)  # ISO times compare as strings
    assert (tmp_path / "after").read_text() == f"{array}\n{array}\n"


def test_a_failed_dependency_cancels_a_job_submitted_with_kill_on_invalid_dep(slurm_cluster, tmp_path):
    failing = sbatch(slurm_cluster, tmp_path, "exit 3\n")
    killed = sbatch(slurm_cluster, tmp_path, "touch ran\n", f"--dependency=afterok:{failing}",
                    "--kill-on-invalid-dep=yes")
    stuck = sbatch(slurm_cluster, tmp_path, "touch ran\n", f"--dependency=afterok:{failing}")
    [failed] = wait_job(slurm_cluster, failing)
    assert (failed["JobState"], failed["Reason"], exit_code(failed)) == ("FAILED", "NonZeroExitCode", (3, 0))
    [cancelled] = wait_job(slurm_cluster, killed, timeout=60)
    assert (cancelled["JobState"], cancelled["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")
    # Without the flag the dependent never runs and never ends: it waits for someone to scancel it.
    deadline = time.monotonic() + 60
    while (pending := show_job(slurm_cluster, stuck)[0])["Reason"] != "DependencyNeverSatisfied":
        assert time.monotonic() < deadline, pending
        time.sleep(0.2)
    assert pending["JobState"] == "PENDING"
    slurm_cluster.run("scancel", stuck)
    [scancelled] = wait_job(slurm_cluster, stuck)
    assert scancelled["JobState"] == "CANCELLED"
    assert not (tmp_path / "ran").exists()


def test_srun_starts_one_process_per_task_with_what_a_launcher_needs_to_rendezvous(slurm_cluster, tmp_path):
    job = sbatch(slurm_cluster, tmp_path, """\
srun bash -c 'echo $SLURM_PROCID $SLURM_NODEID $SLURM_LOCALID $SLURM_NTASKS $SLURM_JOB_NUM_NODES \
$SLURM_JOB_NODELIST $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1) > task-$SLURM_PROCID'
""", "--ntasks", "2")
    [record] = wait_job(slurm_cluster, job)
    assert (record["JobState"], record["NumTasks"], record["ExitCode"]) == ("COMPLETED", "2", "0:0")
    node = slurm_cluster.node
    assert [(tmp_path / f"task-{rank}").read_text().split() for rank in (0, 1)] == \
        [[str(rank), "0", str(rank), "2", "1", node, node] for rank in (0, 1)]
    assert socket.gethostbyname(node) == "127.0.0.1"


@pytest.mark.parametrize(("script", "state", "reason", "code"), [
    ("exit 0", "COMPLETED", "None", (0, 0)),
    ("exit 7", "FAILED", "NonZeroExitCode", (7, 0)),
    ("kill -9 $$", "FAILED", "JobLaunchFailure", (0, 9)),
])
def test_final_state_and_exit_code_without_sacct(slurm_cluster, tmp_path, script, state, reason, code):
    [record] = wait_job(slurm_cluster, sbatch(slurm_cluster, tmp_path, script + "\n"))
    assert (record["JobState"], record["Reason"], exit_code(record)) == (state, reason, code)


def test_scancel_of_a_running_job(slurm_cluster, tmp_path):
    job = sbatch(slurm_cluster, tmp_path, "touch started\nsleep 300\n")
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline, show_job(slurm_cluster, job)
        time.sleep(0.1)
    assert show_job(slurm_cluster, job)[0]["JobState"] == "RUNNING"
    slurm_cluster.run("scancel", job)
    [record] = wait_job(slurm_cluster, job)
    assert (record["JobState"], exit_code(record)) == ("CANCELLED", (0, 15))


def test_an_unknown_job_id(slurm_cluster):
    shown = subprocess.run(["scontrol", "show", "job", "-o", "999999"], env=slurm_cluster.client_env(),
                           capture_output=True, text=True)
    assert (shown.returncode, shown.stderr.strip()) == (1, "slurm_load_jobs error: Invalid job id specified")


@pytest.mark.parametrize("options", [["--ntasks", "{too_many}"], ["--cpus-per-task", "{too_many}"], ["--nodes", "2"]])
def test_a_job_larger_than_the_cluster_is_refused_at_submission(slurm_cluster, options):
    options = [option.format(too_many=slurm_cluster.cpus + 1) for option in options]
    refused = subprocess.run(["sbatch", "--parsable", *options, "--wrap", "true"], env=slurm_cluster.client_env(),
                             capture_output=True, text=True)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "sbatch: error: Batch job submission failed: " in refused.stderr


def test_clients_and_jobs_need_only_the_cluster_env(slurm_env, tmp_path, monkeypatch):
    """What code under test sees: plain subprocess calls with os.environ, which slurm_env set up."""
    monkeypatch.setenv("WRPO_SLURM_PROBE", "inherited")
    monkeypatch.chdir(tmp_path)
    job = subprocess.run(["sbatch", "--parsable", "--wrap", "echo $WRPO_SLURM_PROBE $SLURM_CONF > env"],
                         capture_output=True, text=True, check=True).stdout.strip()
    [record] = wait_job(slurm_env, job)
    assert record["JobState"] == "COMPLETED"
    assert (tmp_path / "env").read_text().split() == ["inherited", slurm_env.env["SLURM_CONF"]]
    assert (tmp_path / f"slurm-{job}.out").exists()  # sbatch's default output, in the submitting folder
