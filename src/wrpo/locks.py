"""An exclusive lock on an output while one process writes it, so that a second run of the same stage
(a double submission, a Slurm requeue while the old job still runs) stops with one line naming the
holder instead of interleaving rows with it.

OUTPUT.lock (beside the output file or folder) holds {host, pid, started, command} of its holder. The
lock itself is the kernel's flock on that file: it is released when the holder dies, however it
dies, so a lock file left by a killed process is stale by construction; the next run takes it over and
says whose it was. Written here rather than with the `filelock` package because the holder's name in
the file and the report of a takeover are the point, and filelock keeps neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from wrpo.errors import InputError
from wrpo.progress import warn


def lock_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Holds OUTPUT.lock for the duration; raises InputError when another live process holds it."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, output)
    try:
        yield
    finally:
        # Unlinked before unlocking: a process that opens the path from now on gets a new file, and
        # one that opened this file meanwhile sees (in _acquire) that it is no longer the lock.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        handle.close()


def _acquire(path: Path, output: str | Path):
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            handle.close()
            raise InputError(f"being written by {_describe(holder)} (lock {path}); wait for it to finish or stop it",
                             output) from None
        if _same_file(handle, path):
            break
        handle.close()  # the holder released and removed this file while we opened it: try the new one
    previous = _holder(handle)
    if previous:
        warn(f"{output}: took over the lock left by {_describe(previous)}, no longer running")
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}))
    handle.flush()
    return handle


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _holder(handle) -> dict:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except json.JSONDecodeError:  # a holder killed while writing its name
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    where = "this host" if holder.get("host") == socket.gethostname() else f"host {holder.get('host')}"
    return f"pid {holder.get('pid')} on {where} since {holder.get('started')}"


def live_holder(output: str | Path) -> dict | None:
    """Who holds OUTPUT's lock now ({host, pid, started, command}), or None when nobody does. Read
    without locking (which could make a run starting now fail to take it): a holder on this host is
    alive if its pid is; one on another host is taken as alive."""
    try:
        with lock_path(output).open() as handle:
            holder = _holder(handle)
    except FileNotFoundError:
        return None
    if not holder or holder.get("host") != socket.gethostname():
        return holder or None
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return None
    return holder
