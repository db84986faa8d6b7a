"""CARE as its authors use it: their downstream extraction (random 5 s crop over 20 s, zero-pad under 0.5 s,
seeded here) and their per-utterance target normalisation (x - mean) / (std + 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meritsl_lightning.encoders.acoustic_targets import acoustic_descriptors
from meritsl_lightning.encoders.care import CAREModel
from meritsl_lightning.encoders.care_speech import CAREEncoder, authors_extraction_input
from meritsl_lightning.tiny_models import build_tiny_roberta, build_tiny_wavlm

SR = 16000


def _clip(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(int(seconds * SR), generator=torch.Generator().manual_seed(seed)) * 0.1


def _offset(crop: torch.Tensor, wave: torch.Tensor) -> int:
    hits = [s for s in range(wave.numel() - crop.numel() + 1) if torch.equal(wave[s : s + 8], crop[:8])]
    assert len(hits) == 1 and torch.equal(wave[hits[0] : hits[0] + crop.numel()], crop)
    return hits[0]


def test_short_clips_are_zero_padded_to_five_seconds_and_long_ones_cropped_to_a_seeded_five() -> None:
    short = _clip(0.3)
    padded = authors_extraction_input(short, SR)
    assert padded.numel() == 5 * SR
    assert torch.equal(padded[: short.numel()], short) and not padded[short.numel() :].any()

    long = _clip(25.0)
    crop = authors_extraction_input(long, SR)
    assert crop.numel() == 5 * SR
    offset = _offset(crop, long)
    assert 0 <= offset <= 20 * SR
    assert torch.equal(authors_extraction_input(long.clone(), SR), crop)  # the same clip, the same crop
    assert _offset(authors_extraction_input(long, SR, seed=1), long) != offset  # the seed moves it

    for seconds in (0.5, 10.0, 20.0):  # in between: the whole clip
        wave = _clip(seconds)
        assert torch.equal(authors_extraction_input(wave, SR), wave)


@pytest.fixture(scope="module")
def care_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("care-extraction")
    wavlm = build_tiny_wavlm(root / "wavlm", hidden_size=16, num_layers=4, stable_layer_norm=False)
    roberta = build_tiny_roberta(root / "roberta", ["a short text", "another short text"] * 4, hidden_size=16, num_layers=3)
    torch.manual_seed(0)
    care = CAREModel.from_pretrained(str(wavlm), str(roberta), shared_layers=2, acoustic_dim=8)
    meta = {
        "format": 1, "stage": "care_pretrain", "modality": "audio", "class_path": "meritsl_lightning.models.CAREPretrainModule",
        "label_names": [], "task": "pretraining", "embedding_dim": 32, "upstream_identity": None, "care": care.architecture(),
    }  # fmt: skip
    path = root / "care.ckpt"
    torch.save({"meritsl": meta, "state_dict": {f"care.{k}": v for k, v in care.state_dict().items()}}, path)
    return path


def test_care_encoder_feeds_the_authors_input_by_default(care_checkpoint: Path) -> None:
    authors, centre = CAREEncoder(care_checkpoint), CAREEncoder(care_checkpoint, extraction="center_crop", max_seconds=20.0)
    assert authors.max_seconds is None and authors.identity() != centre.identity()
    short, long = _clip(0.3, seed=1), _clip(25.0, seed=2)
    feats = authors([short, long])
    for wave, row in zip((short, long), feats, strict=True):
        prepared = authors_extraction_input(wave, SR)
        with torch.inference_mode():
            alone = authors.model.layer_features(prepared.unsqueeze(0), torch.tensor([prepared.numel()]))
        torch.testing.assert_close(row, alone[0], atol=1e-4, rtol=1e-4)
    # the earlier behaviour: the short clip unpadded (masked), the long one centre-cropped to 20 s
    old = centre([short])
    with torch.inference_mode():
        unpadded = centre.model.layer_features(short.unsqueeze(0), torch.tensor([short.numel()]))
    torch.testing.assert_close(old[0], unpadded[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(old[0], feats[0], atol=1e-3)
    with pytest.raises(ValueError, match="extraction must be 'authors' or 'center_crop'"):
        CAREEncoder(care_checkpoint, extraction="random")


def test_targets_are_normalised_as_the_authors_normalise_pase() -> None:
    wave = _clip(2.0)
    raw = acoustic_descriptors(wave, hop=320, normalise=False)
    authors = acoustic_descriptors(wave, hop=320)
    std = raw.std(0, unbiased=False)
    torch.testing.assert_close(authors, (raw - raw.mean(0)) / (std + 1), atol=1e-4, rtol=1e-4)
    standard = acoustic_descriptors(wave, hop=320, normalisation="standard")
    torch.testing.assert_close(standard, (raw - raw.mean(0)) / std.clamp_min(1e-5), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        acoustic_descriptors(wave, hop=320, normalisation="minmax")
