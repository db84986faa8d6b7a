"""``speech_encoder: care:<checkpoint>``: a pre-trained CARE checkpoint as a frozen speech encoder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from data_modules.audio import crop_center, pad_waves
from meritsl_lightning.checkpoints import CheckpointMismatch, load_care_model
from meritsl_lightning.encoders.cache import file_identity
from meritsl_lightning.encoders.speech import SPEECH_ENCODERS, SpeechEncoder


class CAREEncoder(SpeechEncoder):
    """A pre-trained CARE checkpoint as a frozen speech encoder: ``speech_encoder: care:<path/to/best.ckpt>``.

    Features are ``[B, 13, 1536]`` in base (``num_layers`` x ``feature_dim``); ``pooled_dim`` tells the
    Stage I head to also take the pooled semantic vector (the first ``width`` values of the last layer).
    ``num_layers`` / ``feature_dim`` given in ``encoder_options`` are checked against the checkpoint.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        max_seconds: float | None = 20.0,
        num_layers: int | None = None,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.checkpoint = str(Path(checkpoint).resolve())
        self.model = load_care_model(self.checkpoint)
        self.model.eval().requires_grad_(False)
        self.max_seconds = max_seconds
        self.num_layers = self.model.num_feature_layers
        self.feature_dim = 2 * self.model.width
        self.pooled_dim = self.model.width
        expected = {"num_layers": num_layers, "feature_dim": feature_dim}
        wrong = {k: v for k, v in expected.items() if v is not None and v != getattr(self, k)}
        if wrong:
            raise CheckpointMismatch(
                f"care:{checkpoint} gives {self.num_layers} layers x {self.feature_dim} features, but the config "
                f"expects {', '.join(f'{k}={v}' for k, v in wrong.items())}"
            )

    def identity(self) -> str:
        return f"care-v1:sha256={file_identity(self.checkpoint)}:max_seconds={self.max_seconds}:sr={self.sample_rate}"

    def forward(self, waveforms: list[torch.Tensor], pad_to_multiple_of: int = 1) -> torch.Tensor:
        waves = []
        for w in waveforms:
            w = w.detach().to("cpu", torch.float32).flatten()
            if self.max_seconds is not None:
                w = crop_center(w, int(round(self.max_seconds * self.sample_rate)))
            waves.append(w)
        batch, lengths = pad_waves(waves, pad_to_multiple_of)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            return self.model.layer_features(batch.to(device), lengths.to(device)).float().clone()


SPEECH_ENCODERS["care"] = CAREEncoder
