"""OpenAI-compatible servers on loopback for the tests: started in a process group of their own, waited
for until they answer, and stopped by their pid."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_server(command, port, log, timeout=120, cwd=None):
    """Starts a server in a process group of its own, its output to `log`, and waits until it answers
    on /health; stop(server) ends it by its pid."""
    with open(log, "wb") as output:
        server = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    deadline = time.time() + timeout
    while time.time() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except OSError:
            time.sleep(0.3)
    stop(server)
    raise RuntimeError(f"{' '.join(command[:2])} did not start: {Path(log).read_text()[-3000:]}")


def executable(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def transformers_serve(model, port, log, cwd=None):
    """`transformers serve` of `model` only; with `model` None, of any model a request names (a folder,
    relative to `cwd`), loaded when first asked for."""
    pinned = [] if model is None else [str(model)]
    return start_server([executable("transformers"), "serve", *pinned, "--host", "127.0.0.1", "--port", str(port)],
                        port, log, cwd=cwd)


def stop(server):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
