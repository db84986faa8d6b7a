"""The generated MELD corpus: the real MELD.Raw layout and CSV format, its planted defects, and the parser on it."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import av
import pytest

from data_modules import MELDDataModule
from data_modules.generated.content import ContentConfig
from data_modules.generated.meld import _plan, _write_csv, format_time, generate_meld
from data_modules.meld_parser import EMOTIONS, HEADER, MELD_SPLITS, TIME, parse_meld
from meritsl_lightning.commands.generate import GENERATORS, SIZE_OPTIONS, generator

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SIZE = {"dialogues_per_split": 3, "train_factor": 2, "min_turns": 5, "max_turns": 7}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_meld(tmp_path_factory.mktemp("generated-meld"), seed=0, **SIZE)


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_whatever_the_thread_count(corpus: Path, tmp_path: Path) -> None:
    again = generate_meld(tmp_path, seed=0, workers=1, **SIZE)
    assert _files(again) == _files(corpus)  # CSVs and every mp4, byte for byte


@pytest.fixture(scope="module")
def summary(corpus: Path) -> dict:
    return json.loads((corpus / "generated.json").read_text())


def _csv_rows(corpus: Path, split_index: int) -> list[list[str]]:
    with open(corpus / MELD_SPLITS[split_index].csv_name, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_layout_and_csv_format(corpus: Path, summary: dict) -> None:
    assert corpus.name == "MELD.Raw"
    for s in MELD_SPLITS:
        assert (corpus / s.csv_name).is_file() and (corpus / s.clip_folder).is_dir()
        raw = (corpus / s.csv_name).read_bytes()
        assert raw.startswith(",".join(HEADER).encode() + b"\r\n")  # the exact header, CRLF line ends
        assert b"\n" not in raw.replace(b"\r\n", b"")
    rows = [r for i in range(3) for r in _csv_rows(corpus, i)[1:]]
    assert all(len(r) == len(HEADER) for r in rows)
    texts = " ".join(r[1] for r in rows)
    assert "’" in texts and "'" not in texts and "," in texts
    assert {r[3] for r in rows} <= set(EMOTIONS)
    assert all(TIME.match(r[9]) and TIME.match(r[10]) for r in rows)
    hours = Counter(len(r[9].split(":")[0]) for r in rows)
    assert hours[1] and hours[2]  # one- and two-digit hours
    train = _csv_rows(corpus, 0)[1:]
    serials = [int(r[0]) for r in train]
    assert serials == sorted(serials) and serials != list(range(1, len(serials) + 1))  # Sr No. has gaps
    assert "3" not in {r[5] for r in train}  # a missing Dialogue_ID, as train dia60 of the real corpus
    stats = summary["statistics"]["splits"]
    assert stats["train"]["dialogues"] == 6 and stats["validation"]["dialogues"] == stats["test"]["dialogues"] == 3


def test_quoted_speech_round_trips_through_the_csv(tmp_path: Path) -> None:
    # quoted speech is rare in a small corpus: write planned texts with the generator's writer and read them back
    planned = _plan(0, {"train": 30, "validation": 10, "test": 10}, ContentConfig(min_turns=6, max_turns=12))
    quoted = [p for p in planned if '"' in p.text][:3]
    assert quoted
    rows = [
        [str(i + 1), p.text, p.turn.speaker, p.emotion, p.sentiment, "0", str(i), "1", "1",
         format_time(60.0 + i, one_digit_hour=True), format_time(60.5 + i, short_ms=True)]
        for i, p in enumerate(quoted)
    ]  # fmt: skip
    _write_csv(tmp_path / "train_sent_emo.csv", rows)
    result = parse_meld(tmp_path, text_only=True)
    assert [u.text for u in result.utterances] == [p.text for p in quoted]
    assert format_time(3 * 3600 + 14 * 60 + 2.118, one_digit_hour=True) == "3:14:02,118"
    assert format_time(14 * 60 + 7.028, short_ms=True) == "00:14:07,28"


def test_parser_finds_exactly_the_planted_defects(corpus: Path, summary: dict) -> None:
    planted = summary["defects"]
    result = parse_meld(corpus.parent)  # the parent of MELD.Raw works as the root too
    by_id = {u.utt_id: u for u in result.utterances}
    assert len(result.utterances) == summary["statistics"]["utterances"]
    assert sorted(u.utt_id for u in result.utterances if not u.audio_ok) == sorted(
        [planted["missing_clip"], planted["corrupt_clip"]]
    )
    problems = {d.item: d.problem for d in result.defects}
    assert problems.keys() == {planted["missing_clip"], planted["corrupt_clip"]}
    assert problems[planted["missing_clip"]].startswith("missing clip")
    assert problems[planted["corrupt_clip"]].startswith("corrupt clip")
    assert [c["item"] for c in result.info["long_clips"]] == [planted["long_clip"]]
    assert result.info["long_clips"][0]["seconds"] >= 39
    assert result.info["extra_clips"]["validation"]["examples"] == planted["extra_clips"]
    assert result.info["other_files"]["test"]["count"] == 2
    quirks = result.info["time_quirks"]
    assert quirks["utterance_id_gap_dialogues"] == {"train": 1, "validation": 1, "test": 0}
    assert [q["item"] for q in quirks["short_milliseconds"]] == [planted["short_milliseconds"]]
    for dialogue in planted["utterance_id_gaps"]:
        turns = sorted((u for u in result.utterances if u.dialogue_id == dialogue), key=lambda u: u.utt_index)
        ids = [int(u.utt_id.rsplit("utt", 1)[1]) for u in turns]
        assert ids != list(range(len(ids))) and [u.utt_index for u in turns] == list(range(len(ids)))
    assert by_id[planted["long_clip"]].audio_ok


def test_clips_are_mp4_with_aac_audio_at_several_rates(corpus: Path) -> None:
    truth = [json.loads(line) for line in (corpus / "generated_turns.jsonl").read_text().splitlines()]
    formats = Counter((t["clip_rate"], t["clip_channels"]) for t in truth)
    assert formats[(16000, 1)] > 0
    sample = next(t for t in truth if t["item"] == "test/dia0_utt0")
    with av.open(str(corpus / sample["clip"])) as container:
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == sample["clip_rate"]
        kinds = {s.type for s in container.streams}
    assert "audio" in kinds


def test_data_module_keeps_the_rows_without_clips(corpus: Path) -> None:
    dm = MELDDataModule(root=str(corpus), protocol="meld7", batch_size=4)
    assert dm.split_names() == ["train", "validation", "test"] and dm.num_classes == 7
    train = dm.split_data("train")
    assert len(train.rows) == len(_csv_rows(corpus, 0)) - 1
    assert sum(not u.audio_ok for s in dm.split_names() for u in dm.split_data(s).rows) == 2
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["texts"]) == batch["labels"].numel() <= 4


def test_regenerating_is_idempotent_and_refuses_foreign_folders(corpus: Path, tmp_path: Path) -> None:
    before = (corpus / "generated.json").stat().st_mtime_ns
    assert generate_meld(corpus.parent, seed=0, **SIZE) == corpus
    assert (corpus / "generated.json").stat().st_mtime_ns == before
    (tmp_path / "MELD.Raw").mkdir()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_meld(tmp_path, seed=0, **SIZE)
    with pytest.raises(ValueError, match="dialogues_per_split >= 3"):
        generate_meld(tmp_path / "x", dialogues_per_split=2)


def test_registered_with_generate_and_prepare() -> None:
    from meritsl_lightning.commands.prepare import CORPORA

    assert "meld" in GENERATORS and SIZE_OPTIONS["meld"] == "dialogues_per_split"
    assert generator("meld") is generate_meld
    assert CORPORA["meld"].default_protocol == "meld7" and CORPORA["meld"].protocols == ("meld7", "meld3")
