"""Acoustic descriptors: the encoder's frame grid, normalisation and what they measure."""

from __future__ import annotations

import math

import pytest
import torch

from meritsl_lightning.encoders.acoustic_targets import (
    DESCRIPTORS,
    acoustic_descriptors,
    descriptor_dim,
    num_frames,
)
from meritsl_lightning.encoders.speech import _receptive_field

WAVLM_BASE_KERNELS, WAVLM_BASE_STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)


def _wavlm_base_frames(samples: int) -> int:
    for k, s in zip(WAVLM_BASE_KERNELS, WAVLM_BASE_STRIDES, strict=True):
        samples = (samples - k) // s + 1
    return samples


@pytest.mark.parametrize("samples", [400, 1234, 16000, 80000, 80321])
def test_frames_match_wavlm_base_front_end(samples: int) -> None:
    assert _receptive_field(WAVLM_BASE_KERNELS, WAVLM_BASE_STRIDES) == 400
    torch.manual_seed(0)
    out = acoustic_descriptors(torch.randn(samples) * 0.1, hop=320)
    assert out.shape == (num_frames(samples, 320), descriptor_dim()) == (_wavlm_base_frames(samples), 64)
    assert torch.isfinite(out).all()


def test_each_dimension_is_normalised_over_the_utterance() -> None:
    torch.manual_seed(0)
    out = acoustic_descriptors(torch.randn(32000) * 0.1, hop=320, normalisation="standard")
    torch.testing.assert_close(out.mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    varying = out.std(0, unbiased=False) > 0.5
    assert varying.sum() >= 60  # every descriptor that varies has unit variance


def test_descriptors_track_loudness_and_pitch() -> None:
    t = torch.arange(32000) / 16000
    quiet_then_loud = torch.cat([0.05 * torch.sin(2 * math.pi * 150 * t[:16000]), 0.5 * torch.sin(2 * math.pi * 150 * t[16000:])])
    raw = acoustic_descriptors(quiet_then_loud, hop=320, names=["log_energy"], normalise=False)[:, 0]
    assert raw[-20:].mean() - raw[:20].mean() == pytest.approx(2 * math.log(10), abs=0.2)
    low_then_high = torch.cat([torch.sin(2 * math.pi * 120 * t[:16000]), torch.sin(2 * math.pi * 240 * t[16000:])]) * 0.3
    f0 = acoustic_descriptors(low_then_high, hop=320, names=["log_f0"], normalise=False)[:, 0].exp()
    assert f0[5:30].median() == pytest.approx(120, rel=0.1)
    assert f0[-30:-5].median() == pytest.approx(240, rel=0.1)


def test_unknown_descriptor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown acoustic descriptor"):
        acoustic_descriptors(torch.zeros(16000), hop=320, names=["fbank", "jitter"])
    assert set(DESCRIPTORS) == {"fbank", "mfcc", "log_energy", "zcr", "log_f0", "centroid"}
