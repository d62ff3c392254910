"""The one error type that the command line turns into a one-line message and exit status 2."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: names the file and, where there is one, the line (1-based)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        where = self.path if line is None or self.path is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)
