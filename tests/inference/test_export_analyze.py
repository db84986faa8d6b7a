"""``meritsl export`` and ``meritsl analyze`` on the trained test chain: bundles load on their own and refuse
changed files; analysis equals ``meritsl predict`` on the same turns; streaming equals offline on every prefix;
long recordings and bad inputs."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from data_modules.manifest import read_manifest
from meritsl_lightning.commands import analyze, export, prepare
from meritsl_lightning.inference.analyzer import Analyzer, Conversation
from meritsl_lightning.inference.bundle import FORMAT_VERSION, Bundle, BundleError
from meritsl_lightning.inference.chain import Chain
from meritsl_lightning.inference.longform import RecordingSegmenter
from meritsl_lightning.inference.turns import folder_turns
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.stage_runner import StageChain

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bundle(chain: StageChain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "stage3"
    assert export.main(["--stage3", chain.checkpoints["stage3"], "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def text_bundle(chain: StageChain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "stage2_text"
    assert export.main(["--stage2", chain.checkpoints["stage2_text"], "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def manifest(chain: StageChain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    assert prepare.main(["iemocap", "--root", str(chain.corpus), "--out", str(out)]) == 0
    return out / "manifest.jsonl"


def predict(chain: StageChain, stage: str, tmp_path: Path) -> dict[str, dict]:
    """``meritsl predict`` of a chain checkpoint on the test split: utt_id -> {label, probs}."""
    out = tmp_path / f"predict_{stage}.jsonl"
    MeritslCLI(
        args=[
            "predict", *chain.common_args(f"predict_{stage}"), *chain.model_args(stage),
            f"--ckpt_path={chain.checkpoints[stage]}", f"--predictions.output={out}",
        ]
    )  # fmt: skip
    return {row["utt_id"]: row for row in map(json.loads, out.read_text().splitlines())}


def conversation_folder(manifest: Path, dialogue: str, folder: Path, skip: tuple[int, ...] = ()) -> list[str]:
    """Link a conversation's turn files as 000_<id>.wav ... in turn order, with transcripts.jsonl; its utt ids."""
    rows = sorted((u for u in read_manifest(manifest) if u.dialogue_id == dialogue), key=lambda u: u.utt_index)
    folder.mkdir(parents=True)
    lines = []
    for k, u in enumerate(rows):
        if k in skip:
            continue
        name = f"{k:03d}_{u.utt_id}.wav"
        (folder / name).symlink_to(u.audio_path)
        lines.append(json.dumps({"file": name, "text": u.text}))
    (folder / "transcripts.jsonl").write_text("\n".join(lines) + "\n")
    return [u.utt_id for k, u in enumerate(rows) if k not in skip]


def run_analyze(*args: str) -> int:
    return analyze.main([*map(str, args), "--device", "cpu"])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------- export


def test_bundle_holds_the_chain_encoders_configs_and_metrics(chain: StageChain, bundle: Path) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["top"] == "stage3"
    assert set(meta["checkpoints"]) == {"stage3", "stage2_text", "stage2_audio", "stage1_text", "stage1_audio"}
    assert meta["label_names"] == ["hap", "sad", "neu", "ang"] == json.loads((bundle / "labels.json").read_text())
    assert meta["speech_encoder"]["kind"] == "filterbank" and "path" not in meta["speech_encoder"]
    assert (bundle / "text_encoder" / "config.json").is_file() and (bundle / "text_encoder" / "tokenizer.json").is_file()
    for role in meta["checkpoints"]:
        assert (bundle / "configs" / f"{role}.yaml").is_file()
    listed = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"bundle.json"}
    assert set(meta["files"]) == listed and all(len(h) == 64 for h in meta["files"].values())
    recorded = json.loads((Path(chain.checkpoints["stage3"]).parents[1] / "test_metrics.json").read_text())["test"]
    assert meta["test_metrics"]["stage3"]["weighted_f1"] == recorded["test/weighted_f1"]
    card = (bundle / "README.md").read_text()
    assert f"{recorded['test/weighted_f1']:.4f}" in card and "meritsl analyze" in card


