"""The local executor: a stage's steps as processes on this machine. The tasks of a step start at once,
each pinned to its devices and writing its own log; the step ends when all have ended, and the first
failure stops the others and the run. A one-task step with no devices and no launcher runs in this
process, as `wrpo run` did before stages became processes: it saves the seconds of importing torch and
transformers again, which on a laptop recipe are most of a small stage's time."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from wrpo.errors import InputError
from wrpo.files import write_text_atomically
from wrpo.pipeline.layout import Workdir
from wrpo.pipeline.run import StageFailed
from wrpo.pipeline.stages import Stage, Task

TAIL_LINES = 15


def executable(command: tuple[str, ...]) -> list[str]:
    """The argv that runs a stage command with this Python (and so this environment's wrpo)."""
    if command[0] == "wrpo":
        return [sys.executable, "-m", "wrpo.cli", *command[1:]]
    if command[:2] == ("accelerate", "launch"):
        return [sys.executable, "-m", "accelerate.commands.launch", *command[2:]]
    return list(command)


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


class LocalExecutor:
    def __init__(self, device_type: str = "gpu"):
        self.device_type = device_type

    @staticmethod
    def check(stages: list[Stage]) -> None:
        for stage in stages:
            if any(task.nodes > 1 for step in stage.steps for task in step.tasks):
                raise InputError(f"stage {stage.name}: its resources give it several nodes, and the local executor "
                                 "runs on this machine only; use --executor slurm")

    def run(self, stage: Stage, layout: Workdir) -> None:
        for path, text in stage.files.items():
            write_text_atomically(path, text)
        for step in stage.steps:
            if len(step.tasks) == 1 and self.in_process(step.tasks[0]):
                self.run_here(stage, step.tasks[0], layout.log(stage.name))
            else:
                self.run_processes(stage, step.tasks, layout)

    @staticmethod
    def in_process(task: Task) -> bool:
        return task.command[0] == "wrpo" and not task.devices

    @staticmethod
    def run_here(stage: Stage, task: Task, log: Path) -> None:
        from wrpo.cli import run_command
        from wrpo.progress import is_verbose, stage_log

        with stage_log(log), log.open("a", buffering=1) as printed, contextlib.redirect_stdout(printed):
            exit_status = run_command([*(["--verbose"] if is_verbose() else []), *task.command[1:]])
        if exit_status:
            raise StageFailed(stage.name, exit_status, log, log_tail(log))

    def run_processes(self, stage: Stage, tasks: tuple[Task, ...], layout: Workdir) -> None:
        """Starts each task once no running one holds any of its devices (more shards than the node
        holds at once wait their turn), until all have ended; the first failure stops the rest."""
        from wrpo.progress import console

        logs = [layout.log(stage.name) if len(tasks) == 1 else layout.task_log(stage.name, index)
                for index in range(len(tasks))]
        concurrent = len({task.devices for task in tasks}) if all(task.devices for task in tasks) else len(tasks)
        running: dict[int, subprocess.Popen] = {}
        waiting = list(range(len(tasks)))
        started = time.monotonic()
        with contextlib.ExitStack() as stack, console.status("") as status:
            try:
                while waiting or running:
                    busy = {device for index in running for device in tasks[index].devices}
                    for index in [i for i in waiting if not busy & set(tasks[i].devices)]:
                        busy |= set(tasks[index].devices)
                        waiting.remove(index)
                        logs[index].parent.mkdir(parents=True, exist_ok=True)
                        output = stack.enter_context(logs[index].open("ab"))
                        running[index] = subprocess.Popen(
                            self.argv(tasks[index]), stdout=output, stderr=subprocess.STDOUT,
                            env=self.environment(tasks[index], min(concurrent, len(tasks))), start_new_session=True)
                    for index, process in list(running.items()):
                        code = process.poll()
                        if code:  # the others' work is resumable: stop them rather than wait
                            raise StageFailed(stage.name, code, logs[index], log_tail(logs[index]))
                        if code == 0:
                            del running[index]
                    elapsed = int(time.monotonic() - started)
                    status.update(f"{stage.name}: {len(running)} of {len(tasks)} processes running, "
                                  f"{len(tasks) - len(running) - len(waiting)} done, "
                                  f"{elapsed // 60}:{elapsed % 60:02d}")
                    time.sleep(0.5)
            finally:  # a failure, Ctrl-C or any error: no process (and none of its children) is left behind
                self.stop(list(running.values()))

    @staticmethod
    def argv(task: Task) -> list[str]:
        argv = executable(task.command)
        if task.command[:2] == ("accelerate", "launch"):
            # A port free now: the default one may be held by another run on this machine.
            position = argv.index("wrpo.cli") - 1  # the -m of the launched module
            argv[position:position] = ["--main_process_port", str(free_port())]
        return argv

    def environment(self, task: Task, concurrent: int) -> dict[str, str]:
        env = dict(os.environ)
        if task.devices and self.device_type == "gpu":
            # Indexes into the devices this run may use: those CUDA_VISIBLE_DEVICES gave it, if any.
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[d] if d < len(visible) and visible[d] else str(d)
                                                   for d in task.devices)
        if concurrent > 1 and (self.device_type == "cpu" or not task.devices):
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
