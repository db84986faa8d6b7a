"""Loading earlier-stage checkpoints, frozen, with checks that they are the stage, labels and width expected."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from meritsl_lightning.encoders.cache import file_identity


class CheckpointMismatch(ValueError):
    """A checkpoint given to a stage is not the stage, modality, label set or width it needs."""


@dataclass
class StageCheckpoint:
    """Metadata of a meritsl stage checkpoint, read without building the model."""

    path: str
    stage: str
    modality: str
    class_path: str
    label_names: list[str]
    embedding_dim: int
    upstream_identity: str | None

    @property
    def identity(self) -> str:
        """Content hash of the file (covers the upstream it was trained on, which the file records)."""
        return file_identity(self.path)

    def load_frozen(self) -> Any:
        """Build the checkpoint's own class from it, in eval mode with gradients off."""
        module_name, _, cls_name = self.class_path.rpartition(".")
        cls = getattr(importlib.import_module(module_name), cls_name)
        model = cls.load_from_checkpoint(self.path, map_location="cpu")
        model.eval()
        model.requires_grad_(False)
        return model


def read_stage_checkpoint(
    path: str,
    *,
    role: str,
    stages: tuple[str, ...],
    modality: str | None = None,
    label_names: list[str] | None = None,
    task: str | None = None,
) -> StageCheckpoint:
    """Check that ``path`` is a meritsl checkpoint of one of ``stages`` (and ``modality``, ``label_names``).

    ``role`` names the init argument in messages, e.g. ``stage1_checkpoint``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{role}: checkpoint file {path} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise CheckpointMismatch(f"{role}: {path} is not a readable PyTorch checkpoint ({e})") from e
    meta = ckpt.get("meritsl") if isinstance(ckpt, dict) else None
    if not meta:
        raise CheckpointMismatch(f"{role}: {path} is not a meritsl-lightning stage checkpoint (no 'meritsl' metadata)")
    found = f"a {meta['stage']} {meta['modality']} checkpoint ({meta['class_path']})"
    if meta["stage"] not in stages:
        raise CheckpointMismatch(f"{role}: {path} is {found}, but a {' or '.join(stages)} checkpoint is needed")
    if modality is not None and meta["modality"] != modality:
        raise CheckpointMismatch(f"{role}: {path} is {found}, but a {modality} checkpoint is needed")
    if label_names is not None and list(meta["label_names"]) != list(label_names):
        raise CheckpointMismatch(
            f"{role}: {path} was trained on labels {meta['label_names']}, but this model has labels {list(label_names)}"
        )
    if task is not None and meta.get("task", "classification") != task:
        raise CheckpointMismatch(f"{role}: {path} was trained for a {meta.get('task')} task, but this model is {task}")
    return StageCheckpoint(
        path=str(p.resolve()),
        stage=meta["stage"],
        modality=meta["modality"],
        class_path=meta["class_path"],
        label_names=list(meta["label_names"]),
        embedding_dim=int(meta["embedding_dim"]),
        upstream_identity=meta.get("upstream_identity"),
    )
