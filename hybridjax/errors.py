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
