"""IEMOCAP (``IEMOCAP_full_release``) as a data module: 4-class or 6-class, Session 5 test."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Literal

from data_modules.base import ERCDataModule
from data_modules.errors import InvalidInput
from data_modules.iemocap_parser import PROTOCOLS, parse_iemocap
from data_modules.manifest import ParseResult, Utterance


class IEMOCAPDataModule(ERCDataModule):
    """IEMOCAP from the release folder (or a manifest written by ``meritsl prepare iemocap``).

    Splits: Session 5 is the test set. ``validation="session1"`` (the default, as the MERITS-L
    reimplementation reads the paper) trains on Sessions 2-4; ``validation="dialogues"`` trains on Sessions
    1-4 and holds out ``validation_fraction`` of their dialogues (chosen with ``split_seed``), the ERC
    convention.

    Transcription turns without an EmoEvaluation line (``unlabelled_turns`` in ``report.json``) are left
    out by default; ``unlabelled_context=True`` keeps them in the conversations as context for Stages II
    and III (never in the loss or the metrics).
    """

    corpus = "iemocap"
    protocols = {name: list(spec.labels) for name, spec in PROTOCOLS.items()}

    def __init__(
        self,
        root: str | None = None,
        protocol: Literal["iemocap4", "iemocap6"] = "iemocap4",
        validation: Literal["session1", "dialogues"] = "session1",
        validation_fraction: float = 0.1,
        split_seed: int = 0,
        manifest: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_error: Literal["fail", "skip"] = "fail",
        text_only: bool = False,
        predict_split: str = "test",
        bucket_multiplier: int = 50,
        transcripts: str | None = None,
        transcripts_splits: list[str] | None = None,
        unlabelled_context: bool = False,
    ) -> None:
        super().__init__(
            protocol, manifest, batch_size, eval_batch_size, num_workers, on_error, text_only, predict_split, bucket_multiplier,
            transcripts=transcripts,
            transcripts_splits=transcripts_splits,
        )
        if root is None and manifest is None:
            raise InvalidInput("IEMOCAPDataModule needs root (the IEMOCAP_full_release folder) or manifest")
        if validation not in ("session1", "dialogues"):
            raise InvalidInput(f"validation must be 'session1' or 'dialogues', got {validation!r}")
        if not 0.0 < validation_fraction < 1.0:
            raise InvalidInput(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.root = root
        self.validation = validation
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        self.unlabelled_context = unlabelled_context

    def parse(self) -> ParseResult:
        assert self.root is not None
        return parse_iemocap(self.root, protocol=self.protocol, on_error=self.on_error, text_only=self.text_only)

    def assign_splits(self, rows: list[Utterance]) -> list[Utterance]:
        if not self.unlabelled_context and any(u.label is None for u in rows):
            rows = _renumbered([u for u in rows if u.label is not None])
        if self.validation == "session1":
            return rows
        pool = sorted({u.dialogue_id for u in rows if u.split in ("train", "validation")})
        held_out = set(random.Random(self.split_seed).sample(pool, max(1, round(len(pool) * self.validation_fraction))))
        return [
            replace(u, split="validation" if u.dialogue_id in held_out else "train") if u.split != "test" else u
            for u in rows
        ]


def _renumbered(rows: list[Utterance]) -> list[Utterance]:
    """Rows with ``utt_index`` 0..n-1 again within each dialogue (in their time order)."""
    by_dialogue: dict[str, list[Utterance]] = {}
    for u in sorted(rows, key=lambda u: (u.dialogue_id, u.utt_index)):
        by_dialogue.setdefault(u.dialogue_id, []).append(u)
    return [replace(u, utt_index=i) for turns in by_dialogue.values() for i, u in enumerate(turns)]
