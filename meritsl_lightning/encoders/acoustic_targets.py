"""Frame-wise low-level acoustic descriptors: the regression targets of CARE's acoustic branch.

The authors regress PASE+ worker outputs, which no maintained package computes. This module computes the
subset of PASE+'s regression workers that torchaudio provides, on the encoder's own frame grid
(25 ms windows, hop = the encoder's total conv stride, 20 ms for WavLM; frame ``k`` covers samples
``[k * hop, k * hop + 400)``, the same frames as WavLM's convolutional front-end):

================  =====  ===========================================================================
descriptor        dims   what it captures (PASE+ worker it stands in for)
================  =====  ===========================================================================
``fbank``           40   Kaldi log-mel filterbank energies: spectral envelope (FBANK)
``mfcc``            20   Kaldi MFCCs over 40 mel bins: decorrelated envelope, timbre (MFCC)
``log_energy``       1   raw frame log energy: loudness (prosody: energy)
``zcr``              1   zero-crossing rate: voicing and noisiness (prosody: zcr)
``log_f0``           1   log pitch from torchaudio's NCCF detector: intonation (prosody: log F0)
``centroid``         1   spectral centroid, log Hz: brightness, vocal effort
================  =====  ===========================================================================

64 dimensions in all. As the authors normalise their PASE+ targets (``normalisation="authors"``, the
default), each dimension is normalised over the utterance as ``(x - mean) / (std + 1)``; ``"standard"``
(``(x - mean) / std``, the earlier behaviour) is kept as an option.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from torch.nn import functional as F

from data_modules.audio import WINDOW_SAMPLES, num_frames

DESCRIPTORS: dict[str, int] = {"fbank": 40, "mfcc": 20, "log_energy": 1, "zcr": 1, "log_f0": 1, "centroid": 1}
_PITCH_MIN_FRAMES = 48
Normalisation = Literal["authors", "standard"]
NORMALISATIONS = ("authors", "standard")


def descriptor_dim(names: tuple[str, ...] | list[str] = tuple(DESCRIPTORS)) -> int:
    unknown = [n for n in names if n not in DESCRIPTORS]
    if unknown or not names:
        raise ValueError(f"unknown acoustic descriptor(s) {unknown}; choose from {list(DESCRIPTORS)}")
    return sum(DESCRIPTORS[n] for n in names)


def acoustic_descriptors(
    wave: torch.Tensor,
    hop: int,
    sample_rate: int = 16000,
    names: tuple[str, ...] | list[str] = tuple(DESCRIPTORS),
    normalise: bool = True,
    normalisation: Normalisation = "authors",
) -> torch.Tensor:
    """``[T, D]`` float32 descriptors of a 1-D waveform; ``T = num_frames(len(wave), hop)``.

    ``normalise``: per utterance and dimension, ``(x - mean) / (std + 1)`` (``normalisation="authors"``, as the
    CARE code normalises PASE+) or ``(x - mean) / std`` (``"standard"``).
    """
    descriptor_dim(names)
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    wave = wave.detach().to(torch.float32).flatten()
    if wave.numel() < WINDOW_SAMPLES:
        wave = F.pad(wave, (0, WINDOW_SAMPLES - wave.numel()))
    frames = num_frames(wave.numel(), hop)
    shift_ms = 1000.0 * hop / sample_rate
    window_ms = 1000.0 * WINDOW_SAMPLES / sample_rate
    scaled = wave.unsqueeze(0) * 32768.0  # Kaldi conventions expect 16-bit sample values
    kaldi_opts = dict(frame_length=window_ms, frame_shift=shift_ms, sample_frequency=sample_rate, dither=0.0)
    parts: list[torch.Tensor] = []
    for name in names:
        if name == "fbank":
            parts.append(kaldi.fbank(scaled, num_mel_bins=40, **kaldi_opts))
        elif name == "mfcc":
            parts.append(kaldi.mfcc(scaled, num_ceps=20, num_mel_bins=40, **kaldi_opts))
        elif name == "log_energy":
            parts.append(kaldi.fbank(scaled, num_mel_bins=23, use_energy=True, **kaldi_opts)[:, :1])
        elif name == "zcr":
            framed = wave.unfold(0, WINDOW_SAMPLES, hop)[:frames]
            crossings = (torch.sign(framed[:, 1:]) != torch.sign(framed[:, :-1])).float().mean(1)
            parts.append(crossings.unsqueeze(1))
        elif name == "log_f0":
            # the detector median-smooths over 30 of its frames: give short clips that much (silent) signal
            padded = F.pad(wave, (0, max(0, _PITCH_MIN_FRAMES * hop - wave.numel())))
            f0 = AF.detect_pitch_frequency(padded.unsqueeze(0), sample_rate, frame_time=hop / sample_rate)[0]
            track = _resample_frames(torch.log(f0.clamp_min(1.0)), num_frames(padded.numel(), hop))
            parts.append(track[:frames].unsqueeze(1))
        elif name == "centroid":
            centroid = AF.spectral_centroid(
                wave.unsqueeze(0), sample_rate, pad=0, window=torch.hann_window(WINDOW_SAMPLES),
                n_fft=512, hop_length=hop, win_length=WINDOW_SAMPLES,
            )[0]  # fmt: skip
            parts.append(_resample_frames(torch.log(centroid.nan_to_num(0.0).clamp_min(1.0)), frames).unsqueeze(1))
    out = torch.cat([_fit_frames(p, frames) for p in parts], dim=1)
    if normalise:
        std = out.std(0, unbiased=False)
        out = (out - out.mean(0)) / (std + 1.0 if normalisation == "authors" else std.clamp_min(1e-5))
    return out.contiguous()


def _fit_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Trim or edge-pad ``[T', D]`` to ``frames`` rows (the detectors' framings differ by a frame or two)."""
    if x.shape[0] >= frames:
        return x[:frames]
    return torch.cat([x, x[-1:].expand(frames - x.shape[0], -1)])


def _resample_frames(track: torch.Tensor, frames: int) -> torch.Tensor:
    """A 1-D track on another frame grid, nearest-neighbour resampled to ``frames`` values."""
    if track.numel() == frames:
        return track
    return F.interpolate(track.view(1, 1, -1), size=frames, mode="nearest").view(-1)
