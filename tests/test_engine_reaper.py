"""The engine's watchdog on plain Python processes (test_vllm_backend.py runs it under vLLM's engine): an owner
killed by SIGKILL takes along the processes it started since its watchdog (forked or run, their children, one
that ignores SIGTERM), and none it had started before."""

import json
import signal
import subprocess
import sys
import time

import psutil

from conftest import gone
from wrpo.generation.engine_reaper import POLL_SECONDS, start_watchdog, stop_watchdog

SLEEPER = "import time; print(flush=True); time.sleep(60)"  # a line once started
OWNER = f"""
import json, os, subprocess, sys, time
from wrpo.generation.engine_reaper import start_watchdog

def start(code):
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    child.stdout.readline()
    return child.pid

earlier = start({SLEEPER!r})
watchdog = start_watchdog(grace=1)
later = start({SLEEPER!r})
forked = os.fork()
if forked == 0:  # as vLLM starts its EngineCore: it holds what the owner held
    time.sleep(60)
    os._exit(0)
stubborn = start("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + {SLEEPER!r})
parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                           "print(child.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
grandchild = int(parent.stdout.readline())
started = [later, forked, stubborn, parent.pid, grandchild]
print(json.dumps({{"earlier": earlier, "watchdog": watchdog.pid, "started": started}}), flush=True)
time.sleep(60)
"""


def test_a_killed_owner_takes_along_what_it_started_since_its_watchdog():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    pids = json.loads(owner.stdout.readline())
    earlier = psutil.Process(pids["earlier"])
    ended = [psutil.Process(pid) for pid in [pids["watchdog"], *pids["started"]]]
    try:
        time.sleep(1.5 * POLL_SECONDS)  # a look of the watchdog's since they started
        owner.kill()
        owner.wait()
        deadline = time.time() + 1 + 3 * POLL_SECONDS  # the grace, then a SIGKILL
        while time.time() < deadline and not all(map(gone, ended)):
            time.sleep(0.1)
        assert [process.pid for process in ended if not gone(process)] == []
        assert not gone(earlier)
    finally:
        for process in [earlier, *ended]:
            if not gone(process):
                process.kill()


def test_a_stopped_watchdog_ends_nothing():
    watchdog = start_watchdog()
    child = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        stop_watchdog(watchdog)
        assert watchdog.returncode == -signal.SIGTERM
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
