"""Speech for the generated corpora: espeak-ng, resampled to 16 kHz mono, written as PCM16 WAV.

Each utterance is spoken by espeak-ng with the turn's voice, pitch, rate and word gap, trimmed of
espeak's own silences at both ends, resampled to 16 kHz, scaled so that its active speech has the
turn's level in dBFS, padded with 0.3 s at both ends and laid over a -60 dBFS noise floor.
Synthesis is deterministic: espeak-ng's output depends only on the text and the settings, the
resampler is deterministic on CPU, and the noise comes from a per-utterance seed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from data_modules.generated.content import VoiceParams

ESPEAK = "espeak-ng"
ESPEAK_APT_PACKAGE = "espeak-ng"
SAMPLE_RATE = 16000
PAD_SECONDS = 0.3
ESPEAK_AMPLITUDE = 100  # loudness is set afterwards from VoiceParams.level_db
NOISE_FLOOR_DBFS = -60.0  # a recording's noise floor; keeps log-mel energies finite in pauses and padding
_TRIM_THRESHOLD = 1e-3  # espeak's own leading/trailing silence is cut before the fixed padding is added
_FRAME = 320  # 20 ms at 16 kHz, for the active-speech level
_ACTIVE_RANGE_DB = 30.0  # frames within this range of the loudest one count as active speech


class EspeakNotFoundError(RuntimeError):
    """espeak-ng is not installed."""


class SpeechSynthesisError(RuntimeError):
    """espeak-ng failed on one utterance."""


@dataclass(frozen=True)
class SynthesisJob:
    """One utterance to synthesise into `path`; `noise_seed` seeds its noise floor."""

    text: str
    voice: VoiceParams
    path: Path
    noise_seed: int


def espeak_executable() -> str:
    """The path of espeak-ng, or a clear error naming the package to install."""
    found = shutil.which(ESPEAK)
    if found is None:
        raise EspeakNotFoundError(
            f"{ESPEAK} was not found on PATH; the generated corpora need it for speech. "
            f"Install it with `sudo apt-get install {ESPEAK_APT_PACKAGE}` (Debian/Ubuntu package "
            f"'{ESPEAK_APT_PACKAGE}'; Homebrew: `brew install espeak-ng`)."
        )
    return found


def espeak_version() -> str:
    """espeak-ng's version line, e.g. 'eSpeak NG text-to-speech: 1.51  Data at: ...' without the data path."""
    out = subprocess.run(
        [espeak_executable(), "--version"], capture_output=True, text=True, check=False
    ).stdout
    return out.strip().split("  Data at:")[0]


def installed_espeak_version() -> str | None:
    """``espeak_version()``, or None when espeak-ng is not installed (an existing corpus can still be reused)."""
    try:
        return espeak_version()
    except EspeakNotFoundError:
        return None


def espeak_command(voice: VoiceParams, wav_path: Path) -> list[str]:
    """The espeak-ng command line that speaks stdin with `voice` into `wav_path`."""
    return [
        espeak_executable(), "-v", voice.voice, "-p", str(voice.pitch), "-s", str(voice.speed),
        "-a", str(ESPEAK_AMPLITUDE), "-g", str(voice.word_gap), "-b", "1", "-w", str(wav_path), "--stdin",
    ]  # fmt: skip


def _espeak(text: str, voice: VoiceParams) -> tuple[np.ndarray, int]:
    with tempfile.TemporaryDirectory(prefix="meritsl-espeak-") as tmp:
        wav_path = Path(tmp) / "speech.wav"
        # '!' changes espeak's intonation; the voice cue must come from the designed settings only.
        spoken = text.replace("!", ".")
        done = subprocess.run(
            espeak_command(voice, wav_path), input=spoken, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not wav_path.is_file():
            raise SpeechSynthesisError(
                f"{ESPEAK} failed (exit {done.returncode}) for voice {voice} and text {text!r}: {done.stderr.strip()}"
            )
        audio, rate = sf.read(str(wav_path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


@functools.cache
def _resampler(rate: int) -> torchaudio.transforms.Resample:
    # torchaudio.functional.resample with its sinc kernel built once, not once per utterance.
    return torchaudio.transforms.Resample(rate, SAMPLE_RATE)


def _trim(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > _TRIM_THRESHOLD)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def active_level_db(audio: np.ndarray) -> float:
    """RMS level in dBFS of the active speech: the 20 ms frames within 30 dB of the loudest one."""
    frames = (
        audio[: len(audio) // _FRAME * _FRAME].reshape(-1, _FRAME) if len(audio) >= _FRAME else audio[None]
    )
    power = np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12
    active = power[power >= power.max() * 10 ** (-_ACTIVE_RANGE_DB / 10)]
    return float(10 * np.log10(active.mean()))


def synthesize(
    text: str, voice: VoiceParams, noise_seed: int, pad_seconds: float = PAD_SECONDS
) -> np.ndarray:
    """16 kHz mono float32 speech for `text` at `voice.level_db`, with `pad_seconds` of noise floor at both ends."""
    audio, rate = _espeak(text, voice)
    audio = _trim(audio)
    if rate != SAMPLE_RATE:
        with torch.inference_mode():
            audio = _resampler(rate)(torch.from_numpy(np.ascontiguousarray(audio))).numpy()
    audio = audio * 10 ** ((voice.level_db - active_level_db(audio)) / 20)
    pad = np.zeros(round(pad_seconds * SAMPLE_RATE), dtype=np.float32)
    audio = np.concatenate([pad, audio, pad])
    noise = np.random.default_rng(noise_seed).normal(0.0, 10 ** (NOISE_FLOOR_DBFS / 20), audio.shape)
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def synthesize_to_file(job: SynthesisJob) -> float:
    """Write one job's speech as a 16 kHz mono PCM16 WAV; returns its duration in seconds."""
    audio = synthesize(job.text, job.voice, job.noise_seed)
    job.path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(job.path), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return len(audio) / SAMPLE_RATE


def synthesize_many(jobs: Sequence[SynthesisJob], workers: int | None = None) -> list[float]:
    """Run `jobs` on a small thread pool (espeak-ng runs in subprocesses); durations in job order."""
    espeak_executable()
    workers = workers or min(8, os.cpu_count() or 1)
    # The pool is the parallelism: torch's intra-op threads would only spin-wait on short resamples.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(synthesize_to_file, jobs))
    finally:
        torch.set_num_threads(torch_threads)
