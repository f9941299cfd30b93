"""Exceptions that mean "the user asked for something that cannot work", as opposed to a bug.

Every library error caused by the user's input or settings derives from :class:`UserError`. The command-line
entry points (:func:`hybridjax.cli.run_cli`) print such an error as one line and exit with status 2; any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Marker base: a bad setting, file or command, explained by the message (which names the field or file)."""


class ConfigError(UserError, ValueError):
    """A setting is invalid, or does not fit the data or the machine (the message names the setting)."""


class Interrupted(Exception):
    """A run stopped on request (a signal) after saving its state: the message says how to resume.

    :func:`hybridjax.cli.run_cli` prints it and exits with :attr:`exit_status` (128 + the signal number, the
    shell's convention; 1 when no signal caused it).
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum if self.signum else 1
