"""The error types of bad user input (files, folders, arguments, config values).

The command line prints a ``UserError`` as one line (the argument or file, and the reason) and exits
non-zero, without a traceback. Anything else is a programming error and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave is missing or wrong; the message names the argument or file and the reason."""


class InputNotFound(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not the expected kind)."""


class InvalidInput(UserError, ValueError):
    """A file's content, an argument or a config value is not acceptable."""
