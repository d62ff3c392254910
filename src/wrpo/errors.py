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


class Problems:
    """Collects the InputErrors of several independent checks, so that a user learns of every
    problem at once rather than one per run."""

    def __init__(self):
        self.messages: list[str] = []

    def check(self, step, *args):
        """step(*args), or None with its error recorded."""
        try:
            return step(*args)
        except InputError as error:
            self.messages.append(str(error))
            return None

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_if_any(self) -> None:
        if len(self.messages) == 1:
            raise InputError(self.messages[0])
        if self.messages:
            raise InputError(f"{len(self.messages)} problems:\n  " + "\n  ".join(self.messages))
