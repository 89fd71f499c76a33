"""Exceptions with messages that name the file or row at fault and what to do about it.

`UserError` is the base of every *expected* failure: bad input data, a bad option value, an
unusable model or weights file, a run folder in use, a training run that diverged. The command
line (utils/cli.py) prints such an error as one `error: <message>` line and exits with status 1;
any other exception is a bug and keeps its traceback. Raise a subclass of UserError (or of one of
these) for anything a user can fix, with a message naming the file, row or value and the fix.
"""
from __future__ import annotations


class UserError(Exception):
    """An expected failure a user can fix; the message says what is wrong and what to do."""


class DataError(UserError, ValueError):
    """Bad input data: the message names the file (and row) and the fix."""


class ConfigError(UserError, ValueError):
    """A bad option or configuration value: the message names the value and the accepted ones."""


class ModelFileError(UserError, ValueError):
    """A model or weights file that cannot be loaded safely: the message names the file."""
