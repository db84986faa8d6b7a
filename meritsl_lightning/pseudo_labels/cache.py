"""Append-only JSONL files that survive a crash, and the on-disk cache of LLM labelling outcomes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
CACHE_FILE = "responses.jsonl"


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` (backend, model, prompt, labels, decoding params, text)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def recover_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of an append-only JSONL file and the numbers of its unreadable lines, after repairing its tail.

    A process killed mid-write leaves a last line without its newline: that torn line is cut off (or, if
    it is a whole JSON object, given its newline), so that the next append starts on a fresh line.
    """
    if not path.exists():
        return [], []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        if _json_object(tail) is not None:
            with open(path, "ab") as f:
                f.write(b"\n")
            data += b"\n"
        else:
            log.warning(
                "%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(tail)
            )
            with open(path, "r+b") as f:
                f.truncate(cut)
            data = data[:cut]
    rows, bad = [], []
    for lineno, line in enumerate(data.split(b"\n")[:-1] if data else [], 1):
        if not line.strip():
            continue
        obj = _json_object(line)
        if obj is None:
            bad.append(lineno)
        else:
            rows.append(obj)
    return rows, bad


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


class JsonlAppender:
    """Appends one JSON object per line; each line is flushed at once so that a killed run loses none."""

    def __init__(self, path: Path, fsync_every: int = 100) -> None:
        self.path = path
        self.fsync_every = fsync_every
        self._since_sync = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def append(self, row: Mapping[str, Any]) -> None:
        """Write ``row`` as one line and flush it to the OS."""
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        self._since_sync += 1
        if self._since_sync >= self.fsync_every:  # survive a power loss too, at a bounded cost
            os.fsync(self._file.fileno())
            self._since_sync = 0

    def close(self) -> None:
        """Flush, sync and close."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


class ResponseCache:
    """Labelling outcomes keyed by :func:`cache_key`, in ``DIR/responses.jsonl``; a re-run is served from it."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / CACHE_FILE
        rows, bad = recover_jsonl(self.path)
        if bad:
            log.warning("%s: ignoring %d unreadable line(s), first at line %d", self.path, len(bad), bad[0])
        self._entries = {row["key"]: row["value"] for row in rows if "key" in row and "value" in row}
        self._writer = JsonlAppender(self.path)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored outcome for ``key``, or None."""
        return self._entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key`` (appended at once)."""
        self._entries[key] = value
        self._writer.append({"key": key, "value": value})

    def close(self) -> None:
        """Flush and close the file."""
        self._writer.close()
