"""Exceptions that carry a one-line, user-facing message naming the fix."""

from __future__ import annotations


class RankCSEError(Exception):
    """Base class for errors the CLI reports as one line with exit code 2."""


class ConfigError(RankCSEError):
    """A setting is missing, unknown or out of range."""


class DataError(RankCSEError):
    """A data file or folder is missing, empty or malformed."""


class ModelLoadError(RankCSEError):
    """A model path or name could not be resolved or loaded."""


class TrainingDiverged(RankCSEError):
    """The loss became NaN or infinite; training stops at that step."""

    def __init__(self, step: int, message: str) -> None:
        super().__init__(message)
        self.step = step


class TrainingCollapsed(RankCSEError):
    """The representation collapsed (see :mod:`rankcse.collapse`); training stops at that evaluation."""

    #: Exit status of ``rankcse train`` for a collapsed run (2 is bad input).
    exit_status = 3

    def __init__(self, step: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.reason = reason or message


class CheckpointWriteError(RankCSEError):
    """A checkpoint could not be written (disk full, file-size limit); the previous whole one is kept."""
