"""The local executor: each stage that is not done, in order, as processes on this machine. The processes of a
step start at once, each pinned to its devices and writing its own log; the step ends when all have ended, and
the first failure stops the others and the run. A one-process step with no devices and no launcher runs in this
process (wrpo.pipeline.worker.run_part): it saves the seconds of importing torch and transformers again, which
on a laptop recipe are most of a small stage's time."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from wrpo.data.resumable import parse_shard
from wrpo.errors import InputError
from wrpo.locks import live_holder
from wrpo.pipeline.executor import StageFailed
from wrpo.pipeline.kinds import Stage
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.placement import Process, steps
from wrpo.pipeline.state import StageState, decision_now, mark_failed, read_manifest
from wrpo.pipeline.worker import run_part, write_stage_files
from wrpo.progress import console, say, stage_log

TAIL_LINES = 15
WORKER = ("-m", "wrpo.pipeline.worker")


def failure_excerpt(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """What a failed process's log says of why: its last lines, or where it was killed by a signal (Python's
    fault handler writes each thread's stack, the killed one last). A launch (torchrun, under accelerate
    launch) ends its log with the launcher's own traceback and a report on each rank, after what the ranks
    printed: the excerpt is then theirs, and the report's first failure in a line."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    report = next((index for index in range(len(text) - 1, -1, -1) if "ChildFailedError" in text[index]), None)
    launcher = None if report is None else next(
        (index for index in range(report, -1, -1) if text[index].startswith("Traceback (most recent call last)")), None)
    # The elastic agent's own lines (stopping the other ranks) say nothing its report does not.
    printed = text if launcher is None else [
        line for line in text[:launcher] if "torch/distributed/elastic/" not in line]
    fatal = next((index for index, line in enumerate(printed) if line.startswith("Fatal Python error")), None)
    killed = None if fatal is None else next(
        (index for index in range(fatal, len(printed)) if printed[index].startswith("Current thread")), None)
    excerpt = printed[-(lines - 1):] if killed is None else [printed[fatal], *printed[killed:killed + lines - 2]]
    if launcher is None:
        return excerpt
    first = text[report:]
    first = first[next((index for index, line in enumerate(first) if line.startswith("Root Cause")), 0):]
    fields = [line.split(":", 1) for line in first if line.strip().startswith(("rank ", "exitcode ", "traceback "))]
    return excerpt + ["the launcher's report of the first failure: "
                      + "; ".join(f"{key.strip()} {' '.join(value.split())}" for key, value in fields)]


