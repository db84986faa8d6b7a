"""One long recording -> turns, in bounded memory.

The file is read in blocks at its own rate (soundfile, else PyAV for MP4/M4A and the like), never whole.
A window of at most ``window_seconds`` is downmixed, resampled to 16 kHz with torchaudio and run through
faster-whisper's voice activity detector (Silero); every speech region is a turn. A region that may run past
the window's end is not cut: the window ends before it and the next window starts there. Each turn's span is
decoded from the window it lies in, so memory stays at one window whatever the recording's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from data_modules.audio import AudioError

SAMPLE_RATE = 16000


@dataclass
class Segment:
    """One speech region: its time span in the recording (seconds) and its 16 kHz mono samples."""

    start: float
    end: float
    wave: torch.Tensor


def native_blocks(path: Path, block_seconds: float) -> Iterator[tuple[np.ndarray, int]]:
    """``([channels, samples] float32, rate)`` blocks of a file at its own rate, read progressively."""
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError):
        yield from _pyav_blocks(path, block_seconds)
        return
    with handle:
        size = max(1, int(handle.samplerate * block_seconds))
        try:
            for block in handle.blocks(blocksize=size, dtype="float32", always_2d=True):
                yield np.ascontiguousarray(block.T), handle.samplerate
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{path}: unreadable audio after {handle.tell() / handle.samplerate:.1f} s ({e})") from e


def _pyav_blocks(path: Path, block_seconds: float) -> Iterator[tuple[np.ndarray, int]]:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise AudioError(f"{path}: unreadable or corrupt audio ({e})") from e
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate
        converter = av.AudioResampler(format="fltp")  # sample format only: rate and channels as decoded
        pending: list[np.ndarray] = []
        count, size = 0, max(1, int(rate * block_seconds))
        try:
            for frame in container.decode(stream):
                for out in converter.resample(frame):
                    pending.append(out.to_ndarray())
                    count += pending[-1].shape[1]
                    if count >= size:
                        yield np.concatenate(pending, axis=1), rate
                        pending, count = [], 0
        except av.error.FFmpegError as e:
            raise AudioError(f"{path}: corrupt audio ({e})") from e
        pending += [out.to_ndarray() for out in converter.resample(None)]
        if pending:
            yield np.concatenate(pending, axis=1), rate


class RecordingSegmenter:
    """Splits a long recording into speech-region turns with faster-whisper's VAD, one window at a time."""

    def __init__(
        self,
        window_seconds: float = 120.0,
        min_silence_ms: int = 500,
        speech_pad_ms: int = 200,
        max_turn_seconds: float = 30.0,
        min_turn_ms: int = 250,
        block_seconds: float = 5.0,
    ) -> None:
        guard = (min_silence_ms + speech_pad_ms) / 1000
        if window_seconds < max_turn_seconds + guard + 1.0:
            raise ValueError(
                f"--window-seconds {window_seconds} must exceed the longest turn ({max_turn_seconds} s) plus the "
                f"silence that ends a turn ({guard:.1f} s) by at least a second"
            )
        from faster_whisper.vad import VadOptions

        self.window_seconds = window_seconds
        self.block_seconds = block_seconds
        self.guard_samples = int(guard * SAMPLE_RATE)
        self.vad = VadOptions(
            min_silence_duration_ms=min_silence_ms,
            speech_pad_ms=speech_pad_ms,
            max_speech_duration_s=max_turn_seconds,
            min_speech_duration_ms=min_turn_ms,
        )
        self.max_buffered_seconds = 0.0  # the most audio held at once (bounded by window + block)

    def segments(self, path: str | os.PathLike) -> Iterator[Segment]:
        """The speech regions of ``path`` in time order."""
        path = Path(path)
        if not path.is_file():
            raise AudioError(f"{path}: audio file not found")
        buffer: np.ndarray | None = None
        origin = 0  # native sample index of the buffer's first sample
        rate = 0
        for block, rate in native_blocks(path, self.block_seconds):
            buffer = block if buffer is None else np.concatenate([buffer, block], axis=1)
            self.max_buffered_seconds = max(self.max_buffered_seconds, buffer.shape[1] / rate)
            while buffer.shape[1] >= self.window_seconds * rate:
                done, found = self._split(buffer, rate, origin, final=False)
                yield from found
                buffer, origin = buffer[:, done:], origin + done
        if buffer is None or (origin == 0 and buffer.shape[1] == 0):
            raise AudioError(f"{path}: no audio samples")
        if buffer.shape[1]:
            yield from self._split(buffer, rate, origin, final=True)[1]

    def _split(self, buffer: np.ndarray, rate: int, origin: int, final: bool) -> tuple[int, list[Segment]]:
        """Turns of one window, and how many native samples of it are done with."""
        from faster_whisper.vad import get_speech_timestamps

        wave = torch.from_numpy(buffer.mean(axis=0, dtype=np.float32))
        if rate != SAMPLE_RATE:
            wave = AF.resample(wave, rate, SAMPLE_RATE)
        if not torch.isfinite(wave).all():
            raise AudioError(f"non-finite samples at {origin / rate:.1f} s")
        regions = get_speech_timestamps(wave.numpy(), self.vad)
        cut = len(wave)
        if not final:
            # a region ending within the guard of the window's end may go on in the next window
            limit = len(wave) - self.guard_samples
            cut = min([r["start"] for r in regions if r["end"] > limit] + [limit])
            if cut <= 0:  # one region fills the window (VAD did not split it): cut it rather than stall
                cut = limit
        offset = origin / rate
        found = [
            Segment(offset + r["start"] / SAMPLE_RATE, offset + r["end"] / SAMPLE_RATE, wave[r["start"] : r["end"]].clone())
            for r in regions
            if r["end"] <= cut
        ]
        return max(1, cut * rate // SAMPLE_RATE), found
