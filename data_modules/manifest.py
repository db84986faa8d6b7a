"""The manifest: one JSON line per utterance, produced by every corpus parser, read by every data module."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from data_modules.errors import InputNotFound, InvalidInput, UserError

SPLITS = ("train", "validation", "test")


class ManifestError(InvalidInput):
    """A manifest file or row is malformed; the message names the file and line."""


@dataclass
class Utterance:
    """One utterance of one conversation (a manifest row)."""

    dataset: str
    split: str
    dialogue_id: str
    utt_index: int  # 0-based position in the conversation, in time order
    utt_id: str
    text: str
    label: str | None  # protocol label (e.g. "hap" after merging "exc"); None when unlabelled
    label_raw: str | None = None  # the corpus' own code
    score: float | None = None  # a real-valued target (e.g. CMU-MOSI sentiment in [-3, 3]) for regression protocols
    speaker: str | None = None  # kept, never used by the models
    start: float | None = None  # the utterance's time span in its conversation (seconds)
    end: float | None = None
    audio_path: str | None = None  # this utterance's own audio file; absolute, or relative to the manifest
    audio_ok: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass
class Defect:
    """A problem found in a corpus item: reported in report.json, and skipped only under on_error=skip."""

    item: str
    file: str
    problem: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = {"item": self.item, "file": self.file, "problem": self.problem}
        if self.line is not None:
            d["line"] = self.line
        return d


@dataclass
class CorpusProblem(UserError):
    """A fatal corpus problem (raised under on_error=fail)."""

    defect: Defect

    def __str__(self) -> str:
        where = f"{self.defect.file}:{self.defect.line}" if self.defect.line is not None else self.defect.file
        return f"{where}: {self.defect.problem} (item {self.defect.item})"


class DefectLog:
    """Raises at the first defect under on_error='fail'; collects them under 'skip'."""

    def __init__(self, on_error: str) -> None:
        self.on_error = on_error
        self.items: list[Defect] = []

    def add(self, item: str, file: str | os.PathLike, problem: str, line: int | None = None) -> None:
        defect = Defect(item=item, file=str(file), problem=problem, line=line)
        if self.on_error == "fail":
            raise CorpusProblem(defect)
        self.items.append(defect)


@dataclass
class ParseResult:
    """What a corpus parser returns."""

    utterances: list[Utterance]
    defects: list[Defect] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # corpus-specific report.json entries (JSON-able)


_FIELD_NAMES = {f.name for f in fields(Utterance)}
_REQUIRED = {f.name for f in fields(Utterance) if f.default is f.default_factory}  # fields without default


def write_manifest(utterances: Iterable[Utterance], path: str | os.PathLike) -> None:
    """Write rows as JSON lines (atomically: a crash never leaves half a manifest)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for u in utterances:
            f.write(u.to_json() + "\n")
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Read a manifest; relative audio paths are resolved against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"manifest not found: {path}")
    rows: list[Utterance] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            unknown = set(obj) - _FIELD_NAMES
            missing = _REQUIRED - set(obj)
            if unknown or missing:
                raise ManifestError(
                    f"{path}:{lineno}: bad manifest row (missing fields {sorted(missing)}, unknown fields {sorted(unknown)})"
                )
            u = Utterance(**obj)
            if u.audio_path and not os.path.isabs(u.audio_path):
                u.audio_path = str((path.parent / u.audio_path).resolve())
            rows.append(u)
    return rows


def build_report(
    corpus: str, protocol: str, utterances: list[Utterance], defects: list[Defect], **extra: Any
) -> dict[str, Any]:
    """The report.json of `meritsl prepare`: per-split counts, label counts and defects."""
    splits: dict[str, dict[str, Any]] = {}
    by_split: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_split[u.split].append(u)
    for split in sorted(by_split, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s)):
        rows = by_split[split]
        labels = Counter(u.label for u in rows if u.label is not None)
        splits[split] = {
            "utterances": len(rows),
            "conversations": len({u.dialogue_id for u in rows}),
            "labels": dict(sorted(labels.items())),
        }
        unlabelled = sum(u.label is None and u.score is None for u in rows)
        if unlabelled:
            splits[split]["unlabelled"] = unlabelled  # counted in "utterances"; no label and no score
    report = {
        "corpus": corpus,
        "protocol": protocol,
        "splits": splits,
        "defects": [d.as_dict() for d in defects],
    }
    report.update(extra)
    return report


def fingerprint(utterances: Iterable[Utterance], with_audio_stats: bool = True) -> str:
    """A content hash of rows (ids, order, text, labels, audio file size/mtime) for cache keys."""
    h = hashlib.sha256()
    for u in utterances:
        h.update(
            json.dumps([u.utt_id, u.dialogue_id, u.utt_index, u.text, u.label, u.audio_path, u.start, u.end]).encode()
        )
        if with_audio_stats and u.audio_path:
            try:
                st = os.stat(u.audio_path)
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"missing")
    return h.hexdigest()
