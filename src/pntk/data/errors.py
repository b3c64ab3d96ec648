"""Errors raised when a dataset's files are missing or are not what their names promise."""

from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A file a dataset needs is not where it should be.

    The message names the file, the directories searched and where the files come from.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


class DatasetFileError(ValueError):
    """A dataset file is present but its contents are wrong: truncated, a wrong magic number, a wrong
    shape, labels out of range, or images and labels that do not match.

    The message names the file, says what was wrong and what to do about it.
    """

    def __init__(self, path: str | Path, problem: str, remedy: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}. {remedy}")
