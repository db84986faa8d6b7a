"""Callbacks added to every run by the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter


class JsonlPredictionWriter(BasePredictionWriter):
    """Writes ``predict`` outputs as one JSON line per utterance (``utt_id``, ``label``, ``probs``).

    ``output`` defaults to ``<run dir>/predictions.jsonl``; under DDP each rank writes ``.rank<N>`` parts.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        path = Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.jsonl"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.name}.rank{trainer.global_rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for batch in predictions:
                for row in batch:
                    f.write(json.dumps(row) + "\n")
