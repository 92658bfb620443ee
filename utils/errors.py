"""User-facing error types.

A :class:`UserError` is a mistake the user can fix (a bad flag, a bad file, a checkpoint of another
config). Command-line entry points turn it into one line, ``prog: error: <message>``, and exit code 2
(see :mod:`utils.cli`). Bugs are not ``UserError`` and keep their traceback.

Messages follow the house format: where (file, flag or parameter), what was received, what was
expected, and the fix.
"""
from __future__ import annotations


class UserError(ValueError):
    """An error caused by user input; its message is a single self-contained line."""


class BandError(UserError):
    """Impossible band edges for the given sampling frequency."""


class DatasetError(UserError):
    """A dataset folder or window file that is missing, corrupt or inconsistent."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, unsafe or from another configuration."""
