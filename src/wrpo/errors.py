"""The one error type that the command line turns into a one-line message and exit status 2."""

from __future__ import annotations

from pathlib import Path


def place(path, line: int | None = None) -> str:
    """Where a row is: FILE:LINE (lines from 1). Rows held in memory (wrpo.data.records.InMemoryRows, a
    `datasets.Dataset` or a list of dicts) are not a file and name a row themselves, by its 0-based
    index as Python reads it: train_dataset[3]."""
    if line is None:
        return str(path)
    return path.place(line) if hasattr(path, "place") else f"{path}:{line}"


class InputError(Exception):
    """Bad user input: names the file and, where there is one, the line (1-based), or for rows held
    in memory the data set and the row's index (see place)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        super().__init__(f"{place(path, line)}: {message}" if self.path else message)


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
