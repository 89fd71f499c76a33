"""Exceptions with messages that name the file or row at fault and what to do about it."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file (and row) and the fix."""
