"""Ends the processes a vLLM engine starts when the process that built the engine dies, however it dies.

vLLM's offline engine starts its EngineCore (and the EngineCore its workers) with multiprocessing, by fork
or spawn; nothing in the EngineCore watches the process that built the `LLM` (its workers do watch the
EngineCore, through a pipe), so a SIGKILL of wrpo alone (kill -9, the OOM killer) leaves them running with
their memory, on a GPU the memory a rerun needs. vLLM has no option for it. Nor can an environment variable
mark them for a later search: vLLM renames them (VLLM::EngineCore), which blanks their /proc/PID/environ.

So a watchdog, this module run as a script, a child of the owner (the process building the engine): it
notes the owner's descendants once a second, and when its own parent changes (the owner died) it stops
those born since the watchdog started: SIGTERM (vLLM's EngineCore shuts its workers down on it), SIGKILL
after a grace time. It imports psutil only, and holds no pipe to the owner, which forked engines would
inherit and keep open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

POLL_SECONDS = 1.0
# vLLM's EngineCore takes 6 to 10 s to shut down on SIGTERM (its worker first; on 2 busy CPU cores): time to
# free its shared memory itself before a SIGKILL.
GRACE_SECONDS = 10.0


def start_watchdog(grace: float = GRACE_SECONDS) -> subprocess.Popen:
    """A watchdog of this process, started and ready: the processes this one starts from now on are ended
    when it dies. stop_watchdog ends the watchdog alone."""
    watchdog = subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid()), str(grace)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    # Processes started before its first look are not its to end: wait for that look.
    with watchdog.stdout:
        ready = watchdog.stdout.readline()
    if ready != "ready\n":
        watchdog.wait()
        raise RuntimeError(f"the engine's watchdog did not start (exit status {watchdog.returncode})")
    return watchdog


def stop_watchdog(watchdog: subprocess.Popen) -> None:
    watchdog.terminate()
    watchdog.wait()


def watch(owner_pid: int, grace: float) -> None:
    owner = psutil.Process(owner_pid)
    before = set(owner.children(recursive=True))
    print("ready", flush=True)
    started: list[psutil.Process] = []
    while True:
        try:
            now = [process for process in owner.children(recursive=True)
                   if process not in before and process.pid != os.getpid()]
        except psutil.NoSuchProcess:
            break
        # Dead, the owner has no children: a look after its death is no look, the one before stands.
        if os.getppid() != owner_pid:
            break
        started = now
        time.sleep(POLL_SECONDS)
    # Their children too: a worker its EngineCore started since the last look.
    tree = {*started, *(child for process in started for child in _children(process))}
    if alive := [process for process in tree if _signal(process, signal.SIGTERM)]:
        pids = ", ".join(map(str, sorted(process.pid for process in alive)))
        print(f"wrpo: process {owner_pid} died; ending the {len(alive)} processes it had started (pids {pids})",
              file=sys.stderr, flush=True)
    _, left = psutil.wait_procs(alive, timeout=grace)
    for process in left:
        _signal(process, signal.SIGKILL)


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal(process: psutil.Process, signum: int) -> bool:
    """Sends signum unless the process is gone (or its pid is another's now, which psutil checks)."""
    try:
        process.send_signal(signum)
    except psutil.NoSuchProcess:
        return False
    return True


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the owner stops this watchdog when it ends its engine.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]), float(sys.argv[2]))
