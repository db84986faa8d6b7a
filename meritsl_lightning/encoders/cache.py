"""On-disk cache of frozen-encoder outputs, keyed by model identity, corpus, protocol, split and content."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

DEFAULT_CACHE_ENV = "MERITSL_CACHE_DIR"


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


class EmbeddingCache:
    """A folder of ``<key-hash>.pt`` tensors with a readable ``<key-hash>.json`` describing the key."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key_hash(key: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def path_for(self, key: dict[str, Any]) -> Path:
        digest = self.key_hash(key)
        return self.root / digest[:2] / f"{digest}.pt"

    def get(self, key: dict[str, Any]) -> torch.Tensor | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            # memory-mapped: large entries (CARE descriptors) are paged in on use and shared by loader workers
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # a torn or foreign file is a miss, never a crash
            log.warning("ignoring unreadable cache entry %s (%s)", path, e)
            return None

    def put(self, key: dict[str, Any], value: torch.Tensor) -> Path:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(value.detach().cpu().contiguous(), tmp)
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps(key, indent=1, sort_keys=True))
        return path

    def get_or_compute(self, key: dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Return the cached tensor for ``key``, computing and storing it on a miss."""
        value = self.get(key)
        if value is not None:
            self.hits += 1
            log.info("embedding cache hit: %s", self.path_for(key).name)
            return value
        self.misses += 1
        log.info("embedding cache miss: computing %s", json.dumps(key, sort_keys=True)[:200])
        value = compute()
        self.put(key, value)
        return value
