"""load_audio: formats, resampling, mixing, cropping and the errors for bad files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from data_modules.audio import AudioError, audio_duration, crop_center, load_audio

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="the ffmpeg CLI makes the MP4 fixtures"
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def sine(seconds: float, rate: int, freq: float = 220.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def stereo_44k(tmp_path: Path) -> Path:
    left = sine(2.0, 44100)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 44100, subtype="FLOAT")
    return path


def test_stereo_44k_becomes_16k_mono(stereo_44k: Path) -> None:
    wave = load_audio(stereo_44k)
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert wave.shape[0] == 32000
    expected = AF.resample(torch.from_numpy(sine(2.0, 44100)) / 2, 44100, 16000)  # mean of L and silent R
    assert torch.allclose(wave, expected, atol=1e-5)


def test_start_end_crop_matches_the_full_signal(tmp_path: Path) -> None:
    ramp = np.linspace(-1, 1, 48000, dtype=np.float32)
    path = tmp_path / "ramp.flac"
    sf.write(path, ramp, 16000, subtype="PCM_24")
    full = load_audio(path)
    part = load_audio(path, start=0.5, end=1.25)
    assert part.shape[0] == 12000
    assert torch.allclose(part, full[8000:20000])
    assert load_audio(path, start=2.5).shape[0] == 8000
    assert load_audio(path, end=0.25).shape[0] == 4000
    assert load_audio(path, start=2.5, end=9.0).shape[0] == 8000  # an end past the file is clipped
    assert audio_duration(path) == pytest.approx(3.0)
    assert audio_duration(path, start=1.0) == pytest.approx(2.0)


def test_44k_crop_has_the_resampled_length(stereo_44k: Path) -> None:
    assert load_audio(stereo_44k, start=0.25, end=1.0).shape[0] == 12000


def test_max_seconds_keeps_the_centre(tmp_path: Path) -> None:
    ramp = np.arange(48000, dtype=np.float32) / 48000
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, 16000, subtype="FLOAT")
    wave = load_audio(path, max_seconds=1.0)
    assert torch.allclose(wave, torch.from_numpy(ramp[16000:32000]))
    assert load_audio(path, max_seconds=10.0).shape[0] == 48000
    assert torch.equal(crop_center(torch.arange(5), 3), torch.tensor([1, 2, 3]))


@needs_ffmpeg
@pytest.mark.parametrize("suffix", [".mp4", ".m4a"])
def test_aac_in_mp4_decodes_through_pyav(tmp_path: Path, suffix: str) -> None:
    wav = tmp_path / "src.wav"
    sf.write(wav, np.stack([sine(2.0, 44100, 440.0)] * 2, axis=1), 44100)
    out = tmp_path / f"clip{suffix}"
    ffmpeg("-i", str(wav), "-c:a", "aac", str(out))
    wave = load_audio(out)
    assert abs(wave.shape[0] - 32000) <= 800  # AAC priming adds 20-30 ms
    assert 0.2 < wave.abs().max() < 0.7
    spectrum = torch.fft.rfft(wave[4000:20000]).abs()  # 1 s window: bin k is k Hz
    assert abs(int(spectrum.argmax()) - 440) <= 2
    assert load_audio(out, start=0.5, end=1.0).shape[0] == 8000
    assert audio_duration(out) == pytest.approx(2.0, abs=0.05)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nope.wav.*not found"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav.*no audio samples"):
        load_audio(path)


def test_crop_past_the_end_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, sine(1.0, 16000), 16000)
    with pytest.raises(AudioError, match="short.wav.*no audio samples"):
        load_audio(path, start=5.0, end=6.0)
    with pytest.raises(AudioError, match="short.wav.*not after start"):
        load_audio(path, start=0.5, end=0.5)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" + bytes(range(256)) * 4)
    with pytest.raises(AudioError, match="garbage.wav.*unreadable or corrupt") as info:
        load_audio(path)
    assert isinstance(info.value, ValueError)


@needs_ffmpeg
def test_truncated_mp4_is_named(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-c:a", "aac", str(good))
    bad = tmp_path / "dia1_utt2.mp4"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(AudioError, match="dia1_utt2.mp4"):
        load_audio(bad)
