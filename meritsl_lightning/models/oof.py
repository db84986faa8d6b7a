"""Out-of-fold Stage I embeddings for the training split (beyond the paper: the stacking overfit).

Stage I memorises its training split, so Stages II and III would train on cleaner embeddings than they see at
test. ``meritsl oof`` trains K Stage I models, each on K-1 folds of the training conversations, and writes a
manifest (``oof.json``); a Stage II given it (``stage1_oof``) reads each training utterance's embedding from the
fold model that never saw its conversation, and validation/test embeddings from the model trained on all of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_modules.base import SplitData
from meritsl_lightning.checkpoints import CheckpointMismatch, StageCheckpoint, read_stage_checkpoint

OOF_FORMAT = 1


@dataclass
class OOFFold:
    fold: int
    checkpoint: StageCheckpoint
    held_out: frozenset[str]  # the dialogue ids this fold's model did not train on


@dataclass
class OOFUpstream:
    """A read ``oof.json``: the fold models of one Stage I checkpoint and the conversations each held out."""

    path: str
    split: str
    folds: list[OOFFold]

    @property
    def checkpoints(self) -> list[StageCheckpoint]:
        return [f.checkpoint for f in self.folds]

    def embeddings(self, module: Any, data: SplitData, device: torch.device) -> torch.Tensor:
        """[N, D] embeddings of ``data`` (the training split), each row from the fold model that held it out."""
        fold_of: dict[str, int] = {}
        for i, fold in enumerate(self.folds):
            for dialogue in fold.held_out:
                fold_of[dialogue] = i
        missing = sorted({u.dialogue_id for u in data.rows} - fold_of.keys())
        if missing:
            raise CheckpointMismatch(
                f"stage1_oof: {self.path} holds out no fold containing {data.split} conversation {missing[0]} "
                f"({len(missing)} such); it was written for another corpus, split or protocol"
            )
        rows_of: list[list[int]] = [[] for _ in self.folds]
        for r, u in enumerate(data.rows):
            rows_of[fold_of[u.dialogue_id]].append(r)
        out: torch.Tensor | None = None
        for fold, rows in zip(self.folds, rows_of, strict=True):
            if not rows:
                continue
            full = module.upstream_embeddings(fold.checkpoint, data, device)  # cached per fold model and split
            out = torch.zeros_like(full) if out is None else out
            out[rows] = full[rows]
        assert out is not None
        return out


def write_oof_manifest(
    path: str | Path, *, full_checkpoint: str, folds: list[tuple[str, list[str]]], num_folds: int, seed: int, split: str = "train"
) -> Path:
    """Write ``oof.json``: the full-data checkpoint and, per fold, its checkpoint and held-out dialogue ids."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "format": OOF_FORMAT,
        "num_folds": num_folds,
        "seed": seed,
        "split": split,
        "full_checkpoint": str(Path(full_checkpoint).resolve()),
        "folds": [{"fold": i, "checkpoint": str(Path(c).resolve()), "held_out": sorted(h)} for i, (c, h) in enumerate(folds)],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1))
    tmp.replace(path)
    return path


def read_oof(path: str, stage1: StageCheckpoint, label_names: list[str] | None, task: str | None) -> OOFUpstream:
    """Read and check ``oof.json`` against the Stage I checkpoint a Stage II consumes (``stage1_checkpoint``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"stage1_oof: {path} does not exist (write it with `meritsl oof`)")
    try:
        body = json.loads(p.read_text())
        folds = body["folds"]
        full = body["full_checkpoint"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointMismatch(f"stage1_oof: {path} is not an oof.json written by `meritsl oof` ({e})") from e
    if len(folds) < 2:
        raise CheckpointMismatch(f"stage1_oof: {path} has {len(folds)} fold(s); out-of-fold embeddings need K >= 2")
    if Path(full).resolve() != Path(stage1.path).resolve() and read_identity(full) != stage1.identity:
        raise CheckpointMismatch(
            f"stage1_oof: {path} was made for the Stage I checkpoint {full}, but stage1_checkpoint is {stage1.path}"
        )
    out = []
    seen: dict[str, int] = {}
    for entry in folds:
        ckpt = read_stage_checkpoint(
            entry["checkpoint"], role=f"stage1_oof fold {entry['fold']}", stages=("stage1",), modality=stage1.modality,
            label_names=label_names, task=task,
        )  # fmt: skip
        if ckpt.embedding_dim != stage1.embedding_dim:
            raise CheckpointMismatch(
                f"stage1_oof fold {entry['fold']}: {ckpt.path} gives {ckpt.embedding_dim}-d embeddings, "
                f"stage1_checkpoint {stage1.embedding_dim}-d"
            )
        for dialogue in entry["held_out"]:
            if dialogue in seen:
                raise CheckpointMismatch(f"stage1_oof: {path} holds out conversation {dialogue} in folds {seen[dialogue]} and {entry['fold']}")
            seen[dialogue] = entry["fold"]
        out.append(OOFFold(int(entry["fold"]), ckpt, frozenset(entry["held_out"])))
    return OOFUpstream(str(p.resolve()), body.get("split", "train"), out)


def read_identity(path: str) -> str | None:
    try:
        return read_stage_checkpoint(path, role="stage1_oof full_checkpoint", stages=("stage1",)).identity
    except (FileNotFoundError, CheckpointMismatch):
        return None
