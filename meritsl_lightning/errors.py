"""User errors: their types, and the one line the command line prints for them instead of a traceback.

A user error is a ``UserError`` (raised by this project when a file, folder, argument or config value is
wrong), or one of a few library errors that can only mean bad input: a Hugging Face id that is not
available offline, a file that cannot be written, a Lightning misconfiguration, a config value that one
of this project's classes refused while jsonargparse built it. Everything else is a programming error and
keeps its traceback. ``MERITSL_DEBUG=1`` (or ``--debug``) shows the traceback of user errors too.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from data_modules.errors import InputNotFound, InvalidInput, UserError

__all__ = [
    "DEBUG_ENV",
    "InputNotFound",
    "InvalidInput",
    "OfflineModelUnavailable",
    "UserError",
    "debug_enabled",
    "user_error_message",
]

DEBUG_ENV = "MERITSL_DEBUG"
# the project's own sources: a ValueError raised here while jsonargparse builds a class is a refused value
_PROJECT_DIRS = tuple(str(Path(__file__).resolve().parents[1] / d) + os.sep for d in ("meritsl_lightning", "data_modules"))
# OSErrors about a file the user named or an output folder they chose (not about sockets, devices, ...)
_FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENOSPC, errno.EEXIST}
_HF_OFFLINE = re.compile(r"couldn't connect to 'https://huggingface\.co'|outgoing traffic has been disabled|"
                         r"is not a local folder and is not a valid model identifier")  # fmt: skip


class OfflineModelUnavailable(UserError, OSError):
    """A Hugging Face id that is neither a local folder nor in the cache, with no network to fetch it."""


def debug_enabled() -> bool:
    """True when ``MERITSL_DEBUG`` is set to anything but empty or 0."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user error anywhere in ``exc``'s chain, or None for a programming error."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, UserError):
            return _one_line(str(e))
    offline = _offline_model(chain)
    if offline is not None:
        return offline
    for e in chain:
        message = _library_user_error(e)
        if message is not None:
            return message
    refused = _refused_config_value(chain)
    if refused is not None:
        return refused
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, outermost first, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]


def _one_line(message: str) -> str:
    """jsonargparse's multi-line reports condensed to their informative lines, joined by ': '."""
    keep = []
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if not line or line.startswith(("Subtypes:", "Given value", "Errors:", "Does not validate against any of the Union")):
            continue
        if line.startswith("Expected a <class 'NoneType'>") or line == "Expected a None":
            continue
        line = re.sub(r'Parser key "([^"]+)"', r"\1", line)
        line = re.sub(r"^Problem with given class_path '([^']+)':$", r"\1", line)
        keep.append(line.rstrip(":"))
    return ": ".join(keep) if keep else message.strip()


def _frames(chain: list[BaseException]) -> Iterator[tuple[str, str, dict]]:
    """(file, function, locals) of every traceback frame of the chain, outermost call first."""
    for e in chain:  # an outer exception's traceback holds the calls above where it caught its cause
        tb: TracebackType | None = e.__traceback__
        frames = []
        while tb is not None:
            frames.append((tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name, tb.tb_frame.f_locals))
            tb = tb.tb_next
        yield from frames


def _offline_model(chain: list[BaseException]) -> str | None:
    """The message for a Hugging Face id or folder that could not be loaded, naming the argument that gave it."""
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    if any(isinstance(e, HFValidationError) for e in chain):
        reason = "is not a local model folder (and not a valid Hugging Face id): check the path"
    elif any(isinstance(e, RepositoryNotFoundError) for e in chain):
        reason = "is not a local model folder, nor a model on the Hugging Face hub (or it is private)"
    elif any(isinstance(e, LocalEntryNotFoundError) or (isinstance(e, OSError) and _HF_OFFLINE.search(str(e))) for e in chain):
        reason = "is not available offline (no local folder of that name, no network or cache): give a local folder"
    else:
        return None
    frames = list(_frames(chain))
    name = next((str(loc["pretrained_model_name_or_path"]) for _, fn, loc in frames
                 if fn == "from_pretrained" and isinstance(loc.get("pretrained_model_name_or_path"), (str, os.PathLike))), None)  # fmt: skip
    if name is None:
        return f"a Hugging Face model {reason}"
    # the argument: the outermost of this project's frames that holds the name in a variable (its init argument)
    role = next((var for file, _, loc in frames if file.startswith(_PROJECT_DIRS)
                 for var, value in loc.items() if var != "self" and isinstance(value, str) and value == name), None)  # fmt: skip
    return f"{role + ': ' if role else ''}{name!r} {reason}"


def _library_user_error(e: BaseException) -> str | None:
    """Library errors that can only come from what the user gave."""
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(e, ArgumentError):
        return _one_line(str(e))
    if isinstance(e, MisconfigurationException):
        return _one_line(str(e))
    if isinstance(e, OSError) and e.errno in _FILE_ERRNOS and e.filename is not None:
        target = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
        return f"{target}: {e.strerror}"
    return None


def _refused_config_value(chain: list[BaseException]) -> str | None:
    """A ValueError this project raised in a class's ``__init__`` while jsonargparse instantiated the config."""
    outer = chain[0]
    if not any("jsonargparse" in file for file, _, _ in _frames([outer])):
        return None
    for e in chain[1:]:
        if not isinstance(e, ValueError) or e.__traceback__ is None:
            continue
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        if not tb.tb_frame.f_code.co_filename.startswith(_PROJECT_DIRS):
            continue
        owner = next((type(loc["self"]).__name__ for file, fn, loc in _frames([e])
                      if fn == "__init__" and file.startswith(_PROJECT_DIRS) and "self" in loc), None)  # fmt: skip
        return f"{owner}: {_one_line(str(e))}" if owner else _one_line(str(e))
    return None
