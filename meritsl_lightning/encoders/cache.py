"""On-disk cache of frozen-encoder outputs, keyed by model identity, corpus, protocol, split, content, and the
device type and precision that produced them.

An entry is one file written to a temporary name and renamed into place, so concurrent writers leave one
complete entry. It holds its own key and is checked on first read (the archive's CRC-32 of every record, then
the key): a torn, truncated, foreign or corrupted entry is a miss, logged, recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

DEFAULT_CACHE_ENV = "MERITSL_CACHE_DIR"
ENTRY_FORMAT = 2


class CacheEntryError(ValueError):
    """A cache file that is not a complete entry for its key."""


def producer(device: torch.device | str) -> dict[str, str]:
    """The device type and precision a frozen model's outputs are computed in (part of every cache key): the
    extraction code runs under bf16 autocast on CUDA and in float32 elsewhere."""
    kind = torch.device(device).type
    return {"device": kind, "precision": "bf16-autocast" if kind == "cuda" else "float32"}


def default_cache_dir() -> Path:
    """``$MERITSL_CACHE_DIR`` or ``~/.cache/meritsl/embeddings``."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "meritsl" / "embeddings"


@lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_identity(path: str | os.PathLike) -> str:
    """sha256 of a file's content (memoised per path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=1024)
def _verified(path: str, size: int, mtime_ns: int, inode: int) -> None:
    """Raise CacheEntryError unless every record of the archive is complete and matches its CRC-32 (memoised:
    a file is read through once per process, until it is replaced)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CacheEntryError(f"not a complete archive ({e})") from e
    if bad is not None:
        raise CacheEntryError(f"record {bad} fails its CRC check")


class EmbeddingCache:
    """A folder of ``<key-hash>.pt`` entries (``{"format", "key", "value"}``) with a readable ``<key-hash>.json``
    describing the key."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def canonical(key: dict[str, Any]) -> str:
        return json.dumps(key, sort_keys=True)

    @classmethod
    def key_hash(cls, key: dict[str, Any]) -> str:
        return hashlib.sha256(cls.canonical(key).encode()).hexdigest()

    def path_for(self, key: dict[str, Any]) -> Path:
        digest = self.key_hash(key)
        return self.root / digest[:2] / f"{digest}.pt"

    def read(self, key: dict[str, Any]) -> torch.Tensor:
        """The entry for ``key``; FileNotFoundError when absent, CacheEntryError when it is not a valid entry."""
        path = self.path_for(key)
        st = os.stat(path)
        _verified(str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        try:
            # memory-mapped: large entries (CARE descriptors) are paged in on use and shared by loader workers
            entry = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CacheEntryError(f"unreadable ({e})") from e
        if not isinstance(entry, dict) or entry.get("format") != ENTRY_FORMAT or not isinstance(entry.get("value"), torch.Tensor):
            raise CacheEntryError("not a meritsl cache entry of this version")
        if entry.get("key") != self.canonical(key):
            raise CacheEntryError("it holds another key")
        return entry["value"]

    def get(self, key: dict[str, Any]) -> torch.Tensor | None:
        """The cached tensor, or None on a miss; an invalid entry is a miss (logged) and is replaced by ``put``."""
        try:
            return self.read(key)
        except FileNotFoundError:
            return None
        except CacheEntryError as e:
            log.warning("embedding cache entry %s is invalid (%s): recomputing and replacing it", self.path_for(key), e)
            return None

    def put(self, key: dict[str, Any], value: torch.Tensor) -> Path:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"format": ENTRY_FORMAT, "key": self.canonical(key), "value": value.detach().cpu().contiguous()}
        _atomic_write(path, lambda tmp: torch.save(entry, tmp))
        _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(key, indent=1, sort_keys=True)))
        return path

    def get_or_compute(self, key: dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Return the cached tensor for ``key``, computing and storing it on a miss."""
        value = self.get(key)
        if value is not None:
            self.hits += 1
            log.info("embedding cache hit: %s", self.path_for(key).name)
            return value
        self.misses += 1
        log.info("embedding cache miss: computing %s", self.canonical(key)[:200])
        value = compute()
        self.put(key, value)
        return value


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file of this process and thread, flushed, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
