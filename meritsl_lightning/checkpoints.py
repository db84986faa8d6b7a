"""Reading meritsl checkpoints: stage metadata checks, frozen earlier stages, and the encoders that pre-training
checkpoints hold (a text pre-training model, a CARE network). Models and encoders both import from here."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from meritsl_lightning.encoders.cache import file_identity
from meritsl_lightning.encoders.care import CAREModel
from meritsl_lightning.encoders.text import TextEncoder, TextPooling
from meritsl_lightning.errors import InputNotFound, InvalidInput

TEXT_PRETRAIN_STAGE = "text_pretrain"
CARE_STAGE = "care_pretrain"


class CheckpointMismatch(InvalidInput):
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
    encoders: dict[str, Any] = field(default_factory=dict)  # the text/speech encoders it was trained on

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
        raise InputNotFound(f"{role}: checkpoint file {path} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        detail = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)[:200]
        raise CheckpointMismatch(f"{role}: {path} is not a readable PyTorch checkpoint ({detail})") from e
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
        encoders=dict(meta.get("encoders") or {}),
    )


def pretrained_text_encoder(
    checkpoint: str, pooling: TextPooling, max_length: int, strict_pooling: bool = True
) -> TextEncoder:
    """The encoder of a ``TextPretrainModule`` checkpoint (its base architecture rebuilt, its weights loaded).

    ``strict_pooling=False`` allows a pooling other than the one it was trained with (its dense layer is
    then not used), e.g. mean-pooled states as a CARE teacher.
    """
    meta = read_stage_checkpoint(checkpoint, role="model_name_or_path", stages=(TEXT_PRETRAIN_STAGE,))
    blob = torch.load(meta.path, map_location="cpu", weights_only=True)
    hparams = blob["hyper_parameters"]
    if strict_pooling and hparams["pooling"] != pooling:
        raise CheckpointMismatch(
            f"model_name_or_path: {checkpoint} was pre-trained with pooling {hparams['pooling']!r}, not {pooling!r}"
        )
    encoder = TextEncoder(hparams["model_name_or_path"], pooling, max_length)
    state = {k.removeprefix("encoder."): v for k, v in blob["state_dict"].items() if k.startswith("encoder.")}
    if encoder.dense is None:
        state = {k: v for k, v in state.items() if not k.startswith("dense.")}
    encoder.load_state_dict(state)
    return encoder


def pretrained_text_encoder_of(checkpoint: str, pooling: str | None, max_length: int) -> TextEncoder:
    """The encoder of a text pre-training checkpoint, with its own pooling unless ``pooling`` is given."""
    if pooling is None:
        blob = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        pooling = blob.get("hyper_parameters", {}).get("pooling", "cls_dense_tanh")
    return pretrained_text_encoder(checkpoint, pooling, max_length, strict_pooling=False)


def load_care_model(path: str | os.PathLike) -> CAREModel:
    """Rebuild the CARE network a ``CAREPretrainModule`` checkpoint records and load its weights."""
    meta = read_stage_checkpoint(str(path), role="care", stages=(CARE_STAGE,))
    blob = torch.load(meta.path, map_location="cpu", weights_only=True, mmap=True)
    architecture = blob["meritsl"].get("care")
    if not architecture:
        raise CheckpointMismatch(f"care: {path} records no CARE architecture")
    model = CAREModel.from_configs(**architecture)
    state = {k.removeprefix("care."): v for k, v in blob["state_dict"].items() if k.startswith("care.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise CheckpointMismatch(
            f"care: the weights in {path} do not fit the CARE architecture it records "
            f"({model.num_feature_layers} layers, width {model.width}): {detail}"
        ) from e
    return model.eval()
