"""Silver-labelled transcripts (``meritsl pseudo-label`` output) as a data module for text pre-training."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Literal

from data_modules.base import ERCDataModule
from data_modules.errors import InputNotFound, InvalidInput
from data_modules.manifest import CorpusProblem, Defect, ParseResult, Utterance

SILVER_LABELS = ["positive", "negative", "neutral"]
log = logging.getLogger(__name__)


class SilverDataModule(ERCDataModule):
    """``silver.jsonl`` rows ``{"id", "text", "label"}`` split at random into train/validation (paper: 80/20).

    Rows without a label (unparsable LLM replies), with an empty text, or with ``max_tokens``-exceeding
    text are left out and counted (logged, and listed by ``summary()``); a malformed line or a label outside
    ``labels`` fails naming the file and line unless ``on_error="skip"``.
    """

    corpus = "silver"
    protocols = {"silver": SILVER_LABELS}

    def __init__(
        self,
        path: str,
        labels: list[str] | None = None,
        validation_fraction: float = 0.2,
        split_seed: int = 0,
        max_chars: int = 2000,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_error: Literal["fail", "skip"] = "fail",
        bucket_multiplier: int = 50,
    ) -> None:
        super().__init__("silver", None, batch_size, eval_batch_size, num_workers, on_error, True, "validation", bucket_multiplier)
        if not 0.0 < validation_fraction < 1.0:
            raise InvalidInput(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.path = path
        self.labels = list(labels or SILVER_LABELS)
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        self.max_chars = max_chars
        self.skipped: dict[str, int] = {}

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def parse(self) -> ParseResult:
        path = Path(self.path)
        if not path.is_file():
            raise InputNotFound(f"silver labels not found: {path} (write it with `meritsl pseudo-label`)")
        rows, defects = [], []
        skipped = {"unlabelled": 0, "empty_text": 0, "too_long": 0}
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                problem = None
                try:
                    obj = json.loads(line)
                    item, text, label = str(obj["id"]), obj.get("text") or "", obj.get("label")
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    item, text, label, problem = f"line {lineno}", "", None, f"malformed silver row ({e})"
                if problem is None and label is not None and label not in self.labels:
                    problem = f"label {label!r} is not in {self.labels}"
                if problem is not None:
                    defect = Defect(item, str(path), problem, lineno)
                    if self.on_error == "fail":
                        raise CorpusProblem(defect)
                    defects.append(defect)
                    continue
                if label is None:
                    skipped["unlabelled"] += 1
                elif not text.strip():
                    skipped["empty_text"] += 1
                elif len(text) > self.max_chars:
                    skipped["too_long"] += 1
                else:
                    rows.append(Utterance("silver", "train", item, 0, item, text.strip(), label))
        self.skipped = skipped
        if any(skipped.values()):
            log.warning("%s: left out %s", path, ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in skipped.items() if n))
        return ParseResult(rows, defects, info={"skipped": skipped})

    def assign_splits(self, rows: list[Utterance]) -> list[Utterance]:
        order = sorted(range(len(rows)), key=lambda i: rows[i].utt_id)
        random.Random(self.split_seed).shuffle(order)
        held_out = set(order[: round(len(rows) * self.validation_fraction)])
        for i, row in enumerate(rows):
            row.split = "validation" if i in held_out else "train"
        return rows
