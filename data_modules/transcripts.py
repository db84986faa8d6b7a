"""ASR text in place of the gold transcripts: a ``meritsl transcribe`` output applied to chosen splits."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from data_modules.manifest import ManifestError, Utterance

log = logging.getLogger(__name__)


class TranscriptsError(ManifestError):
    """A transcripts file that cannot stand in for a corpus' text; the message names the file and the id."""


@dataclass
class TranscriptsReport:
    """Which splits read ASR text, from which file and model, and which utterances fell back to gold."""

    path: str
    sha256: str
    splits: list[str]
    models: list[str]
    replaced: int = 0
    fallback_to_gold: dict[str, str] = field(default_factory=dict)  # utt_id -> why

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "splits": self.splits,
            "models": self.models,
            "replaced": self.replaced,
            "fallback_to_gold": len(self.fallback_to_gold),
            "fallback_ids": sorted(self.fallback_to_gold)[:50],
        }


def read_transcripts(path: str | Path) -> dict[str, dict[str, Any]]:
    """id -> row of a ``transcripts.jsonl`` (the last row of an id wins, as ``meritsl transcribe`` appends)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"transcripts: {path} does not exist (write it with `meritsl transcribe`)")
    rows: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TranscriptsError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict) or not isinstance(row.get("id"), str) or "text" not in row:
                raise TranscriptsError(f"{path}:{lineno}: not a `meritsl transcribe` row (needs string 'id' and 'text')")
            rows[row["id"]] = row
    return rows


def apply_transcripts(
    rows: list[Utterance], path: str | Path, splits: list[str], on_error: str, corpus: str
) -> tuple[list[Utterance], TranscriptsReport]:
    """Replace the text of the rows of ``splits`` by their ASR text.

    An utterance without a usable transcript (absent, or its transcription failed) is an error naming it; under
    ``on_error="skip"`` it keeps its gold text and is reported. A file sharing no id with the corpus is refused.
    """
    transcripts = read_transcripts(path)
    present = sorted({u.split for u in rows})
    unknown = [s for s in splits if s not in present]
    if unknown:
        raise TranscriptsError(f"transcripts_splits {unknown} are not splits of {corpus}; it has {present}")
    ids = {u.utt_id for u in rows}
    if not ids & transcripts.keys():
        raise TranscriptsError(
            f"transcripts: {path} shares no utterance id with the {corpus} corpus ({len(transcripts)} ids, e.g. "
            f"{next(iter(transcripts), '-')!r}; the corpus has e.g. {next(iter(sorted(ids)), '-')!r}): a transcripts "
            "file of another corpus? Transcribe this corpus' manifest (`meritsl prepare` then `meritsl transcribe`)"
        )
    report = TranscriptsReport(
        path=str(Path(path).resolve()),
        sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        splits=list(splits),
        models=sorted(Counter(str(r.get("model")) for r in transcripts.values() if r.get("model"))),
    )
    out = []
    for u in rows:
        if u.split not in splits:
            out.append(u)
            continue
        row = transcripts.get(u.utt_id)
        problem = None
        if row is None:
            problem = "no transcript"
        elif row.get("error") or not isinstance(row.get("text"), str):
            problem = f"its transcription failed ({row.get('error') or 'no text'})"
        if problem is None:
            out.append(replace(u, text=row["text"].strip()))
            report.replaced += 1
            continue
        if on_error != "skip":
            raise TranscriptsError(
                f"transcripts: {path} has {problem} for utterance {u.utt_id} ({corpus} {u.split}); transcribe it, "
                "or set on_error: skip to keep its gold text (reported)"
            )
        report.fallback_to_gold[u.utt_id] = problem
        out.append(u)
    if report.fallback_to_gold:
        log.warning(
            "transcripts %s: %d utterance(s) of %s kept their gold text (on_error=skip): %s",
            path, len(report.fallback_to_gold), splits, ", ".join(sorted(report.fallback_to_gold)[:10]),
        )
    return out, report