def free_port() -> int:
    """A TCP port free on this machine now (a launch's rendezvous; tests' servers)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalExecutor:
    name = "local"
    description = "processes on this machine"
    waits = True

    @staticmethod
    def check(stages: list[Stage]) -> None:
        for stage in stages:
            if stage.placement.nodes > 1:
                raise InputError(f"stage {stage.name}: its resources give it several nodes, and the local executor "
                                 "runs on this machine only; use --executor slurm")

    def run(self, stages: list[Stage]) -> dict[str, str]:
        """What a stage prints and logs goes to its log (Workdir.log)."""
        statuses = {}
        for number, stage in enumerate(stages, start=1):
            layout = stage.layout
            decision = decision_now(stage)  # its inputs are final now
            header = f"[{number}/{len(stages)}] {stage.name}"
            if decision.action == "skip":
                say(f"{header}: up to date, skipped")
                statuses[stage.name] = "skipped"
                continue
            if decision.action == "unknown":
                raise InputError(f"stage {stage.name}: {decision.why}")
            why = f"; {decision.why}" if decision.why else ""
            say(f"[bold]{header}[/]: {dict(run='running', resume='resuming', redo='redoing')[decision.action]} "
                f"({stage.placement.description}{why}; log: {layout.log(stage.name)})")
            try:
                self.run_stage(stage)
            except BaseException as error:
                mark_failed(stage, {"exit_status": error.exit_status, "log": str(error.log)}
                            if isinstance(error, StageFailed)
                            else {"error": str(error) or type(error).__name__, "log": str(layout.log(stage.name))})
                raise
            statuses[stage.name] = {"run": "ran", "resume": "resumed", "redo": "redone"}[decision.action]
        return statuses

    def run_stage(self, stage: Stage) -> None:
        stage_file = write_stage_files(stage)
        for step in steps(stage.placement):
            if len(step) == 1 and not step[0].devices and not step[0].launch:
                self.run_here(stage, step[0])
            else:
                self.run_processes(stage, stage_file, step)

    @staticmethod
    def run_here(stage: Stage, process: Process) -> None:
        log = stage.layout.log(stage.name)
        shard = parse_shard(process.worker_args[1]) if process.worker_args[:1] == ("--shard",) else None
        with stage_log(log), log.open("a", buffering=1) as printed, contextlib.redirect_stdout(printed):
            run_part(stage, shard, merge=process.worker_args == ("--merge",))

    def run_processes(self, stage: Stage, stage_file: Path, processes: tuple[Process, ...]) -> None:
        """Starts each process once no running one holds any of its devices (more shards than the node
        holds at once wait their turn), until all have ended; the first failure stops the rest."""
        layout = stage.layout
        logs = [layout.log(stage.name) if len(processes) == 1 else layout.task_log(stage.name, index)
                for index in range(len(processes))]
        concurrent = len({p.devices for p in processes}) if all(p.devices for p in processes) else len(processes)
        running: dict[int, subprocess.Popen] = {}
        waiting = list(range(len(processes)))
        started = time.monotonic()
        with contextlib.ExitStack() as stack, console.status("") as status:
            try:
                while waiting or running:
                    busy = {device for index in running for device in processes[index].devices}
                    for index in [i for i in waiting if not busy & set(processes[i].devices)]:
                        busy |= set(processes[index].devices)
                        waiting.remove(index)
                        logs[index].parent.mkdir(parents=True, exist_ok=True)
                        output = stack.enter_context(logs[index].open("ab"))
                        running[index] = subprocess.Popen(
                            self.argv(stage_file, processes[index]), stdout=output, stderr=subprocess.STDOUT,
                            env=self.environment(stage, processes[index], min(concurrent, len(processes))),
                            start_new_session=True)
                    for index, process in list(running.items()):
                        code = process.poll()
                        if code:  # the others' work is resumable: stop them rather than wait
                            raise StageFailed(stage.name, code, logs[index], failure_excerpt(logs[index]))
                        if code == 0:
                            del running[index]
                    elapsed = int(time.monotonic() - started)
                    status.update(f"{stage.name}: {len(running)} of {len(processes)} processes running, "
                                  f"{len(processes) - len(running) - len(waiting)} done, "
                                  f"{elapsed // 60}:{elapsed % 60:02d}")
                    time.sleep(0.5)
            finally:  # a failure, Ctrl-C or any error: no process (and none of its children) is left behind
                self.stop(list(running.values()))

    @staticmethod
    def argv(stage_file: Path, process: Process, port: int | None = None) -> list[str]:
        """The process's command line with this Python (and so this environment's wrpo); a launch gets a port
        free now for its rendezvous: the default one may be held by another run on this machine."""
        if process.launch:
            return [sys.executable, "-m", "accelerate.commands.launch", *process.launch,
                    "--main_process_port", str(port or free_port()), *WORKER, str(stage_file), *process.worker_args]
        return [sys.executable, *WORKER, str(stage_file), *process.worker_args]

    @staticmethod
    def environment(stage: Stage, process: Process, concurrent: int) -> dict[str, str]:
        env = dict(os.environ)
        gpu = stage.placement.device_type == "gpu"
        if process.devices and gpu:
            # Indexes into the devices this run may use: those CUDA_VISIBLE_DEVICES gave it, if any.
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[d] if d < len(visible) and visible[d] else str(d)
                                                   for d in process.devices)
        if concurrent > 1 and (not gpu or not process.devices):
            # Processes sharing the CPUs: each its share of the cores, or their threads spin against each other.
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // concurrent)))
        return env

    @staticmethod
    def stop(processes: list[subprocess.Popen]) -> None:
        """Ends each process's whole group (a launcher's workers too), even where the leader is gone."""
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    @staticmethod
    def in_flight(layout: Workdir) -> list[str]:
        return []  # a local run holds the workdir's lock, which refuses a second one

    @staticmethod
    def states(layout: Workdir, names: list[str]) -> dict[str, StageState]:
        """The stage a live `wrpo run` of this workdir is running: started, not finished, and marked by that
        process or one of this host still alive (its shards, its launch)."""
        runner = live_holder(layout.root)
        if runner is None:
            return {}
        states = {}
        for name in names:
            manifest = read_manifest(layout, name) or {}
            if not manifest.get("complete") and "failed" not in manifest and _running(manifest, runner):
                states[name] = StageState(name, "running", f"pid {manifest['pid']} on {manifest['host']}; "
                                                           f"log: {layout.log(name)}")
        return states

    @staticmethod
    def scripts(stage: Stage) -> list[str]:
        """Each process's command line, `python` being this environment's, with the devices it is pinned to
        (GPUs; CPU layouts ignore them); a launch's port is taken when it starts."""
        stage_file = stage.layout.stage_file(stage.name)
        lines = []
        for step in steps(stage.placement):
            for process in step:
                devices = f"CUDA_VISIBLE_DEVICES={','.join(map(str, process.devices))} " if process.devices else ""
                argv = LocalExecutor.argv(stage_file, process, port=29500)
                lines.append(devices + shlex.join(["python", *argv[1:]]))
        return lines


def _running(manifest: dict, runner: dict) -> bool:
    """Marked by the runner itself, or by a process of the runner's host that is still alive."""
    pid = manifest.get("pid")
    if pid is None or pid == runner.get("pid"):
        return pid is not None
    if manifest.get("host") != runner.get("host"):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
