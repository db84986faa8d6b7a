"""Per-turn results as JSON lines, CSV and a printed table."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from meritsl_lightning.inference.analyzer import TurnResult


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in values.items()}


def turn_record(r: TurnResult, modalities: Iterable[str]) -> dict[str, Any]:
    """One turns.jsonl row: place, transcript, the top model's prediction and each Stage II model's."""
    row: dict[str, Any] = {
        "conversation": r.conversation,
        "turn": r.turn,
        "id": r.turn_id,
        "start": None if r.start is None else round(r.start, 3),
        "end": None if r.end is None else round(r.end, 3),
        "transcript": r.transcript,
        "transcript_source": r.transcript_source,
        "audio_path": r.audio_path,
        "label": None,
        "probs": None,
    }
    p = r.prediction
    if p is not None:
        row["label"] = p.label
        row["probs"] = _rounded(p.probs) if p.score is None else None
        if p.score is not None:
            row["score"] = round(p.score, 6)
    for m in modalities:
        sub = p.by_modality[m] if p is not None else None
        row[f"stage2_{m}"] = None if sub is None else {
            "label": sub["label"], **({"probs": _rounded(sub["probs"])} if "probs" in sub else {"score": round(sub["score"], 6)})
        }
    row["error"] = r.error
    row["note"] = r.note
    return row


def csv_columns(label_names: list[str], modalities: Iterable[str], regression: bool) -> list[str]:
    values = ["score"] if regression else [f"p_{name}" for name in label_names]
    columns = ["conversation", "turn", "id", "start", "end", "transcript", "transcript_source", "label", *values]
    for m in modalities:
        columns += [f"stage2_{m}_label", *(f"stage2_{m}_{v}" for v in values)]
    return [*columns, "audio_path", "error", "note"]


def csv_row(record: dict[str, Any], modalities: Iterable[str]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if not isinstance(v, dict) or v is None}
    for name, p in (record.get("probs") or {}).items():
        row[f"p_{name}"] = p
    for m in modalities:
        sub = record.get(f"stage2_{m}") or {}
        row[f"stage2_{m}_label"] = sub.get("label")
        for name, p in (sub.get("probs") or {}).items():
            row[f"stage2_{m}_p_{name}"] = p
        if "score" in sub:
            row[f"stage2_{m}_score"] = sub["score"]
    return row


class ResultWriter:
    """Appends turns to ``OUT/turns.jsonl`` and ``OUT/turns.csv`` (flushed per turn, for streaming)."""

    def __init__(self, out: str | os.PathLike, label_names: list[str], modalities: tuple[str, ...], regression: bool) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.modalities = modalities
        self.records: list[dict[str, Any]] = []
        self._jsonl: IO[str] = open(self.out / "turns.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._csv_file: IO[str] = open(self.out / "turns.csv", "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv = csv.DictWriter(self._csv_file, csv_columns(label_names, modalities, regression), extrasaction="ignore")
        self._csv.writeheader()

    def write(self, result: TurnResult) -> dict[str, Any]:
        record = turn_record(result, self.modalities)
        self.records.append(record)
        self._jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._csv.writerow(csv_row(record, self.modalities))
        self._jsonl.flush()
        self._csv_file.flush()
        return record

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def table_header(modalities: Iterable[str]) -> str:
    names = " ".join(f"{'II ' + m:>8}" for m in modalities)
    return f"{'conversation':<20} {'turn':>4} {'start':>7} {'end':>7}  {'label':<9} {'p':>5} {names}  transcript"


def table_line(record: dict[str, Any], modalities: Iterable[str]) -> str:
    """One printed line per turn (``--`` where a turn was left out, with its problem)."""
    def t(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = f"{_clip(record['conversation'], 20):<20} {record['turn']:>4} {t(record['start']):>7} {t(record['end']):>7}  "
    if record["label"] is None:
        return head + f"{'--':<9} {'':>5} left out: {record['error']}"
    p = record["probs"][record["label"]] if record.get("probs") else record.get("score", 0.0)
    subs = " ".join(f"{(record.get(f'stage2_{m}') or {}).get('label', '-'):>8}" for m in modalities)
    return head + f"{record['label']:<9} {p:>5.2f} {subs}  {_clip(record['transcript'], 60)}"