def test_export_refuses_wrong_stage_and_occupied_folder(chain: StageChain, bundle: Path, capsys: pytest.CaptureFixture) -> None:
    assert export.main(["--stage3", chain.checkpoints["stage2_text"], "--out", str(bundle.parent / "x")]) == 2
    assert "stage2" in capsys.readouterr().err
    assert export.main(["--stage3", chain.checkpoints["stage3"], "--out", str(bundle)]) == 2
    assert "--force" in capsys.readouterr().err


def test_bundle_loads_without_the_original_run_folders(chain: StageChain, bundle: Path, tmp_path: Path) -> None:
    moved = chain.root.with_name(chain.root.name + "-moved")
    chain.root.rename(moved)  # the runs, the tiny RoBERTa folder and the cache are all under it
    try:
        loaded = Chain(Bundle.open(bundle))
        assert loaded.fusion is not None and loaded.modalities == ("text", "audio")
        assert all(m.hparams["stage1_checkpoint"].startswith(str(bundle)) for m in loaded.stage2.values())
        assert loaded.stage1["text"].hparams["model_name_or_path"] == str(bundle / "text_encoder")
    finally:
        moved.rename(chain.root)


def test_changed_file_or_other_format_version_is_refused(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    with open(changed / "checkpoints" / "stage2_audio.ckpt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="stage2_audio.ckpt: changed since the bundle was exported"):
        Bundle.open(changed)
    assert run_analyze(tmp_path, "--bundle", changed, "--out", tmp_path / "out") == 2
    assert "changed since the bundle was exported" in capsys.readouterr().err

    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    meta = json.loads((other / "bundle.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (other / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1}"):
        Bundle.open(other)


# ------------------------------------------------------------------------------------------------- analyze


def test_manifest_analysis_equals_predict(chain: StageChain, bundle: Path, manifest: Path, tmp_path: Path) -> None:
    expected = predict(chain, "stage3", tmp_path)
    expected_text = predict(chain, "stage2_text", tmp_path)
    expected_audio = predict(chain, "stage2_audio", tmp_path)
    assert run_analyze(manifest, "--bundle", bundle, "--out", tmp_path / "out") == 0
    got = {r["id"]: r for r in records(tmp_path / "out")}
    assert len(got) == len(read_manifest(manifest)) and set(expected) <= set(got)
    for utt_id, want in expected.items():
        row = got[utt_id]
        assert row["label"] == want["label"], utt_id
        assert row["probs"] == pytest.approx(want["probs"], abs=1e-4)
        assert row["stage2_text"]["label"] == expected_text[utt_id]["label"]
        assert row["stage2_audio"]["label"] == expected_audio[utt_id]["label"]
        assert row["stage2_text"]["probs"] == pytest.approx(expected_text[utt_id]["probs"], abs=1e-4)
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 1000
    header = (tmp_path / "out" / "turns.csv").read_text().splitlines()[0].split(",")
    assert {"p_hap", "stage2_text_label", "stage2_audio_p_ang", "transcript", "start", "end"} <= set(header)


def test_folder_of_turn_files_equals_predict(chain: StageChain, bundle: Path, manifest: Path, tmp_path: Path) -> None:
    expected = predict(chain, "stage3", tmp_path)
    ids = conversation_folder(manifest, "Ses05F_impro04", tmp_path / "Ses05F_impro04")
    assert run_analyze(tmp_path / "Ses05F_impro04", "--bundle", bundle, "--out", tmp_path / "out") == 0
    rows = records(tmp_path / "out")
    assert [r["id"] for r in rows] == [f"{k:03d}_{u}" for k, u in enumerate(ids)]
    assert [r["label"] for r in rows] == [expected[u]["label"] for u in ids]
    assert rows[0]["start"] == 0.0 and rows[1]["start"] == pytest.approx(rows[0]["end"])  # laid end to end
    assert all(r["transcript_source"] == "given" for r in rows)


def test_streaming_equals_offline_on_every_prefix(bundle: Path, manifest: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "conv"
    conversation_folder(manifest, "Ses05F_impro04", folder)
    turns, _ = folder_turns(folder)
    lines = "".join(json.dumps({"audio": t.audio_path, "text": t.text, "id": t.turn_id, "conversation": "c"}) + "\n" for t in turns)
    monkeypatch.setattr(sys, "stdin", io.StringIO("not json\n" + lines))
    assert run_analyze("-", "--stream", "--bundle", bundle, "--out", tmp_path / "stream") == 0
    streamed = records(tmp_path / "stream")
    assert len(streamed) == len(turns)

    analyzer = Analyzer(Chain(Bundle.open(bundle)))
    for k in range(1, len(turns) + 1):
        offline = Conversation(analyzer, "c")
        for t in turns[:k]:
            offline.add(t)
        last = offline.predict_all()[-1].prediction
        assert streamed[k - 1]["label"] == last.label
        assert streamed[k - 1]["probs"] == {n: round(p, 6) for n, p in last.probs.items()}
        assert streamed[k - 1]["stage2_audio"]["label"] == last.by_modality["audio"]["label"]


def test_streaming_from_a_watched_folder(bundle: Path, manifest: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    conversation_folder(manifest, "Ses05F_impro04", source)
    live = tmp_path / "live"
    live.mkdir()

    def arrive() -> None:
        for path in sorted(source.glob("*.wav")):
            shutil.copy(path, live / (path.name + ".part"))
            (live / f"{path.stem}.txt").write_text(json.loads(next(
                line for line in (source / "transcripts.jsonl").read_text().splitlines() if path.name in line
            ))["text"])  # fmt: skip
            os.replace(live / (path.name + ".part"), live / path.name)
            time.sleep(0.3)

    writer = threading.Thread(target=arrive)
    writer.start()
    try:
        assert run_analyze(live, "--stream", "--poll-seconds", "0.1", "--idle-timeout", "3", "--bundle", bundle, "--out", tmp_path / "out") == 0
    finally:
        writer.join()
    rows = records(tmp_path / "out")
    assert [r["id"] for r in rows] == [p.stem for p in sorted(source.glob("*.wav"))]
    assert all(r["label"] is not None and r["transcript_source"] == "given" for r in rows)


def test_bad_turns_are_reported_and_left_out_of_the_context(bundle: Path, manifest: Path, tmp_path: Path) -> None:
    good = tmp_path / "good"
    conversation_folder(manifest, "Ses05F_impro04", good, skip=(1, 2))
    bad = tmp_path / "bad"
    ids = conversation_folder(manifest, "Ses05F_impro04", bad)
    corrupt = bad / f"001_{ids[1]}.wav"
    corrupt.unlink()
    corrupt.write_bytes(b"RIFF\x00\x01\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    silent = bad / f"002_{ids[2]}.wav"
    silent.unlink()
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    with open(bad / "transcripts.jsonl", "a") as f:
        f.write(json.dumps({"file": "009_gone.wav", "text": "a turn whose audio file is missing"}) + "\n")
    (bad / "notes.txt").write_text("not a turn")
    assert run_analyze(good, "--bundle", bundle, "--out", tmp_path / "good_out") == 0
    assert run_analyze(bad, "--bundle", bundle, "--out", tmp_path / "bad_out") == 0
    rows = {r["turn"]: r for r in records(tmp_path / "bad_out")}
    assert "corrupt" in rows[1]["error"] and rows[1]["label"] is None
    assert "silent" in rows[2]["error"] and rows[2]["label"] is None
    gone = rows[max(rows)]
    assert gone["id"] == "009_gone" and "not found" in gone["error"] and gone["label"] is None
    kept = [r for r in rows.values() if r["label"] is not None]
    assert [r["probs"] for r in kept] == [r["probs"] for r in records(tmp_path / "good_out")]


def test_text_only_bundle_uses_transcripts_without_audio(chain: StageChain, text_bundle: Path, manifest: Path, tmp_path: Path, capsys) -> None:
    expected = predict(chain, "stage2_text", tmp_path)
    folder = tmp_path / "conv"
    ids = conversation_folder(manifest, "Ses05F_impro04", folder)
    (folder / f"000_{ids[0]}.wav").unlink()  # its transcript is enough for a text-only model
    assert run_analyze(folder, "--bundle", text_bundle, "--out", tmp_path / "out") == 0
    assert "no speech branch" in capsys.readouterr().err
    rows = records(tmp_path / "out")
    assert [r["label"] for r in rows] == [expected[u]["label"] for u in ids]
    assert "not found" in rows[0]["note"] and "stage2_audio" not in rows[0]


def test_stage2_trained_out_of_fold_exports_and_analyses(chain: StageChain, manifest: Path, tmp_path: Path) -> None:
    """A Stage II on out-of-fold Stage I embeddings: the fold models are checked at export, not bundled, and
    analysis (full Stage I model for every turn, as in validation and test) equals ``meritsl predict``."""
    from meritsl_lightning.commands.oof import main as oof_main

    oof = tmp_path / "oof" / "text.json"
    args = ["--folds", "2", "--seed", "0", "--out", str(oof), "--full", chain.checkpoints["stage1_text"], "--name", "analyze_oof"]
    assert oof_main([*args, *chain.common_args("ignored"), *chain.model_args("stage1_text")]) == 0
    stage2 = chain.fit("stage2_text", f"--model.init_args.stage1_oof={oof}", name="analyze_stage2_oof")
    ckpt = stage2.trainer.checkpoint_callback.best_model_path
    out = tmp_path / "predict.jsonl"
    MeritslCLI(args=["predict", *chain.common_args("analyze_oof_predict"), *chain.model_args("stage2_text"),
                     f"--model.init_args.stage1_oof={oof}", f"--ckpt_path={ckpt}", f"--predictions.output={out}"])  # fmt: skip
    expected = {row["utt_id"]: row["label"] for row in map(json.loads, out.read_text().splitlines())}
    assert export.main(["--stage2", ckpt, "--out", str(tmp_path / "bundle")]) == 0
    assert "out-of-fold" in (tmp_path / "bundle" / "README.md").read_text()
    shutil.rmtree(tmp_path / "oof")  # the fold models and oof.json are not needed any more
    assert run_analyze(manifest, "--bundle", tmp_path / "bundle", "--out", tmp_path / "out") == 0
    got = {r["id"]: r["label"] for r in records(tmp_path / "out")}
    assert {u: got[u] for u in expected} == expected


def test_stereo_44k_turn_is_resampled_and_downmixed(bundle: Path, manifest: Path, tmp_path: Path) -> None:
    folder = tmp_path / "conv"
    conversation_folder(manifest, "Ses05F_impro04", folder)
    first = sorted(folder.glob("*.wav"))[0]
    mono, rate = sf.read(first, dtype="float32")
    import torchaudio.functional as AF

    stereo = AF.resample(torch.from_numpy(mono), rate, 44100).numpy()
    first.unlink()
    sf.write(first, np.stack([stereo, stereo], axis=1), 44100)
    assert run_analyze(folder, "--bundle", bundle, "--out", tmp_path / "out") == 0
    rows = records(tmp_path / "out")
    assert rows[0]["error"] is None and rows[0]["end"] == pytest.approx(len(mono) / rate, abs=1e-3)


def test_user_errors_end_in_one_message(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert run_analyze(tmp_path / "empty", "--bundle", bundle, "--out", tmp_path / "o") == 2
    assert "nothing to analyse" in capsys.readouterr().err
    assert run_analyze(tmp_path / "empty", "--bundle", tmp_path, "--out", tmp_path / "o") == 2
    assert "not a meritsl bundle" in capsys.readouterr().err
    folder = tmp_path / "untranscribed"
    folder.mkdir()
    sf.write(folder / "a.wav", 0.1 * np.sin(np.arange(8000) / 5.0).astype(np.float32), 16000)
    assert run_analyze(folder, "--bundle", bundle, "--out", tmp_path / "o") == 2
    assert "--asr-model" in capsys.readouterr().err
    out = subprocess.run(
        [str(BIN / "meritsl"), "analyze", str(tmp_path / "empty"), "--bundle", str(bundle), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("meritsl analyze: error:")


# ------------------------------------------------------------------------------------------------- long recordings


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """Four generated espeak turns with 1.5 s pauses, as one 44.1 kHz stereo file; and the true turn spans."""
    from data_modules.generated import VoiceParams, synthesize

    texts = ["I am so happy to see you today.", "That is terrible news, I cannot believe it.",
             "We will meet at the station at nine.", "What do you think about the weather?"]  # fmt: skip
    gap = np.zeros(24000, dtype=np.float32)
    pieces, spans, t = [gap], [], 1.5
    for i, text in enumerate(texts):
        voice = VoiceParams("en-us" if i % 2 else "en", 50, 160, 1, -22.0)
        speech = synthesize(text, voice, noise_seed=i, pad_seconds=0.0)
        pieces += [speech, gap]
        spans.append((t, t + len(speech) / 16000))
        t += (len(speech) + len(gap)) / 16000
    wave = torch.from_numpy(np.concatenate(pieces))
    import torchaudio.functional as AF

    stereo = AF.resample(wave, 16000, 44100).numpy()
    path = tmp_path_factory.mktemp("recording") / "call.wav"
    sf.write(path, np.stack([stereo, 0.5 * stereo], axis=1), 44100)
    return path, spans


def test_long_recording_is_split_by_vad_in_bounded_windows(recording) -> None:
    path, spans = recording
    small = RecordingSegmenter(window_seconds=9.0, max_turn_seconds=6.0, block_seconds=1.0)
    found = list(small.segments(path))
    whole = list(RecordingSegmenter(window_seconds=600.0).segments(path))
    assert len(found) == len(spans) == len(whole)
    for seg, (start, end), other in zip(found, spans, whole, strict=True):
        assert abs(seg.start - start) < 0.5 and abs(seg.end - end) < 0.5
        assert abs(seg.start - other.start) < 0.05 and abs(seg.end - other.end) < 0.05
    assert small.max_buffered_seconds <= 9.0 + 1.0 < spans[-1][1]  # never the whole file at once


def test_long_recording_through_analyze_with_tiny_whisper(bundle: Path, recording, tmp_path: Path) -> None:
    from meritsl_lightning.tiny_whisper import build_tiny_whisper_ct2

    whisper = build_tiny_whisper_ct2(tmp_path / "whisper")
    path, spans = recording
    assert run_analyze(path, "--bundle", bundle, "--out", tmp_path / "out") == 2  # needs --asr-model
    assert run_analyze(path, "--bundle", bundle, "--out", tmp_path / "out", "--asr-model", whisper,
                       "--window-seconds", "9", "--max-turn-seconds", "6") == 0  # fmt: skip
    rows = records(tmp_path / "out")
    assert len(rows) == len(spans)
    for row, (start, end) in zip(rows, spans, strict=True):
        assert abs(row["start"] - start) < 0.5 and abs(row["end"] - end) < 0.5
        # the tiny random Whisper may hear no words; then the turn is reported, never silently dropped
        assert (row["label"] is not None and row["transcript_source"] == "asr") or "no words" in row["error"]


@pytest.mark.slow
def test_two_hour_recording_in_bounded_memory(recording, tmp_path: Path) -> None:
    """Two hours of the generated turns, written block by block: the segmenter finds every turn while holding
    at most one window of audio (numpy allocations traced; the whole file as float32 would be 460 MB)."""
    import tracemalloc

    import torchaudio.functional as AF

    path, spans = recording
    stereo, native = sf.read(path, dtype="float32")
    rate = 16000
    cycle = AF.resample(torch.from_numpy(stereo.mean(axis=1)), native, rate).numpy()
    repeats = int(2 * 3600 * rate // len(cycle)) + 1
    long_path = tmp_path / "two_hours.flac"
    with sf.SoundFile(long_path, "w", samplerate=rate, channels=1) as f:
        for _ in range(repeats):
            f.write(cycle)
    segmenter = RecordingSegmenter(window_seconds=120.0, block_seconds=5.0)
    tracemalloc.start()
    count = sum(1 for _ in segmenter.segments(long_path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert repeats * len(cycle) / rate >= 7200
    assert count == repeats * len(spans)
    assert segmenter.max_buffered_seconds <= 125.0
    assert peak < 300e6
