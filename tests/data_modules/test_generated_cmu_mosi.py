"""The generated CMU-MOSI corpus: real layout, parsable by the real parser, with the designed cues."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from data_modules import CMUMOSIDataModule
from data_modules.cmu_mosi_parser import parse_cmu_mosi, standard_folds
from data_modules.generated.cmu_mosi import (
    CORPUS_FOLDER,
    VIDEO_LIST,
    generate_cmu_mosi,
    transcript_text,
    videos_per_split,
)
from data_modules.generated.content import emotion_keywords
from data_modules.manifest import write_manifest
from meritsl_lightning.commands.generate import main as generate_main
from meritsl_lightning.commands.prepare import main as prepare_main

SIZE = {"videos": 6, "min_segments": 4, "max_segments": 6}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cmu_mosi(tmp_path_factory.mktemp("mosi"), seed=3, **SIZE)


def _truth(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus / "generated_segments.jsonl").read_text().splitlines()]


def test_layout_parses_without_defects(corpus: Path) -> None:
    raw = corpus / "Raw"
    for folder in ("Audio/WAV_16000/Segmented", "Transcript/Segmented", "Transcript/Full", "Labels"):
        assert (raw / folder).is_dir()
    result = parse_cmu_mosi(corpus.parent, deep=True)
    assert result.defects == []
    truth = _truth(corpus)
    assert (
        len(result.utterances)
        == len(truth)
        == json.loads((corpus / "generated.json").read_text())["statistics"]["segments"]
    )
    by_id = {u.utt_id: u for u in result.utterances}
    for t in truth:
        u = by_id[f"{t['video']}_{t['number']}"]
        assert (u.split, u.score, u.text) == (t["split"], t["score"], transcript_text(t["text"]))
        assert -3.0 <= u.score <= 3.0
    assert len(result.info["zero_length_label_intervals"]) == 1
    assert result.info["unlabelled_transcript_lines"] >= 1


def test_splits_use_real_fold_ids_and_the_written_video_list(corpus: Path) -> None:
    folds = standard_folds()
    listed = json.loads((corpus / VIDEO_LIST).read_text())
    assert {s: len(v) for s, v in listed.items()} == videos_per_split(SIZE["videos"], folds)
    for split, videos in listed.items():
        assert set(videos) <= set(folds[split])
    by_folds = parse_cmu_mosi(corpus, text_only=True).utterances
    by_list = parse_cmu_mosi(corpus, text_only=True, video_list=corpus / VIDEO_LIST).utterances
    assert by_folds == by_list


def test_some_wavs_are_stereo_or_44k_and_parse(corpus: Path) -> None:
    infos = [sf.info(str(p)) for p in (corpus / "Raw" / "Audio" / "WAV_16000" / "Segmented").glob("*.wav")]
    assert any(i.channels == 2 and i.samplerate == 44_100 for i in infos)
    assert all(i.frames > 0 for i in infos)


def test_cues_and_context_follow_the_design(corpus: Path) -> None:
    truth = _truth(corpus)
    lexicon = {e: emotion_keywords(e) for e in ("hap", "ang", "sad")}
    any_emotion_word = set().union(*lexicon.values())
    neutral_signs: dict[str, set[bool]] = defaultdict(set)
    for t in truth:
        words = set(transcript_text(t["text"]).split())
        if t["kind"] == "neu":
            neutral_signs[t["video"]].add(t["score"] >= 0)
            assert t["cue"] == "none"
        else:
            assert (t["score"] > 0) == (t["kind"] == "pos") and t["score"] != 0
        if t["cue"] in ("text", "both"):
            assert words & lexicon[t["emotion"]], t
        else:
            assert not words & any_emotion_word, t
    # a neutral segment's sign is its video's polarity: one sign per video
    assert neutral_signs and all(len(signs) == 1 for signs in neutral_signs.values())


def test_idempotent_and_refuses_foreign_folders(corpus: Path, tmp_path: Path) -> None:
    stamp = (corpus / "generated.json").stat().st_mtime_ns
    assert generate_cmu_mosi(corpus.parent, seed=3, **SIZE) == corpus
    assert (corpus / "generated.json").stat().st_mtime_ns == stamp
    (tmp_path / CORPUS_FOLDER).mkdir()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_cmu_mosi(tmp_path, **SIZE)
    with pytest.raises(ValueError, match="videos: expected 3..93"):
        generate_cmu_mosi(tmp_path / "x", videos=2)


def test_generate_and_prepare_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate_main(["cmu_mosi", "--out", str(tmp_path / "g"), "--size", "3", "--seed", "1"]) == 0
    root = tmp_path / "g" / CORPUS_FOLDER
    assert json.loads((root / "generated.json").read_text())["parameters"]["videos"] == 3
    out = tmp_path / "prepared"
    assert (
        prepare_main(
            ["cmu_mosi", "--root", str(tmp_path / "g"), "--out", str(out), "--protocol", "mosi_regression"]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert (
        report["corpus"] == "cmu_mosi"
        and report["protocol"] == "mosi_regression"
        and report["target"] == "score"
    )
    assert set(report["splits"]) == {"train", "validation", "test"} and report["defects"] == []
    assert "only 3 of the 93 standard-fold videos" in capsys.readouterr().err


def test_data_module_binary_and_regression(corpus: Path, tmp_path: Path) -> None:
    binary = CMUMOSIDataModule(root=str(corpus), protocol="mosi2")
    assert binary.task == "classification" and binary.label_names == ["negative", "positive"]
    train = binary.split_data("train")
    assert len(train.conversations) == len(json.loads((corpus / VIDEO_LIST).read_text())["train"])
    regression = CMUMOSIDataModule(root=str(corpus), protocol="mosi_regression", text_only=True)
    assert regression.task == "regression"
    test = regression.split_data("test")
    assert not test.scores.isnan().any()
    assert test.labels.tolist() == [int(s >= 0) for s in test.scores.tolist()]

    # a video list re-splits a prepared manifest: everything but one test video becomes training data
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(parse_cmu_mosi(corpus, text_only=True).utterances, manifest)
    listed = json.loads((corpus / VIDEO_LIST).read_text())
    vlist = tmp_path / "videos.txt"
    vlist.write_text(
        "".join(f"train {v}\n" for v in listed["train"] + listed["test"][1:])
        + f"validation {listed['validation'][0]}\ntest {listed['test'][0]}\n"
    )
    resplit = CMUMOSIDataModule(manifest=str(manifest), video_list=str(vlist))
    assert {u.dialogue_id for u in resplit.split_data("test").rows} == {listed["test"][0]}
    with pytest.raises(ValueError, match="needs root"):
        CMUMOSIDataModule()
