"""The models of a bundle, loaded frozen: Stage I per turn, Stage II and III over a conversation's turns.

Stage I runs once per turn (``embed_text`` / ``embed_speech``); ``predict`` runs the context and fusion
models over the per-turn embeddings of a whole conversation, or of the turns so far (streaming), exactly as
training fed them: each turn sees the other turns given, never a turn that is left out.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from meritsl_lightning.checkpoints import read_stage_checkpoint
from meritsl_lightning.inference.bundle import Bundle
from meritsl_lightning.models.base import STAGE1_COPIES, BaseStageModule

MODALITIES = ("text", "audio")


def _without_oof(path: Path, overrides: dict[str, Any]) -> str | io.BytesIO:
    """A Stage II trained on out-of-fold Stage I embeddings (``stage1_oof``) needs only the full Stage I model
    at analysis; the fold models are not in the bundle. Its recorded upstream identity covers them, so it is
    set aside here: ``meritsl export`` checked it, and every bundle file's sha256 was checked on opening."""
    blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not (blob.get("hyper_parameters") or {}).get("stage1_oof"):
        return str(path)
    overrides["stage1_oof"] = None
    blob["meritsl"] = {**blob["meritsl"], "upstream_identity": None}
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    buffer.seek(0)
    return buffer


def _load(bundle: Bundle, role: str, device: torch.device) -> BaseStageModule:
    """One checkpoint of the bundle, with the upstream and encoder paths it records remapped into the bundle."""
    path = bundle.checkpoint(role)
    meta = read_stage_checkpoint(str(path), role=f"bundle {role}", stages=(role.partition("_")[0],))
    overrides: dict[str, Any] = {"cache_dir": None}  # nothing is cached at analysis time
    source: str | io.BytesIO = str(path)
    if role == "stage3":
        for modality in ("text", "audio"):  # Stage III's stale-feature check follows Stage II down to Stage I
            if f"stage1_{modality}" in bundle.roles:
                stage1 = read_stage_checkpoint(str(bundle.checkpoint(f"stage1_{modality}")), role="bundle", stages=("stage1",))
                STAGE1_COPIES[stage1.identity] = stage1.path
        overrides.update(
            stage2_text_checkpoint=str(bundle.checkpoint("stage2_text")),
            stage2_audio_checkpoint=str(bundle.checkpoint("stage2_audio")),
        )
    elif role.startswith("stage2"):
        overrides["stage1_checkpoint"] = str(bundle.checkpoint(f"stage1_{meta.modality}"))
        source = _without_oof(path, overrides)
    elif role == "stage1_text":
        overrides["model_name_or_path"] = bundle.text_encoder_source()
    elif role == "stage1_audio":
        overrides["speech_encoder"] = bundle.speech_encoder_spec()
    module_name, _, cls_name = meta.class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    # building Stage I text from the bundle's base-model folder would warn that it lacks LLM pre-training;
    # the trained weights come from the checkpoint, and bundle.json records which encoder the run used
    quiet = logging.getLogger("meritsl_lightning.models.utterance")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model = cls.load_from_checkpoint(source, map_location="cpu", **overrides)
    finally:
        quiet.setLevel(level)
    model = model.eval().requires_grad_(False).to(device)
    if role == "stage1_audio":
        model.speech_encoder.to(device)  # frozen, held outside the module's state: .to() does not reach it
    return model


@dataclass
class TurnPrediction:
    """Per-turn outputs: the top model's label and probabilities, and each Stage II model's beside it."""

    label: str
    probs: dict[str, float]
    score: float | None  # regression protocols: the predicted score (its sign gives the label)
    by_modality: dict[str, dict[str, Any]]  # modality -> {"label", "probs" or "score"}


class Chain:
    """Frozen Stage I, II (and III) models of a bundle on one device."""

    def __init__(self, bundle: Bundle, device: str | torch.device = "cpu") -> None:
        self.bundle = bundle
        self.device = torch.device(device)
        self.label_names = bundle.label_names
        self.task = bundle.task
        roles = bundle.roles
        self.modalities = tuple(m for m in MODALITIES if f"stage2_{m}" in roles)
        self.stage1 = {m: _load(bundle, f"stage1_{m}", self.device) for m in self.modalities}
        self.stage2 = {m: _load(bundle, f"stage2_{m}", self.device) for m in self.modalities}
        self.fusion = _load(bundle, "stage3", self.device) if "stage3" in roles else None

    @property
    def speech_sample_rate(self) -> int:
        return int(self.stage1["audio"].speech_encoder.sample_rate)

    def _autocast(self) -> contextlib.AbstractContextManager:
        # as the training runs extracted frozen embeddings: bf16 on CUDA, full precision on CPU
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def embed_text(self, text: str) -> torch.Tensor:
        """Stage I text embedding of one turn, on CPU."""
        with self._autocast():
            return self.stage1["text"].embed_texts([text])[0].float().cpu()

    @torch.inference_mode()
    def embed_speech(self, wave: torch.Tensor) -> torch.Tensor:
        """Stage I speech embedding of one turn (a mono waveform at ``speech_sample_rate``), on CPU."""
        model = self.stage1["audio"]
        with self._autocast():
            features = model.speech_encoder([wave]).float().to(self.device)
            return model.head.embedding(features)[0].float().cpu()

    def _scores(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        logits = logits.float().cpu()
        if self.task == "regression":
            return [{"label": self.label_names[int(v[0] >= 0)], "score": float(v[0])} for v in logits]
        probs = logits.softmax(-1)
        return [
            {"label": self.label_names[int(p.argmax())], "probs": dict(zip(self.label_names, p.tolist(), strict=True))}
            for p in probs
        ]

    @torch.inference_mode()
    def predict(self, embeddings: dict[str, list[torch.Tensor]]) -> list[TurnPrediction]:
        """Predictions for every turn of one conversation from its per-turn Stage I embeddings (in order)."""
        count = len(embeddings[self.modalities[0]])
        if count == 0:
            return []
        mask = torch.ones(1, count, dtype=torch.bool, device=self.device)
        hidden, per_modality = {}, {}
        for m in self.modalities:
            stage2 = self.stage2[m]
            x = torch.stack(embeddings[m]).unsqueeze(0).to(self.device)
            hidden[m] = stage2.context(x, mask)
            per_modality[m] = self._scores(stage2.classifier(hidden[m])[0])
        if self.fusion is not None:
            top = self._scores(self.fusion.fusion(hidden["text"], hidden["audio"], mask)[0])
        else:
            top = per_modality[self.modalities[0]]
        return [
            TurnPrediction(
                label=t["label"],
                probs=t.get("probs", {}),
                score=t.get("score"),
                by_modality={m: per_modality[m][k] for m in self.modalities},
            )
            for k, t in enumerate(top)
        ]
