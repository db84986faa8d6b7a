"""MELD parser on a tiny hand-built MELD.Raw copy (every quirk and bad input), and on the real label CSVs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_modules import MELDDataModule
from data_modules.audio import load_audio
from data_modules.generated.meld import write_clip
from data_modules.manifest import CorpusProblem, read_manifest
from data_modules.meld_parser import EMOTIONS, PROTOCOLS, SENTIMENTS, check_clip, parse_meld
from meritsl_lightning.commands.prepare import main as prepare
from tests.fixtures.meld_layout import (
    EXPECTED_DIALOGUES,
    EXPECTED_SPLITS,
    clip_path,
    copy_corpus,
    csv_path,
    csv_text,
    default_rows,
    line_of,
    tone,
    write_csvs,
    write_meld,
)

REAL_MELD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "meld"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_meld(tmp_path_factory.mktemp("meld-template"))


@pytest.fixture
def corpus(template: Path, tmp_path: Path) -> Path:
    return copy_corpus(template, tmp_path)


def _by_id(result) -> dict:
    return {u.utt_id: u for u in result.utterances}


def _rewrite(corpus: Path, split: str, old: str, new: str) -> int:
    """Replace text in one CSV; the 1-based line of the change."""
    path = csv_path(corpus, split)
    line = line_of(path, old)
    path.write_bytes(path.read_bytes().replace(old.encode(), new.encode(), 1))
    return line


# --- a clean copy ----------------------------------------------------------------------------------
def test_counts_ids_order_and_times(corpus: Path) -> None:
    result = parse_meld(corpus)
    assert result.defects == []
    assert dict(Counter(u.split for u in result.utterances)) == EXPECTED_SPLITS
    for split, n in EXPECTED_DIALOGUES.items():
        assert len({u.dialogue_id for u in result.utterances if u.split == split}) == n
    rows = _by_id(result)
    # Utterance_ID orders the turns but is no position: dia1 has ids 0, 1, 3
    assert [(rows[f"train/dia1_utt{k}"].utt_index) for k in (0, 1, 3)] == [0, 1, 2]
    u = rows["train/dia1_utt0"]
    assert u.dialogue_id == "train/dia1" and u.dataset == "meld" and u.speaker == "Rachel"
    assert u.start == pytest.approx(14 * 60 + 2.118) and u.end == pytest.approx(14 * 60 + 4.305)  # one-digit hour
    assert rows["train/dia1_utt3"].end == pytest.approx(14 * 60 + 7.028)  # ",28": 28 ms, zero padding dropped
    assert rows["dev/dia0_utt0"].split == "validation"
    assert all(u.audio_ok and Path(u.audio_path).is_file() for u in result.utterances)
    quirks = result.info["time_quirks"]
    assert quirks["one_digit_hour_rows"] == {"train": 3, "validation": 2}
    assert quirks["utterance_id_gap_dialogues"] == {"train": 1, "validation": 0, "test": 0}
    assert [q["item"] for q in quirks["short_milliseconds"]] == ["train/dia1_utt3"]
    assert result.info["missing_splits"] == [] and result.info["long_clips"] == []
    assert len(result.info["source_files"]) == 3


def test_text_keeps_commas_quotes_and_typographic_apostrophes(corpus: Path) -> None:
    rows = _by_id(parse_meld(corpus, text_only=True))
    assert rows["train/dia0_utt2"].text == 'He said, "Hey, you’re not Bob."'
    assert rows["train/dia0_utt1"].text == "Well, that’s just great."
    assert rows["train/dia1_utt1"].text == "I’m so sorry…"


@pytest.mark.parametrize("protocol", ["meld7", "meld3"])
def test_protocols_label_the_same_utterances(corpus: Path, protocol: str) -> None:
    result = parse_meld(corpus, protocol=protocol, text_only=True)
    spec = PROTOCOLS[protocol]
    column = "emotion" if protocol == "meld7" else "sentiment"
    expected = {f"{s if s != 'validation' else 'dev'}/dia{r.dialogue}_utt{r.utterance}": getattr(r, column) for s, rows in default_rows().items() for r in rows}
    assert {u.utt_id: u.label for u in result.utterances} == expected
    assert all(u.label == u.label_raw for u in result.utterances)
    assert result.info["labels"] == list(spec.labels)


def test_protocol_label_orders() -> None:
    assert PROTOCOLS["meld7"].labels == EMOTIONS == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    assert PROTOCOLS["meld3"].labels == SENTIMENTS == ("neutral", "positive", "negative")
    for spec in PROTOCOLS.values():
        for split, counts in spec.expected_labels.items():
            assert sum(counts.values()) == spec.published()["splits"][split]
    assert MELDDataModule.protocols == {"meld7": list(EMOTIONS), "meld3": list(SENTIMENTS)}


# --- encodings and line ends -----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["bom", "lf", "cp1252", "mixed"])
def test_bom_line_ends_and_cp1252_decode_to_the_same_rows(tmp_path: Path, variant: str) -> None:
    write_csvs(tmp_path / "clean")
    rows = default_rows()["train"]
    text = csv_text(rows)
    raw = {
        "bom": b"\xef\xbb\xbf" + text.encode("utf-8"),
        "lf": csv_text(rows, line_end="\n").encode("utf-8"),
        "cp1252": text.encode("cp1252"),  # ’ as 0x92, … as 0x85, — as 0x97
        "mixed": text.encode("utf-8").replace("I’m".encode(), "I’m".encode("cp1252")),  # with a UTF-8 …
    }[variant]
    write_csvs(tmp_path / "odd")
    csv_path(tmp_path / "odd", "train").write_bytes(raw)
    clean = parse_meld(tmp_path / "clean", text_only=True)
    odd = parse_meld(tmp_path / "odd", text_only=True)
    assert odd.utterances == clean.utterances
    non_ascii = sum(not line.isascii() for line in text.splitlines())
    assert odd.info["encodings"]["train"] == {
        "bom": "utf-8-sig",
        "lf": "utf-8",
        "cp1252": f"utf-8 with {non_ascii} cp1252 line(s)",
        "mixed": "utf-8 with 1 cp1252 line(s)",
    }[variant]


# --- bad CSV rows ----------------------------------------------------------------------------------
BAD_ROWS = {
    # name: (old text in the train CSV, new text, expected words in the problem)
    "stray quote": ('Well, that’s just great.",', 'Well, that’s "just" great.",', "bad quoting"),
    "unclosed quote": ('"Well, that’s just great."', '"Well, that’s just great.', "bad quoting"),
    "wrong column count": ("Monica,disgust,negative,0,1,", "Monica,disgust,negative,0,1,extra,", "expected 11 columns, found 12"),
    "non-integer id": ("Monica,disgust,negative,0,1,", "Monica,disgust,negative,0,one,", "non-negative integer Dialogue_ID and Utterance_ID"),
    "bad time": ('"00:16:21,940"', '"00:16:21.940"', "StartTime and EndTime as h:mm:ss,mmm"),
    "emotion outside the label set": ("Monica,disgust,", "Monica,happy,", "label outside the label set: Emotion 'happy'"),
    "sentiment outside the label set": ("disgust,negative,0,1", "disgust,mixed,0,1", "label outside the label set: Sentiment 'mixed'"),
    "duplicate ids": ("Monica,disgust,negative,0,1,", "Monica,disgust,negative,0,0,", "duplicate (Dialogue_ID, Utterance_ID) = (0, 0): already at line 2"),
    "empty utterance": ('"Well, that’s just great."', '""', "empty utterance"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_rows_fail_with_file_and_line_or_are_listed_under_skip(tmp_path: Path, case: str) -> None:
    old, new, words = BAD_ROWS[case]
    write_csvs(tmp_path)
    line = _rewrite(tmp_path, "train", old, new)
    assert line == 3  # the second data row (Monica's)
    with pytest.raises(CorpusProblem) as err:
        parse_meld(tmp_path, text_only=True)
    assert err.value.defect.line == 3 and err.value.defect.file == str(csv_path(tmp_path, "train"))
    assert words in str(err.value) and "train_sent_emo.csv:3" in str(err.value)

    result = parse_meld(tmp_path, text_only=True, on_error="skip")
    assert [(d.line, words in d.problem) for d in result.defects] == [(3, True)]
    kept = [u for u in result.utterances if u.split == "train"]
    assert len(kept) == EXPECTED_SPLITS["train"] - 1  # only the bad row is left out; its neighbours are read
    assert "train/dia0_utt2" in {u.utt_id for u in kept}
    if case == "duplicate ids":
        assert _by_id(result)["train/dia0_utt0"].text.startswith("also I was")  # the first is kept


def test_quote_inside_an_unquoted_field_is_text(tmp_path: Path) -> None:
    write_csvs(tmp_path)
    _rewrite(tmp_path, "test", "Me too.", 'Me "too".')
    assert _by_id(parse_meld(tmp_path, text_only=True))["test/dia1_utt0"].text == 'Me "too".'


def test_quoted_field_with_a_line_break(tmp_path: Path) -> None:
    write_csvs(tmp_path)
    _rewrite(tmp_path, "train", '"Well, that’s just great."', '"Well,\r\nthat’s just great."')
    result = parse_meld(tmp_path, text_only=True)
    assert _by_id(result)["train/dia0_utt1"].text == "Well, that’s just great."
    assert _by_id(result)["train/dia0_utt2"].utt_index == 2


def test_bad_header_names_the_missing_columns(tmp_path: Path) -> None:
    write_csvs(tmp_path)
    _rewrite(tmp_path, "validation", "Sentiment,", "Feeling,")
    with pytest.raises(CorpusProblem, match=r"dev_sent_emo.csv:1: bad header.*missing Sentiment"):
        parse_meld(tmp_path, text_only=True)
    result = parse_meld(tmp_path, text_only=True, on_error="skip")
    assert "validation" not in {u.split for u in result.utterances} and len(result.defects) == 1


# --- media -----------------------------------------------------------------------------------------
def _break(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "corrupt (no moov atom)":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif how == "garbage":
        path.write_bytes(b"this is not an mp4 " * 20)
    elif how == "zero-length audio":  # the mp4 muxer drops an audio track without samples
        write_clip(path, np.zeros(0, dtype=np.float32))


MEDIA_PROBLEMS = {
    "missing": "missing clip",
    "empty": "empty clip file (0 bytes)",
    "corrupt (no moov atom)": "corrupt clip: the container does not open",
    "garbage": "corrupt clip: the container does not open",
    "zero-length audio": "no audio track",
}


@pytest.mark.parametrize("how", sorted(MEDIA_PROBLEMS))
def test_bad_clips_keep_their_rows_with_audio_ok_false(corpus: Path, how: str) -> None:
    path = clip_path(corpus, "validation", 0, 1)
    _break(path, how)
    result = parse_meld(corpus)  # on_error="fail": a media problem never fails the run
    assert dict(Counter(u.split for u in result.utterances)) == EXPECTED_SPLITS
    u = _by_id(result)["dev/dia0_utt1"]
    assert (u.audio_ok, u.audio_path, u.utt_index) == (False, str(path), 1)
    [defect] = result.defects
    assert defect.item == "dev/dia0_utt1" and defect.file == str(path)
    assert MEDIA_PROBLEMS[how] in defect.problem and defect.problem.endswith("row kept with audio_ok=False")
    assert result.info["audio_not_ok"] == 1
    assert sum(u.audio_ok for u in result.utterances) == sum(EXPECTED_SPLITS.values()) - 1


def test_truncated_clip_with_its_index_in_front(corpus: Path) -> None:
    # moov first (faststart): the header opens, but the audio data runs past the end of the file
    path = clip_path(corpus, "train", 2, 1)
    import av

    with av.open(str(path)) as src, av.open(str(path) + ".fs.mp4", "w", options={"movflags": "+faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    data = Path(str(path) + ".fs.mp4").read_bytes()
    Path(str(path) + ".fs.mp4").unlink()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert "truncated clip" in (check_clip(path).problem or "")
    [defect] = parse_meld(corpus).defects
    assert defect.item == "train/dia2_utt1" and "truncated clip: its audio data runs to byte" in defect.problem


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 2), (48000, 1)])
def test_stereo_44k_48k_clips_decode_to_16k_mono(corpus: Path, rate: int, channels: int) -> None:
    path = clip_path(corpus, "test", 0, 0)
    write_clip(path, tone(1.0), out_rate=rate, channels=channels)
    result = parse_meld(corpus, deep=True)
    assert result.defects == []
    wave = load_audio(path)
    assert wave.ndim == 1 and abs(wave.numel() - 16000) < 0.1 * 16000  # AAC priming adds a few ms


def test_long_clips_are_listed_and_centre_cropped_on_load(corpus: Path) -> None:
    path = clip_path(corpus, "train", 0, 0)
    write_clip(path, tone(3.0))
    result = parse_meld(corpus, max_seconds=2.0)
    assert result.defects == [] and _by_id(result)["train/dia0_utt0"].audio_ok
    [long] = result.info["long_clips"]
    assert long["item"] == "train/dia0_utt0" and long["seconds"] > 2.0
    assert load_audio(path, max_seconds=2.0).numel() == 32000
    assert parse_meld(corpus, max_seconds=None).info["long_clips"] == []
    assert parse_meld(corpus, deep=True, max_seconds=2.0).info["long_clips"][0]["item"] == "train/dia0_utt0"


def test_deep_check_decodes_every_clip(corpus: Path) -> None:
    clean = parse_meld(corpus, deep=True)
    assert clean.defects == [] and clean.info["deep_audio_check"] is True
    _break(clip_path(corpus, "test", 1, 2), "garbage")
    assert [d.item for d in parse_meld(corpus, deep=True).defects] == ["test/dia1_utt2"]


def test_extra_clips_and_other_files_are_counted_not_errors(corpus: Path) -> None:
    shutil.copyfile(clip_path(corpus, "validation", 0, 0), clip_path(corpus, "validation", 66, 9))
    test_dir = clip_path(corpus, "test", 0, 0).parent
    (test_dir / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07")
    shutil.copyfile(clip_path(corpus, "test", 0, 0), test_dir / "final_videos_testdia101_utt0.mp4")
    result = parse_meld(corpus)
    assert result.defects == []
    assert result.info["extra_clips"]["validation"] == {"count": 1, "examples": ["dev/dia66_utt9"]}
    assert result.info["other_files"]["test"]["count"] == 2


# --- layouts and missing pieces --------------------------------------------------------------------
def test_text_only_needs_no_media(tmp_path: Path) -> None:
    corpus = write_meld(tmp_path, clips=False)
    result = parse_meld(corpus, text_only=True)
    assert result.defects == [] and all(u.audio_path is None for u in result.utterances)
    with pytest.raises(FileNotFoundError, match=r"no clip folder train_splits/.*text_only"):
        parse_meld(corpus)
    (corpus / "train.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"train.tar.gz is there: extract it first"):
        parse_meld(corpus)


def test_some_splits_missing_are_reported(tmp_path: Path) -> None:
    write_csvs(tmp_path, {"train": default_rows()["train"]})
    result = parse_meld(tmp_path, text_only=True)
    assert {u.split for u in result.utterances} == {"train"}
    assert result.info["missing_splits"] == ["validation", "test"]
    assert any("no dev_sent_emo.csv found" in w for w in result.info["warnings"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="expected the label CSVs"):
        parse_meld(empty, text_only=True)


def test_nested_layout_parent_root_and_csv_dir(template: Path, tmp_path: Path) -> None:
    # MELD.Raw/train/train_splits + MELD.Raw/train/train_sent_emo.csv, found from the parent folder
    raw = tmp_path / "MELD.Raw"
    for split, meld in (("train", "train"), ("validation", "dev"), ("test", "test")):
        folder = clip_path(template, split, 0, 0).parent.name
        shutil.copytree(template / folder, raw / meld / folder)
        shutil.copyfile(csv_path(template, split), raw / meld / csv_path(template, split).name)
    nested = parse_meld(tmp_path)
    assert nested.defects == [] and len(nested.utterances) == sum(EXPECTED_SPLITS.values())
    # csv_dir is searched first
    override = tmp_path / "csvs"
    rows = default_rows()
    rows["train"][0].text = "from csv_dir"
    write_csvs(override, rows)
    assert _by_id(parse_meld(tmp_path, csv_dir=override))["train/dia0_utt0"].text == "from csv_dir"


# --- the data module and `meritsl prepare meld` ------------------------------------------------------
def test_data_module_and_prepare(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _break(clip_path(corpus, "train", 1, 3), "corrupt (no moov atom)")
    dm = MELDDataModule(root=str(corpus), protocol="meld3")
    assert dm.num_classes == 3 and dm.split_names() == ["train", "validation", "test"]
    train = dm.split_data("train")
    assert [u.utt_id for u in train.rows[3:6]] == ["train/dia1_utt0", "train/dia1_utt1", "train/dia1_utt3"]
    assert len(train.conversations) == 3

    assert prepare(["meld", "--root", str(corpus), "--out", str(tmp_path / "out"), "--protocol", "meld7"]) == 0
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(rows) == sum(EXPECTED_SPLITS.values()) and [u.utt_id for u in rows if not u.audio_ok] == ["train/dia1_utt3"]
    assert report["splits"]["train"]["conversations"] == 3 and report["labels"] == list(EMOTIONS)
    assert report["defects"][0]["item"] == "train/dia1_utt3" and report["audio_not_ok"] == 1
    assert report["published"]["splits"] == {"train": 9989, "validation": 1109, "test": 2610}
    assert "meld (meld7): 18 utterances" in capsys.readouterr().out

    # a bad row stops `prepare` with exit 2 under --on-error fail
    _rewrite(corpus, "test", "Me too.", '"Me too.')
    assert prepare(["meld", "--root", str(corpus), "--out", str(tmp_path / "out2"), "--text-only"]) == 2


# --- the real label CSVs ---------------------------------------------------------------------------
@pytest.mark.skipif(not REAL_MELD.is_dir(), reason=f"real MELD CSVs not found at {REAL_MELD}")
@pytest.mark.parametrize("protocol", ["meld7", "meld3"])
def test_real_meld_csvs(protocol: str) -> None:
    result = parse_meld(REAL_MELD, protocol=protocol, text_only=True)
    assert result.defects == []
    spec = PROTOCOLS[protocol]
    present = [s for s in ("train", "validation", "test") if s not in result.info["missing_splits"]]
    assert present[:2] == ["train", "validation"]
    for split in present:
        rows = [u for u in result.utterances if u.split == split]
        assert len(rows) == {"train": 9989, "validation": 1109, "test": 2610}[split]
        assert len({u.dialogue_id for u in rows}) == {"train": 1038, "validation": 114, "test": 280}[split]
        assert dict(Counter(u.label for u in rows)) == dict(spec.expected_labels[split])
    texts = [u.text for u in result.utterances]
    assert all(t and t == t.strip() for t in texts)
    for bad in ("\ufffd", "â€", "Ã", "\x92"):
        assert not any(bad in t for t in texts), bad
    apostrophes = sum(t.count("’") for t in texts)
    assert apostrophes > 3000  # 3 547 in train alone
    rows = _by_id(result)
    assert rows["train/dia0_utt0"].text == "also I was the point person on my company’s transition from the KL-5 to GR-6 system."
    assert rows["dev/dia110_utt7"].speaker == "Phoebe" and rows["train/dia125_utt3"].speaker == "Ross"
    assert result.info["time_quirks"]["one_digit_hour_rows"] == {"train": 2412, "validation": 270}
    assert result.info["time_quirks"]["utterance_id_gap_dialogues"] == {"train": 72, "validation": 2}
    # Utterance_ID gaps never leave holes in utt_index
    by_dialogue: dict[str, list[int]] = {}
    for u in result.utterances:
        by_dialogue.setdefault(u.dialogue_id, []).append(u.utt_index)
    assert all(sorted(v) == list(range(len(v))) for v in by_dialogue.values())
    assert not any("train" in w or "validation" in w for w in result.info["warnings"] if "published" in w)
