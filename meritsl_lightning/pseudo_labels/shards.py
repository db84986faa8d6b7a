"""Result files of long per-item jobs: one JSON line per item, append-only, split into per-rank shards.

Policy. Items are sorted by id and rank ``k`` of ``n`` takes items ``i`` with ``i % n == k``, writing
``<out>.shard-k-of-n``. A writer holds an exclusive ``flock`` on its file, so two processes never
write the same file and a merge never reads a shard that is still being written. A merge keeps, for
each id, the first row without an ``error`` (else the last error row), writes the rows sorted by id
atomically to ``<out>`` and then removes the shards.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from meritsl_lightning.errors import InvalidInput
from meritsl_lightning.pseudo_labels.cache import recover_jsonl

log = logging.getLogger(__name__)
T = TypeVar("T")
# (rank variable, world-size variable), in order of precedence: torchrun/Lightning, SLURM, per-node only
RANK_ENV_VARS = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"), ("LOCAL_RANK", "LOCAL_WORLD_SIZE"))


class ResultFileError(InvalidInput):
    """A result or shard file cannot be used as asked; the message names the file."""


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"--shard expects RANK/WORLD_SIZE with 0 <= RANK < WORLD_SIZE, e.g. 0/4; got {spec!r}")
    return int(match[1]), int(match[2])


def resolve_shard(spec: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[int, int, str]:
    """``(rank, world_size, source)`` from ``spec`` ("i/n"), else the launcher's environment, else ``(0, 1)``."""
    if spec:
        return (*parse_shard(spec), "--shard")
    env = os.environ if environ is None else environ
    for rank_var, world_var in RANK_ENV_VARS:
        if rank_var in env and world_var in env:
            rank, world = int(env[rank_var]), int(env[world_var])
            if not 0 <= rank < world:
                raise ValueError(f"{rank_var}={rank} is not in [0, {world_var}={world})")
            return rank, world, f"{rank_var}/{world_var}"
    return 0, 1, "single process"


def assign(items: Sequence[T], rank: int, world: int) -> list[T]:
    """The items of shard ``rank`` of ``world`` (``items`` must already be sorted by id)."""
    return [item for i, item in enumerate(items) if i % world == rank]


def shard_path(out: Path, rank: int, world: int) -> Path:
    """``<out>.shard-<rank>-of-<world>``."""
    return out.with_name(f"{out.name}.shard-{rank}-of-{world}")


def find_shards(out: Path) -> dict[int, dict[int, Path]]:
    """Existing shard files of ``out``: ``{world_size: {rank: path}}``."""
    pattern = re.compile(re.escape(out.name) + r"\.shard-(\d+)-of-(\d+)")
    found: dict[int, dict[int, Path]] = {}
    if out.parent.is_dir():
        for path in sorted(out.parent.iterdir()):
            match = pattern.fullmatch(path.name)
            if match:
                found.setdefault(int(match[2]), {})[int(match[1])] = path
    return found


def resolve_rows(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per id: the first row without an error, else the last error row."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept = best.get(row["id"])
        if kept is None or kept.get("error"):
            best[row["id"]] = row
    return best


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a result file (a torn last line is cut off the file); unreadable rows are skipped."""
    rows, bad = recover_jsonl(path)
    if bad:
        log.warning("%s: ignoring %d unreadable line(s), first at line %d; their items are redone", path, len(bad), bad[0])
    for row in rows:
        if not isinstance(row.get("id"), str):
            raise ResultFileError(f"{path}: a row has no string 'id': {json.dumps(row)[:200]}")
    return rows


@contextmanager
def locked(path: Path) -> Iterator[IO[bytes]]:
    """Open ``path`` for appending under an exclusive lock; refuse if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise ResultFileError(f"{path} is being written by another process (it holds the file's lock)") from e
        yield handle


def append_rows(handle: IO[bytes], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows as JSON lines, then flush and fsync: after this returns they survive a crash."""
    handle.write(b"".join((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8") for row in rows))
    handle.flush()
    os.fsync(handle.fileno())


def merge_shards(
    out: Path, expected_ids: Sequence[str] | None = None, require_complete: bool = True, keep_shards: bool = False
) -> dict[str, int]:
    """Merge ``out``'s shard files (and any rows already in ``out``) into ``out``; return counts.

    Refuses when a shard file is missing, when shard files of different world sizes exist, when a
    shard is still being written, or (``require_complete`` with ``expected_ids``) when a shard lacks
    some of its ids.
    """
    found = find_shards(out)
    if not found:
        raise ResultFileError(f"no shard files {out}.shard-*-of-* to merge")
    if len(found) > 1:
        names = ", ".join(p.name for world in sorted(found) for p in found[world].values())
        raise ResultFileError(f"shard files of {out} come from different world sizes ({names}); remove the stale ones")
    world, files = next(iter(found.items()))
    missing = [rank for rank in range(world) if rank not in files]
    if missing:
        absent = ", ".join(shard_path(out, rank, world).name for rank in missing)
        raise ResultFileError(
            f"cannot merge into {out}: {len(missing)} of {world} shard files are missing ({absent}); "
            f"run those ranks (e.g. --shard {missing[0]}/{world}) first"
        )
    out_existed = out.exists()
    with locked(out):
        handles = _lock_all([files[rank] for rank in range(world)])
        try:
            rows = read_results(out)
            shard_rows = [read_results(files[rank]) for rank in range(world)]
            resolved = resolve_rows([*rows, *(row for part in shard_rows for row in part)])
            if expected_ids is not None and require_complete:
                _check_complete(out, resolved, expected_ids, world)
            _write_atomically(out, [resolved[key] for key in sorted(resolved)])
        except BaseException:
            if not out_existed and out.stat().st_size == 0:
                out.unlink()  # leave no empty result file behind a refused merge
            raise
        finally:
            for handle in handles:
                handle.close()
    if not keep_shards:
        for path in files.values():
            path.unlink()
    return {"rows": len(resolved), "shards": world, "errors": sum(1 for r in resolved.values() if r.get("error"))}


def _lock_all(paths: Sequence[Path]) -> list[IO[bytes]]:
    handles: list[IO[bytes]] = []
    try:
        for path in paths:
            handle = open(path, "ab")
            handles.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise ResultFileError(f"cannot merge: {path} is still being written by another process") from e
    except BaseException:
        for handle in handles:
            handle.close()
        raise
    return handles


def _check_complete(out: Path, resolved: Mapping[str, Any], expected_ids: Sequence[str], world: int) -> None:
    ordered = sorted(expected_ids)
    incomplete = []
    for rank in range(world):
        lacking = [key for key in assign(ordered, rank, world) if key not in resolved]
        if lacking:
            incomplete.append(f"{shard_path(out, rank, world).name} lacks {len(lacking)} ids (first: {lacking[0]})")
    if incomplete:
        raise ResultFileError(
            f"cannot merge into {out}: unfinished shards: {'; '.join(incomplete)}. Rerun those ranks with --shard."
        )


def _write_atomically(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.merging")
    with open(tmp, "wb") as handle:
        append_rows(handle, rows)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable before the shards are deleted
    finally:
        os.close(dir_fd)
