"""Speech encoders: the filterbank and Hugging Face encoders, the builder and batched extraction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from data_modules.audio import AudioError, load_audio  # noqa: E402
from meritsl_lightning.encoders.speech import (  # noqa: E402
    FilterbankEncoder,
    HFSpeechEncoder,
    build_speech_encoder,
    extract_features,
)
from meritsl_lightning.tiny_models import build_tiny_wavlm  # noqa: E402


def voiced(seconds: float, amplitude: float = 0.3, f0: float = 150.0, seed: int = 0) -> torch.Tensor:
    """A buzzy harmonic tone with a little noise: enough spectral shape for the encoders to differ."""
    t = torch.arange(int(seconds * 16000)) / 16000
    wave = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in range(1, 6))
    noise = torch.randn(t.shape[0], generator=torch.Generator().manual_seed(seed))
    return (amplitude * (wave / 2 + 0.05 * noise)).float()


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wavlm(tmp_path_factory.mktemp("models") / "wavlm")


@pytest.fixture(scope="module")
def wavlm(wavlm_dir: Path) -> HFSpeechEncoder:
    return HFSpeechEncoder(wavlm_dir)


# ---- filterbank --------------------------------------------------------------------------------


def test_filterbank_shapes_and_determinism() -> None:
    enc = FilterbankEncoder(n_mels=40)
    assert (enc.num_layers, enc.feature_dim) == (1, 160)
    waves = [voiced(1.0), voiced(0.3, seed=1), torch.zeros(100)]  # the last is shorter than one frame
    a = enc(waves)
    assert a.shape == (3, 1, 160) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, FilterbankEncoder(n_mels=40)(waves))
    assert FilterbankEncoder(n_mels=24, deltas=False)(waves).shape == (3, 1, 48)


def test_filterbank_keeps_loudness() -> None:
    enc = FilterbankEncoder(n_mels=40)
    quiet, loud = enc([voiced(1.0, 0.05), voiced(1.0, 0.4)])[:, 0, :40]
    assert (loud > quiet).all()
    assert (loud - quiet).mean().item() == pytest.approx(2 * np.log(8), abs=0.2)  # power ratio 64


def test_filterbank_identity_tracks_settings() -> None:
    assert FilterbankEncoder().identity() == FilterbankEncoder().identity()
    assert FilterbankEncoder(n_mels=40).identity() != FilterbankEncoder(n_mels=80).identity()
    assert FilterbankEncoder(deltas=True).identity() != FilterbankEncoder(deltas=False).identity()


# ---- Hugging Face encoders ---------------------------------------------------------------------


def test_hf_shapes_and_frozen(wavlm: HFSpeechEncoder) -> None:
    assert (wavlm.num_layers, wavlm.feature_dim, wavlm.sample_rate) == (3, 32, 16000)
    feats = wavlm([voiced(1.0), voiced(0.5), torch.zeros(50)])
    assert feats.shape == (3, 3, 32) and torch.isfinite(feats).all()
    assert not any(p.requires_grad for p in wavlm.parameters())
    wavlm.train()
    assert not wavlm.model.training
    # The output is an ordinary tensor: a trainable head can take gradients through it.
    head = torch.nn.Linear(32, 2)
    head(feats[:, -1]).sum().backward()
    # d(sum of outputs)/d(weight) is the batch sum of the inputs for each output row; the encoder gets none
    torch.testing.assert_close(head.weight.grad, feats[:, -1].sum(0).expand(2, -1))
    assert head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in wavlm.parameters())


def test_hf_padding_invariance(wavlm: HFSpeechEncoder) -> None:
    short, long = voiced(0.7, seed=2), voiced(2.3, seed=3)
    alone = wavlm([short])[0]
    batched = wavlm([short, long])[0]
    rounded = wavlm([short, long], pad_to_multiple_of=8000)[0]
    assert torch.allclose(alone, batched, atol=1e-4)
    assert torch.allclose(alone, rounded, atol=1e-4)
    assert not torch.allclose(alone, wavlm([long])[0], atol=1e-2)


def test_hf_layer_selection_and_crop(wavlm_dir: Path, wavlm: HFSpeechEncoder) -> None:
    last = HFSpeechEncoder(wavlm_dir, layers=[-1], max_seconds=1.0)
    assert last.num_layers == 1 and last.layers == [2]
    wave = voiced(3.0, seed=4)
    assert torch.allclose(last([wave])[0, 0], wavlm([wave[16000:32000]])[0, 2], atol=1e-4)
    with pytest.raises(ValueError, match="cannot select layers"):
        HFSpeechEncoder(wavlm_dir, layers=[7])


def test_hf_identity_tracks_weights_and_options(
    tmp_path: Path, wavlm_dir: Path, wavlm: HFSpeechEncoder
) -> None:
    assert wavlm.identity() == HFSpeechEncoder(wavlm_dir).identity()
    other = build_tiny_wavlm(tmp_path / "other", seed=1)
    assert HFSpeechEncoder(other).identity() != wavlm.identity()
    assert HFSpeechEncoder(wavlm_dir, layers=[0, 1]).identity() != wavlm.identity()


def test_builder(wavlm_dir: Path) -> None:
    assert isinstance(build_speech_encoder("filterbank", n_mels=20), FilterbankEncoder)
    assert isinstance(build_speech_encoder(str(wavlm_dir)), HFSpeechEncoder)
    assert build_speech_encoder(f"hf:{wavlm_dir}", layers=[1]).num_layers == 1
    with pytest.raises(OSError, match="cannot load speech encoder"):
        build_speech_encoder(str(wavlm_dir.parent / "missing-model"))


# ---- extract_features --------------------------------------------------------------------------


@dataclass
class Row:
    utt_id: str
    audio_path: str | None
    start: float | None = None
    end: float | None = None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list:
    folder = tmp_path_factory.mktemp("audio")
    items: list = []
    for i, seconds in enumerate([1.2, 0.4, 2.5, 0.8, 1.9, 0.6]):
        path = folder / f"utt{i}.wav"
        sf.write(path, voiced(seconds, seed=10 + i).numpy(), 16000)
        items.append(Row(f"utt{i}", str(path)) if i % 2 else (str(path), None, None))
    dialogue = folder / "dialogue.wav"
    sf.write(dialogue, voiced(4.0, seed=99).numpy(), 16000)
    items += [(str(dialogue), 0.5, 1.7), Row("seg", str(dialogue), 2.0, 2.6)]
    return items


def reference(encoder, items) -> torch.Tensor:
    rows = []
    for item in items:
        path, start, end = item if isinstance(item, tuple) else (item.audio_path, item.start, item.end)
        rows.append(encoder([load_audio(path, start, end, max_seconds=encoder.max_seconds)])[0])
    return torch.stack(rows)


@pytest.mark.parametrize("kind", ["filterbank", "wavlm"])
def test_extract_features_keeps_order_and_matches_single_items(kind: str, corpus: list, wavlm) -> None:
    encoder = FilterbankEncoder() if kind == "filterbank" else wavlm
    feats = extract_features(encoder, corpus, max_batch_seconds=3.0, progress=False)
    assert feats.shape == (len(corpus), encoder.num_layers, encoder.feature_dim)
    assert torch.allclose(feats, reference(encoder, corpus), atol=1e-4)


def test_extract_features_empty_and_failing(corpus: list, tmp_path: Path) -> None:
    enc = FilterbankEncoder()
    assert extract_features(enc, [], progress=False).shape == (0, 1, 160)
    broken = [*corpus, Row("dia3_utt7", str(tmp_path / "gone.wav"))]
    with pytest.raises(AudioError, match="dia3_utt7.*gone.wav.*not found"):
        extract_features(enc, broken, progress=False)
    with pytest.raises(AudioError, match="no audio path"):
        extract_features(enc, [Row("silent", None)], progress=False)
