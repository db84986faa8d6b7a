"""Audio loading: any corpus file (WAV, FLAC, MP4/M4A) to a mono float32 waveform at one sample rate.

Cropping policy: when a clip is longer than ``max_seconds``, its **centre** ``max_seconds`` are kept.
Centre crops are deterministic (a cache key stays valid) and skip the lead-in and trailing silence
that segmented corpora leave at the edges of a clip.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from data_modules.errors import InvalidInput

DEFAULT_SAMPLE_RATE = 16000


class AudioError(InvalidInput):
    """An audio file is missing, unreadable, corrupt or empty; the message names the file."""


def load_audio(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_seconds: float | None = None,
) -> torch.Tensor:
    """Load ``path`` (optionally its ``[start, end)`` seconds) as a 1-D float32 mono tensor at ``sample_rate``."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if start is not None and start < 0:
        raise AudioError(f"{path}: negative start time {start}")
    if start is not None and end is not None and end <= start:
        raise AudioError(f"{path}: end {end} is not after start {start}")

    channels, native_rate = _read_segment(path, start, end)
    if channels.numel() == 0:
        span = f" between {start} s and {end} s" if start is not None or end is not None else ""
        raise AudioError(f"{path}: no audio samples{span}")
    wave = channels.mean(dim=0)
    if native_rate != sample_rate:
        wave = AF.resample(wave, native_rate, sample_rate)
    if max_seconds is not None:
        wave = crop_center(wave, int(round(max_seconds * sample_rate)))
    return wave.contiguous()


def crop_center(wave: torch.Tensor, max_samples: int) -> torch.Tensor:
    """Keep the centre ``max_samples`` of a 1-D waveform (the module's cropping policy)."""
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    excess = wave.shape[-1] - max_samples
    if excess <= 0:
        return wave
    offset = excess // 2
    return wave[..., offset : offset + max_samples]


def audio_duration(path: str | os.PathLike, start: float | None = None, end: float | None = None) -> float:
    """Cheap duration estimate in seconds (header metadata, no decoding); 0.0 when unknown."""
    if start is not None and end is not None:
        return max(end - start, 0.0)
    total = _header_duration(Path(path))
    return max(min(end if end is not None else total, total) - (start or 0.0), 0.0)


def _header_duration(path: Path) -> float:
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError):
        pass
    try:
        with av.open(str(path)) as container:
            return (container.duration or 0) / av.time_base
    except (av.error.FFmpegError, OSError):
        return 0.0


def _read_segment(path: Path, start: float | None, end: float | None) -> tuple[torch.Tensor, int]:
    """Return ``[channels, samples]`` float32 at the file's own rate, cropped to ``[start, end)``."""
    try:
        return _read_soundfile(path, start, end)
    except (sf.LibsndfileError, RuntimeError) as sf_error:
        # soundfile has no MP4/AAC support; FFmpeg (through PyAV) reads those.
        try:
            return _read_pyav(path, start, end)
        except (av.error.FFmpegError, OSError, AudioError) as av_error:
            raise AudioError(
                f"{path}: unreadable or corrupt audio (soundfile: {sf_error}; ffmpeg: {av_error})"
            ) from av_error


def _read_soundfile(path: Path, start: float | None, end: float | None) -> tuple[torch.Tensor, int]:
    info = sf.info(str(path))
    rate = info.samplerate
    first = int(round(start * rate)) if start is not None else 0
    stop = min(int(round(end * rate)), info.frames) if end is not None else info.frames
    if first >= stop:
        return torch.zeros(1, 0), rate
    data, _ = sf.read(str(path), start=first, stop=stop, dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


def _read_pyav(path: Path, start: float | None, end: float | None) -> tuple[torch.Tensor, int]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        # Only a sample-format conversion (to planar float); rate and layout are kept as decoded.
        converter = av.AudioResampler(format="fltp")
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray() for f in converter.resample(frame))
        chunks.extend(f.to_ndarray() for f in converter.resample(None))
    if not chunks or not rate:
        return torch.zeros(1, 0), rate or DEFAULT_SAMPLE_RATE
    data = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32, copy=False))
    first = int(round(start * rate)) if start is not None else 0
    stop = int(round(end * rate)) if end is not None else data.shape[1]
    return data[:, first:stop], rate


def pad_waves(waves: list[torch.Tensor], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D waveforms to one length (rounded up to ``multiple``) -> ``[B, N]`` and lengths ``[B]``."""
    lengths = torch.tensor([w.numel() for w in waves])
    longest = int(lengths.max()) if len(waves) else 0
    longest = -(-longest // multiple) * multiple
    out = torch.zeros(len(waves), longest)
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w.flatten()
    return out, lengths


WINDOW_SAMPLES = 400  # 25 ms at 16 kHz, WavLM's receptive field


def num_frames(num_samples: int, hop: int) -> int:
    """Frames of a clip on a speech encoder's frame grid (25 ms windows, ``hop`` samples apart; at least one)."""
    return max(1, (num_samples - WINDOW_SAMPLES) // hop + 1)
