"""Which text and speech encoders a run used: checked when a stage is built, recorded in its checkpoint and in
``test_metrics.json``, so that a results table can never mix runs with and without LLM pre-training silently."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TEXT_ENCODER_ENV = "TEXT_ENCODER"
WITHOUT_PRETRAINING = "without LLM pre-training"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class TextEncoderError(ValueError):
    """The text encoder given (``TEXT_ENCODER`` / ``model_name_or_path``) is not one a stage can start from."""


def text_encoder_kind(source: str) -> str:
    """``checkpoint`` (a text pre-training ``.ckpt``), ``folder`` (a Hugging Face model folder) or ``hub`` (an id).

    Anything else stops with a message saying which and why; the checkpoint's stage is checked when it is read.
    """
    where = f"text encoder {source!r} (model_name_or_path, set by {TEXT_ENCODER_ENV} in the paper configs)"
    path = Path(source).expanduser()
    if str(source).endswith(".ckpt"):
        if not path.is_file():
            raise TextEncoderError(f"{where}: no such checkpoint file")
        return "checkpoint"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextEncoderError(f"{where}: the folder has no config.json, so it is not a Hugging Face model folder")
        return "folder"
    if path.exists():
        raise TextEncoderError(
            f"{where}: a file, but neither a text pre-training checkpoint (.ckpt) nor a Hugging Face model folder"
        )
    if not _HUB_ID.match(str(source)) or str(source).startswith((".", "~")):
        raise TextEncoderError(
            f"{where}: no such file or folder, and not a Hugging Face model id (name or owner/name)"
        )
    return "hub"


def text_encoder_record(source: str, base: str | None = None) -> dict[str, Any]:
    """What a run records about its text encoder: the id, or the path and sha256 of the folder or checkpoint.

    ``base`` is the architecture a pre-training checkpoint started from.
    """
    kind = text_encoder_kind(source)
    if kind == "hub":
        return {"source": "hub", "id": str(source), "llm_pretrained": False}
    from meritsl_lightning.encoders.cache import file_identity  # torch: only when a run records itself

    path = Path(source).expanduser().resolve()
    if kind == "folder":
        from meritsl_lightning.encoders.speech import _hash_model_folder

        return {"source": "folder", "path": str(path), "sha256": _hash_model_folder(path), "llm_pretrained": False}
    record = {"source": "checkpoint", "path": str(path), "sha256": file_identity(path), "llm_pretrained": True}
    if base is not None:
        record["base"] = base
    return record


def speech_encoder_record(spec: str, identity: str) -> dict[str, Any]:
    """What a run records about its speech encoder: the spec, the encoder's identity and, for CARE, path and hash."""
    record: dict[str, Any] = {"spec": spec, "identity": identity}
    if spec.startswith("care:"):
        from meritsl_lightning.encoders.cache import file_identity

        path = Path(spec.removeprefix("care:")).expanduser().resolve()
        record.update(path=str(path), sha256=file_identity(path))
    return record


def recipe(encoders: dict[str, Any]) -> str | None:
    """A one-line name of the text recipe the encoders amount to (None when the run has no text branch)."""
    text = encoders.get("text")
    if text is None:
        return None
    if not text:
        return "unknown text encoder (a checkpoint from before encoders were recorded)"
    if text.get("llm_pretrained"):
        return "MERITS-L (LLM-supervised pre-trained text encoder)"
    return WITHOUT_PRETRAINING


def run_record(model: Any, datamodule: Any) -> dict[str, Any]:
    """The provenance block of ``test_metrics.json``: encoders, the text recipe and which text each split read."""
    records = getattr(model, "encoder_records", None)
    encoders = records() if callable(records) else {}
    out: dict[str, Any] = {"encoders": encoders}
    name = recipe(encoders)
    if name is not None:
        out["recipe"] = name
    text_sources = getattr(datamodule, "text_sources", None)
    if callable(text_sources):
        out["text"] = text_sources()
    return out
