"""``speech_encoder: care:<checkpoint>``: a pre-trained CARE checkpoint as a frozen speech encoder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import torch
from torch.nn import functional as F

from data_modules.audio import crop_center, pad_waves
from meritsl_lightning.checkpoints import CheckpointMismatch, load_care_model
from meritsl_lightning.encoders.cache import file_identity
from meritsl_lightning.encoders.speech import SPEECH_ENCODERS, SpeechEncoder

CAREExtraction = Literal["authors", "center_crop"]
# the authors' downstream extraction (downstream/get_wavlm_feats.py in iiscleap/CARE)
LONG_CLIP_SECONDS = 20.0  # longer clips: a random crop of CROP_SECONDS
CROP_SECONDS = 5.0
SHORT_CLIP_SECONDS = 0.5  # shorter clips: zero-padded to CROP_SECONDS


def authors_extraction_input(wave: torch.Tensor, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """The waveform the authors' extraction feeds CARE: a random 5 s crop of a clip over 20 s, a clip under
    0.5 s zero-padded to 5 s (the zeros are input, not masked), anything between whole.

    The crop is seeded by ``seed`` and the clip's own samples, so a clip always gets the same crop whatever
    its batch or order (features stay cacheable and reproducible).
    """
    wave = wave.flatten()
    crop = int(round(CROP_SECONDS * sample_rate))
    if wave.numel() > LONG_CLIP_SECONDS * sample_rate:
        digest = hashlib.sha256(f"{seed}:{wave.numel()}:".encode() + wave[:sample_rate].numpy().tobytes()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        start = int(torch.randint(0, wave.numel() - crop + 1, (1,), generator=generator))
        return wave[start : start + crop]
    if wave.numel() < SHORT_CLIP_SECONDS * sample_rate:
        return F.pad(wave, (0, crop - wave.numel()))
    return wave


class CAREEncoder(SpeechEncoder):
    """A pre-trained CARE checkpoint as a frozen speech encoder: ``speech_encoder: care:<path/to/best.ckpt>``.

    Features are ``[B, 13, 1536]`` in base (``num_layers`` x ``feature_dim``); ``pooled_dim`` tells the
    Stage I head to also take the pooled semantic vector (the first ``width`` values of the last layer).
    ``num_layers`` / ``feature_dim`` given in ``encoder_options`` are checked against the checkpoint.

    ``extraction="authors"`` (the default) prepares each clip as the authors' downstream extraction does
    (``authors_extraction_input``, crops seeded by ``crop_seed``); ``"center_crop"`` is the earlier behaviour:
    the whole clip, centre-cropped to ``max_seconds``.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        max_seconds: float | None = 20.0,
        num_layers: int | None = None,
        feature_dim: int | None = None,
        extraction: CAREExtraction = "authors",
        crop_seed: int = 0,
    ) -> None:
        super().__init__()
        if extraction not in ("authors", "center_crop"):
            raise ValueError(f"care: extraction must be 'authors' or 'center_crop', got {extraction!r}")
        self.extraction = extraction
        self.crop_seed = crop_seed
        self.checkpoint = str(Path(checkpoint).resolve())
        self.model = load_care_model(self.checkpoint)
        self.model.eval().requires_grad_(False)
        # the authors' recipe sees the whole clip (it crops clips over 20 s itself)
        self.max_seconds = max_seconds if extraction == "center_crop" else None
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
        if self.extraction == "authors":
            return f"care-v1:sha256={file_identity(self.checkpoint)}:extraction=authors:seed={self.crop_seed}:sr={self.sample_rate}"
        return f"care-v1:sha256={file_identity(self.checkpoint)}:max_seconds={self.max_seconds}:sr={self.sample_rate}"

    def forward(self, waveforms: list[torch.Tensor], pad_to_multiple_of: int = 1) -> torch.Tensor:
        waves = []
        for w in waveforms:
            w = w.detach().to("cpu", torch.float32).flatten()
            if self.extraction == "authors":
                w = authors_extraction_input(w, self.sample_rate, self.crop_seed)
            elif self.max_seconds is not None:
                w = crop_center(w, int(round(self.max_seconds * self.sample_rate)))
            waves.append(w)
        batch, lengths = pad_waves(waves, pad_to_multiple_of)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            return self.model.layer_features(batch.to(device), lengths.to(device)).float().clone()


SPEECH_ENCODERS["care"] = CAREEncoder
