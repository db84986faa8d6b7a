"""MSP-Podcast parser, data module and `meritsl prepare msp_podcast` on tiny hand-built releases."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_modules import MSPPodcastDataModule
from data_modules.batching import IGNORE_INDEX
from data_modules.manifest import CorpusProblem, Defect, ParseResult, read_manifest
from data_modules.msp_podcast_parser import (
    EMO_CLASSES,
    PROTOCOLS,
    UNASSIGNED,
    conversation_key,
    parse_msp_podcast,
)
from meritsl_lightning.commands.prepare import CORPORA
from meritsl_lightning.commands.prepare import main as prepare
from tests.fixtures.msp_layout import (
    EXPECTED_ORDER,
    EXPECTED_SPLITS,
    EXPECTED_TRANSCRIPTS,
    Segment,
    default_segments,
    edited,
    labels_csv,
    labels_json,
    line_of,
    whiser_segments,
    write_msp,
)

KEPT = "MSP-PODCAST_0023_0048"  # Development, with a two-line release transcript
TOTAL = sum(EXPECTED_SPLITS.values())


def _splits(result: ParseResult) -> dict[str, int]:
    return dict(Counter(u.split for u in result.utterances))


def _by_id(result: ParseResult) -> dict:
    return {u.utt_id: u for u in result.utterances}


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


# ---- the default release ---------------------------------------------------------------------------


def test_counts_splits_and_labels(tmp_path: Path) -> None:
    write_msp(tmp_path)
    result = parse_msp_podcast(tmp_path)
    assert result.defects == [] and result.info["warnings"] == []
    assert _splits(result) == EXPECTED_SPLITS
    assert {u.label_raw for u in result.utterances} == set(EMO_CLASSES)
    assert all(u.label == EMO_CLASSES[u.label_raw] for u in result.utterances)
    assert result.info["labels"] == list(PROTOCOLS["msp_all"].labels) == [
        "angry", "sad", "happy", "surprise", "fear", "disgust", "contempt", "neutral", "other", "no_agreement",
    ]  # fmt: skip
    assert result.info["split_source"] == "Split_Set"
    assert result.info["labels_source"]["file"] == "Labels/labels_consensus.csv"
    assert result.info["labels_source"]["json_comparison"] == {"compared": True, "differences": 0, "examples": []}
    assert result.info["release_transcripts"] == EXPECTED_TRANSCRIPTS
    assert set(result.info["source_files"]) == {"Labels/labels_consensus.csv", "Labels/labels_consensus.json"}


def test_podcasts_are_conversations_in_segment_order(tmp_path: Path) -> None:
    write_msp(tmp_path)
    result = parse_msp_podcast(tmp_path)
    order: dict[str, list[tuple[int, str]]] = {}
    for u in result.utterances:
        order.setdefault(u.dialogue_id, []).append((u.utt_index, u.utt_id))
    assert {d: [i for _, i in sorted(rows)] for d, rows in order.items()} == EXPECTED_ORDER
    assert all([i for i, _ in sorted(rows)] == list(range(len(rows))) for rows in order.values())
    # Podcast 0001 spans two splits; its indices count over the whole podcast.
    rows = _by_id(result)
    assert rows["MSP-PODCAST_0001_0010"].split == "test1" and rows["MSP-PODCAST_0001_0010"].utt_index == 2


def test_row_fields(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    rows = _by_id(parse_msp_podcast(tmp_path))
    kept = rows[KEPT]
    assert (kept.dataset, kept.split, kept.dialogue_id, kept.label, kept.label_raw) == (
        "msp_podcast", "validation", "0023", "surprise", "U",
    )  # fmt: skip
    assert kept.speaker == "1187" and kept.text == "wait, really? I had no idea"
    assert kept.audio_path == str((release / "Audios" / f"{KEPT}.wav").resolve()) and kept.audio_ok
    assert kept.start is None and kept.end is None and kept.score is None
    assert rows["MSP-PODCAST_0023_0050"].speaker is None  # SpkrID Unknown
    assert rows["MSP-PODCAST_0023_0051"].text == ""  # an empty release transcript
    assert rows["MSP-PODCAST_0001_0011"].text == ""  # no release transcript: Whisper fills it later


def test_conversation_key() -> None:
    assert conversation_key("MSP-PODCAST_0153_0042") == ("0153", (42,))
    assert conversation_key("MSP-PODCAST_1188_0020_0001") == ("1188", (20, 1))
    assert conversation_key("017-046b.1-2_7") == ("017-046b.1-2", (7,))
    assert conversation_key("oddname") == ("oddname", ())


def test_root_may_be_the_release_or_its_parent(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    assert parse_msp_podcast(tmp_path).utterances == parse_msp_podcast(release).utterances


def test_two_releases_under_one_root_is_ambiguous(tmp_path: Path) -> None:
    write_msp(tmp_path)
    write_msp(tmp_path, release="MSP-PODCAST-Publish-1.12")
    with pytest.raises(ValueError, match="several releases found"):
        parse_msp_podcast(tmp_path)


def test_missing_root_labels_or_audio_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected a directory"):
        parse_msp_podcast(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="found neither"):
        parse_msp_podcast(tmp_path)
    release = write_msp(tmp_path, csv=False, json_labels=False)
    with pytest.raises(FileNotFoundError, match="labels_consensus.csv"):
        parse_msp_podcast(release)
    release = write_msp(tmp_path / "b")
    for wav in (release / "Audios").iterdir():
        wav.unlink()
    (release / "Audios").rmdir()
    with pytest.raises(FileNotFoundError, match="--text-only"):
        parse_msp_podcast(release)
    assert len(parse_msp_podcast(release, text_only=True).utterances) == TOTAL


def test_unknown_protocol_and_policy(tmp_path: Path) -> None:
    write_msp(tmp_path)
    with pytest.raises(ValueError, match="unknown MSP-Podcast protocol"):
        parse_msp_podcast(tmp_path, protocol="msp4")
    with pytest.raises(ValueError, match="on_error"):
        parse_msp_podcast(tmp_path, on_error="ignore")  # type: ignore[arg-type]


def test_text_only_needs_no_audio(tmp_path: Path) -> None:
    write_msp(tmp_path, edited(default_segments(), KEPT, wav=False))
    result = parse_msp_podcast(tmp_path, text_only=True)
    assert result.defects == [] and len(result.utterances) == TOTAL
    assert all(u.audio_path is None for u in result.utterances)
    assert _by_id(result)[KEPT].text == "wait, really? I had no idea"
    assert result.info["text_only"] is True


def test_existence_checks_do_not_stat_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Audio and transcripts are found with one directory listing each, so the stat count does not grow with the corpus."""

    def stats_for(segments: list[Segment], folder: Path) -> int:
        write_msp(folder, segments)
        calls = 0
        real_stat = os.stat

        def counting_stat(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            nonlocal calls
            calls += 1
            return real_stat(*args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(os, "stat", counting_stat)
            assert len(parse_msp_podcast(folder).utterances) == len(segments)
        return calls

    small = default_segments()
    large = [
        Segment(f"MSP-PODCAST_{p:04d}_{n:04d}.wav", "N", 3.0, 4.0, 3.0, "7", "Male", "Train", "hi")
        for p in range(1, 9) for n in range(1, 26)
    ]  # fmt: skip
    assert stats_for(large, tmp_path / "large") == stats_for(small, tmp_path / "small") < 20


# ---- CSV and JSON ----------------------------------------------------------------------------------


def test_csv_and_json_give_the_same_manifest(tmp_path: Path) -> None:
    both = parse_msp_podcast(write_msp(tmp_path / "both"))
    csv_only = parse_msp_podcast(write_msp(tmp_path / "csv", json_labels=False))
    json_only = parse_msp_podcast(write_msp(tmp_path / "json", csv=False))
    assert json_only.info["labels_source"] == {"file": "Labels/labels_consensus.json", "rows": TOTAL, "withheld": 0}
    assert "json_comparison" not in csv_only.info["labels_source"]

    def strip(result: ParseResult) -> list[tuple]:
        return [(u.utt_id, u.split, u.dialogue_id, u.utt_index, u.label, u.speaker, u.text) for u in result.utterances]

    assert strip(both) == strip(csv_only) == strip(json_only)
    assert json_only.defects == [] and json_only.info["warnings"] == []


def test_json_types_and_key_order_do_not_matter(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    obj = json.loads(labels_json(release).read_text())
    for entry in obj.values():
        if entry["SpkrID"].isdigit():
            entry["SpkrID"] = int(entry["SpkrID"])  # numbers instead of strings
        entry["EmoAct"] = str(entry["EmoAct"])
    reordered = {name: dict(reversed(list(entry.items()))) for name, entry in reversed(list(obj.items()))}
    labels_json(release).write_text(json.dumps(reordered, indent=2))
    result = parse_msp_podcast(tmp_path)
    assert result.info["labels_source"]["json_comparison"]["differences"] == 0
    assert result.info["warnings"] == []


def test_csv_json_differences_are_reported_not_fatal(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    obj = json.loads(labels_json(release).read_text())
    obj[f"{KEPT}.wav"]["EmoClass"] = "H"
    obj["MSP-PODCAST_0153_0042.wav"]["EmoVal"] = 6.5
    del obj["MSP-PODCAST_0200_0002.wav"]
    obj["MSP-PODCAST_9999_0001.wav"] = dict(obj["MSP-PODCAST_0200_0001.wav"])
    labels_json(release).write_text(json.dumps(obj, indent=4))
    result = parse_msp_podcast(tmp_path)  # on_error="fail": still no exception
    assert result.defects == [] and len(result.utterances) == TOTAL
    assert _by_id(result)[KEPT].label_raw == "U"  # the CSV is used
    comparison = result.info["labels_source"]["json_comparison"]
    assert comparison["differences"] == 4
    text = "\n".join(comparison["examples"])
    assert f"{KEPT}.wav: EmoClass 'U' in labels_consensus.csv, 'H' in labels_consensus.json" in text
    assert "MSP-PODCAST_0153_0042.wav: EmoVal 2.2 in labels_consensus.csv, 6.5 in labels_consensus.json" in text
    assert "MSP-PODCAST_0200_0002.wav: in labels_consensus.csv, not in labels_consensus.json" in text
    assert "MSP-PODCAST_9999_0001.wav: in labels_consensus.json, not in labels_consensus.csv" in text
    assert any("differ in 4 places" in w for w in result.info["warnings"])


def test_broken_json_twin_is_a_warning_when_the_csv_exists(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    labels_json(release).write_text('{"MSP-PODCAST_0001_0008.wav": {')
    result = parse_msp_podcast(tmp_path)
    assert len(result.utterances) == TOTAL
    assert result.info["labels_source"]["json_comparison"]["compared"] is False
    assert any("not compared" in w for w in result.info["warnings"])


def test_unusable_labels_file_is_fatal_under_both_policies(tmp_path: Path) -> None:
    release = write_msp(tmp_path, csv=False)
    labels_json(release).write_text('{\n  "a.wav": {"EmoClass": "N"},\n  "b.wav": {"EmoClass": \n}')
    for on_error in ("fail", "skip"):
        with pytest.raises(ValueError, match=r"labels_consensus.json:4: not valid JSON"):
            parse_msp_podcast(tmp_path, on_error=on_error)
    labels_json(release).write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected an object"):
        parse_msp_podcast(tmp_path)
    release = write_msp(tmp_path / "b", json_labels=False)
    _replace(labels_csv(release), "FileName,EmoClass", "File,Class")
    with pytest.raises(ValueError, match=r"labels_consensus.csv:1: expected the header FileName,EmoClass"):
        parse_msp_podcast(release, on_error="skip")


# ---- splits ----------------------------------------------------------------------------------------


def test_partitions_file_when_labels_have_no_split(tmp_path: Path) -> None:
    write_msp(tmp_path, split_column=False, partitions=True)
    result = parse_msp_podcast(tmp_path)
    assert result.defects == [] and _splits(result) == EXPECTED_SPLITS
    assert result.info["split_source"] == "Partitions.txt"
    assert result.info["partitions"] == {"file": "Partitions.txt", "entries": TOTAL, "split_set_disagreements": 0}
    assert result.info["source_files"]["Partitions.txt"]
    json_only = parse_msp_podcast(write_msp(tmp_path / "json", csv=False, split_column=False, partitions=True))
    assert _splits(json_only) == EXPECTED_SPLITS


def test_no_split_anywhere_is_unassigned(tmp_path: Path) -> None:
    write_msp(tmp_path, split_column=False)
    result = parse_msp_podcast(tmp_path)
    assert _splits(result) == {UNASSIGNED: TOTAL} and result.defects == []
    assert result.info["split_source"] == "none"
    assert any(f"{TOTAL} utterances have no split value" in w for w in result.info["warnings"])


def test_split_set_wins_over_partitions_and_disagreements_are_counted(tmp_path: Path) -> None:
    release = write_msp(tmp_path, partitions=True)
    _replace(release / "Partitions.txt", f"Development; {KEPT}.wav", f"Train; {KEPT}.wav")
    result = parse_msp_podcast(tmp_path)
    assert _by_id(result)[KEPT].split == "validation"
    assert result.info["partitions"]["split_set_disagreements"] == 1


def test_unknown_and_empty_split_values_are_kept_and_counted(tmp_path: Path) -> None:
    segments = edited(default_segments(), "0200_0001", split="NA")
    segments = edited(segments, "0200_0002", split="Test4")
    segments = edited(segments, "0311_0005", split="")
    write_msp(tmp_path, segments)
    result = parse_msp_podcast(tmp_path)  # not fatal under on_error="fail"
    assert result.defects == []
    rows = _by_id(result)
    assert [rows[f"MSP-PODCAST_{s}"].split for s in ("0200_0001", "0200_0002", "0311_0005")] == ["NA", "Test4", UNASSIGNED]
    assert result.info["unknown_split_values"] == {"NA": 1, "Test4": 1}
    assert result.info["split_values"]["(none)"] == 1
    assert any("'NA' x1, 'Test4' x1" in w for w in result.info["warnings"])


def test_whiser_style_release(tmp_path: Path) -> None:
    """WHiSER's label files: the same header, other names, Split_Set NA, unknown speakers."""
    write_msp(tmp_path, whiser_segments(), release=None)
    result = parse_msp_podcast(tmp_path)
    assert result.defects == []
    assert _splits(result) == {"NA": 5} and result.info["unknown_split_values"] == {"NA": 5}
    order = [(u.dialogue_id, u.utt_index, u.utt_id) for u in result.utterances]
    assert order == [
        ("101-020.1-2", 0, "101-020.1-2_2"), ("101-020.1-2", 1, "101-020.1-2_14"), ("101-020.1-2", 2, "101-020.1-2_40"),
        ("117-003b.1-2", 0, "117-003b.1-2_0"), ("117-003b.1-2", 1, "117-003b.1-2_7"),
    ]  # fmt: skip
    assert all(u.speaker is None for u in result.utterances)
    assert result.info["nonstandard_names"] == 5


# ---- audio without labels, withheld labels, junk ----------------------------------------------------


@pytest.mark.parametrize("partitions", [False, True])
def test_audio_without_labels_row_is_kept_unlabelled(tmp_path: Path, partitions: bool) -> None:
    write_msp(tmp_path, edited(default_segments(), KEPT, labelled=False), partitions=partitions)
    result = parse_msp_podcast(tmp_path)
    assert result.defects == [] and len(result.utterances) == TOTAL
    row = _by_id(result)[KEPT]
    assert (row.label, row.label_raw, row.speaker) == (None, None, None)
    assert row.split == ("validation" if partitions else UNASSIGNED)
    assert row.text == "wait, really? I had no idea" and row.utt_index == 0
    assert result.info["unlabelled_audio"] == {"count": 1, "examples": [f"{KEPT}.wav"]}
    assert any("have no labels row" in w for w in result.info["warnings"])
    assert parse_msp_podcast(tmp_path, text_only=True).info["unlabelled_audio"]["count"] == 0


def test_withheld_label_is_none_not_a_defect(tmp_path: Path) -> None:
    write_msp(tmp_path, edited(default_segments(), "0311_0006", emo=""))
    result = parse_msp_podcast(tmp_path)
    row = _by_id(result)["MSP-PODCAST_0311_0006"]
    assert (row.label, row.label_raw, row.split) == (None, None, "test3")
    assert result.defects == [] and result.info["labels_source"]["withheld"] == 1


def test_junk_files_are_ignored(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    (release / "Audios" / f"._{KEPT}.wav").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (release / "Audios" / ".DS_Store").write_bytes(b"\x00")
    (release / "Audios" / "extra").mkdir()
    (release / "Transcripts" / "MSP-PODCAST_7777_0001.txt").write_text("no such segment")
    result = parse_msp_podcast(tmp_path)
    assert result.defects == [] and len(result.utterances) == TOTAL
    assert result.info["ignored_audio_entries"] == 3
    assert result.info["release_transcripts"]["orphans"] == 1


# ---- bad input: each case corrupts one thing; (file, line, item, change in row count) ----------------

Case = Callable[[Path], tuple[Path, int | None, str, int]]


def case_missing_wav(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path, edited(default_segments(), KEPT, wav=False))
    return labels_csv(release), line_of(labels_csv(release), KEPT), f"{KEPT}.wav", -1


def case_short_csv_row(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path)
    _replace(labels_csv(release), ",1187,Female,Development\n", ",1187,Female\n")
    return labels_csv(release), line_of(labels_csv(release), KEPT), f"{KEPT}.wav", -1


def case_unknown_class(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path, edited(default_segments(), KEPT, emo="Z"))
    return labels_csv(release), line_of(labels_csv(release), KEPT), f"{KEPT}.wav", -1


def case_non_numeric_attribute(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path)
    _replace(labels_csv(release), f"{KEPT}.wav,U,4.6,", f"{KEPT}.wav,U,high,")
    return labels_csv(release), line_of(labels_csv(release), KEPT), f"{KEPT}.wav", -1


def case_duplicate_csv_row(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path)
    line = next(x for x in labels_csv(release).read_text().splitlines() if x.startswith(KEPT))
    labels_csv(release).write_text(labels_csv(release).read_text() + line.replace(",U,", ",N,") + "\n")
    return labels_csv(release), TOTAL + 2, f"{KEPT}.wav", 0  # the first row is kept


def case_json_unknown_class(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path, edited(default_segments(), KEPT, emo="happy"), csv=False)
    return labels_json(release), line_of(labels_json(release), KEPT), f"{KEPT}.wav", -1


def case_json_duplicate_key(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path, csv=False)
    text = labels_json(release).read_text()
    entry = json.dumps({"EmoClass": "N", "EmoAct": 3.0, "EmoDom": 3.0, "EmoVal": 3.0, "SpkrID": "1", "Gender": "Male",
                        "Split_Set": "Train"})  # fmt: skip
    labels_json(release).write_text(text[:-2] + f',\n    "{KEPT}.wav": {entry}\n}}')
    return labels_json(release), len(labels_json(release).read_text().splitlines()) - 1, f"{KEPT}.wav", 0


def case_json_malformed_entry(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path, csv=False)
    obj = json.loads(labels_json(release).read_text())
    obj[f"{KEPT}.wav"] = ["U", 4.6]
    labels_json(release).write_text(json.dumps(obj, indent=4))
    return labels_json(release), line_of(labels_json(release), KEPT), f"{KEPT}.wav", -1


def case_partitions_malformed_line(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path, split_column=False, partitions=True)
    _replace(release / "Partitions.txt", f"Development; {KEPT}.wav", f"Development {KEPT}.wav")
    line = line_of(release / "Partitions.txt", KEPT)
    return release / "Partitions.txt", line, f"Partitions.txt line {line}", 0  # the row stays, unassigned


def case_partitions_duplicate(tmp_path: Path) -> tuple[Path, int | None, str, int]:
    release = write_msp(tmp_path, split_column=False, partitions=True)
    path = release / "Partitions.txt"
    path.write_text(path.read_text() + f"Test1; {KEPT}.wav\n")
    return path, TOTAL + 1, f"{KEPT}.wav", 0


CASES: dict[str, tuple[Case, str]] = {
    "missing wav": (case_missing_wav, "missing audio file: expected"),
    "short CSV row": (case_short_csv_row, "malformed row: expected 8 comma-separated fields"),
    "unknown EmoClass": (case_unknown_class, "unknown EmoClass 'Z'"),
    "non-numeric EmoAct": (case_non_numeric_attribute, "EmoAct should be a number (1-7), found 'high'"),
    "duplicate CSV row": (case_duplicate_csv_row, "duplicate file name: already labelled at"),
    "JSON unknown EmoClass": (case_json_unknown_class, "unknown EmoClass 'happy'"),
    "JSON duplicate key": (case_json_duplicate_key, "duplicate file name: already labelled at"),
    "JSON malformed entry": (case_json_malformed_entry, "malformed entry: expected {EmoClass"),
    "Partitions malformed line": (case_partitions_malformed_line, "malformed line: expected 'SPLIT; FILE.wav'"),
    "Partitions duplicate": (case_partitions_duplicate, "duplicate file name: already listed at line"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_naming_file_line_and_item(tmp_path: Path, case: str) -> None:
    corrupt, problem = CASES[case]
    file, line, item, _ = corrupt(tmp_path)
    with pytest.raises(CorpusProblem) as info:
        parse_msp_podcast(tmp_path, on_error="fail")
    message = str(info.value)
    assert f"{file.resolve()}:{line}" in message
    assert problem in message and f"(item {item})" in message


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_skipped_and_listed(tmp_path: Path, case: str) -> None:
    corrupt, problem = CASES[case]
    file, line, item, change = corrupt(tmp_path)
    result = parse_msp_podcast(tmp_path, on_error="skip")
    assert len(result.defects) == 1, result.defects
    defect = result.defects[0]
    assert isinstance(defect, Defect)
    assert (defect.item, Path(defect.file), defect.line) == (item, file.resolve(), line)
    assert problem in defect.problem
    assert len(result.utterances) == TOTAL + change
    kept = [u for u in result.utterances if u.utt_id == KEPT]
    assert len(kept) == (1 if change == 0 else 0)
    rows = [u for u in result.utterances if u.dialogue_id == "0023"]
    assert [u.utt_index for u in rows] == list(range(len(rows)))
    # An item left out by a defect does not come back as "audio without a labels row".
    assert result.info["unlabelled_audio"]["count"] == 0


def test_duplicate_keeps_the_first_row(tmp_path: Path) -> None:
    case_duplicate_csv_row(tmp_path)
    assert _by_id(parse_msp_podcast(tmp_path, on_error="skip"))[KEPT].label_raw == "U"


def test_malformed_file_name(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    _replace(labels_csv(release), f"{KEPT}.wav,", f"{KEPT}.mp3,")
    with pytest.raises(CorpusProblem, match=r"malformed FileName 'MSP-PODCAST_0023_0048.mp3'") as info:
        parse_msp_podcast(tmp_path)
    assert f"labels_consensus.csv:{line_of(labels_csv(release), KEPT)}" in str(info.value)
    result = parse_msp_podcast(tmp_path, on_error="skip")
    assert [d.item for d in result.defects] == [f"{KEPT}.mp3"]
    assert _by_id(result)[KEPT].label is None  # its wav has no valid labels row: kept unlabelled


def _corrupt_wavs(release: Path) -> dict[str, str]:
    """Three broken wavs -> the problem each must be reported with under `deep`."""
    audio = release / "Audios"
    (audio / "MSP-PODCAST_0001_0008.wav").write_bytes(b"")
    (audio / "MSP-PODCAST_0153_0042.wav").write_bytes(b"RIFF" + b"\x13" * 60)
    nan = np.zeros(1600, dtype="float32")
    nan[100] = np.nan
    sf.write(audio / "MSP-PODCAST_0311_0005.wav", nan, 16000, subtype="FLOAT")
    return {
        "MSP-PODCAST_0001_0008.wav": "unreadable audio file",
        "MSP-PODCAST_0153_0042.wav": "unreadable audio file",
        "MSP-PODCAST_0311_0005.wav": "non-finite samples",
    }


def test_deep_check_decodes_audio(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    expected = _corrupt_wavs(release)
    assert parse_msp_podcast(tmp_path).defects == []  # listing only: no file is opened
    with pytest.raises(CorpusProblem) as info:
        parse_msp_podcast(tmp_path, deep=True)
    assert str(release.resolve() / "Audios" / "MSP-PODCAST_0001_0008.wav") in str(info.value)
    result = parse_msp_podcast(tmp_path, deep=True, on_error="skip")
    assert {d.item: d.problem for d in result.defects}.keys() == expected.keys()
    assert all(expected[d.item] in d.problem for d in result.defects)
    assert len(result.utterances) == TOTAL - 3
    assert result.info["audio_formats"] == {"16000 Hz x 1 ch": TOTAL - 3}


def test_deep_check_warns_about_other_formats(tmp_path: Path) -> None:
    release = write_msp(tmp_path)
    sf.write(release / "Audios" / f"{KEPT}.wav", np.zeros((800, 2)), 8000, subtype="PCM_16")
    result = parse_msp_podcast(tmp_path, deep=True)
    assert result.info["audio_formats"] == {"16000 Hz x 1 ch": TOTAL - 1, "8000 Hz x 2 ch": 1}
    assert any("not 16 kHz mono" in w for w in result.info["warnings"])


# ---- data module -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("msp")
    audio_only = Segment("MSP-PODCAST_0023_0060.wav", "", 0, 0, 0, "", "", "", labelled=False)
    return write_msp(folder, default_segments() + [audio_only])


def test_data_module_splits_and_labels(release: Path) -> None:
    dm = MSPPodcastDataModule(root=str(release))
    assert dm.split_names() == ["train", "validation", "test", "test2", "test3", UNASSIGNED]
    sizes = {s: len(dm.split_data(s).rows) for s in dm.split_names()}
    assert sizes == {"train": 4, "validation": 3, "test": 3, "test2": 2, "test3": 2, UNASSIGNED: 1}
    assert dm.num_classes == 10 and dm.label_names[0] == "angry"
    assert dm.split_data(UNASSIGNED).labels.tolist() == [IGNORE_INDEX]  # audio without a labels row
    keep = MSPPodcastDataModule(root=str(release), test_split=None)
    assert "test1" in keep.split_names() and "test" not in keep.split_names()
    with pytest.raises(ValueError, match="root"):
        MSPPodcastDataModule()


def test_data_module_conversation_batches(release: Path) -> None:
    dm = MSPPodcastDataModule(root=str(release), batch_size=8)
    dm.use_batch_level("conversation")
    batch = next(iter(dm.train_dataloader()))
    rows = dm.split_data("train").rows
    for b, ids in enumerate(batch["utt_ids"]):
        positions = batch["index"][b, : len(ids)].tolist()
        assert [rows[p].utt_id for p in positions] == ids
        indices = [rows[p].utt_index for p in positions]
        assert indices == sorted(indices)


# ---- meritsl prepare msp_podcast -------------------------------------------------------------------


def test_prepare_registered() -> None:
    entry = CORPORA["msp_podcast"]
    assert entry.parse is parse_msp_podcast and entry.default_protocol == "msp_all"


def test_prepare_writes_manifest_and_report(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare(["msp_podcast", "--root", str(release.parent), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["corpus"] == "msp_podcast" and report["protocol"] == "msp_all"
    assert list(report["splits"]) == ["train", "validation", "test1", "test2", "test3", UNASSIGNED]
    assert report["splits"]["train"] == {"utterances": 4, "conversations": 1,
                                         "labels": {"angry": 1, "happy": 1, "neutral": 1, "sad": 1}}  # fmt: skip
    assert report["defects"] == [] and report["unlabelled_audio"]["count"] == 1
    rows = read_manifest(tmp_path / "manifest.jsonl")
    assert len(rows) == TOTAL + 1
    dm = MSPPodcastDataModule(manifest=str(tmp_path / "manifest.jsonl"))
    assert len(dm.split_data("test").rows) == 3
    captured = capsys.readouterr()
    assert f"msp_podcast (msp_all): {TOTAL + 1} utterances" in captured.out
    assert "have no labels row" in captured.err


def test_prepare_bad_item_exit_2_then_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file, line, _, _ = case_missing_wav(tmp_path / "corpus")
    out = tmp_path / "out"
    assert prepare(["msp_podcast", "--root", str(tmp_path / "corpus"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{file.resolve()}:{line}" in err and "missing audio file" in err and "--on-error skip" in err
    assert "Traceback" not in err and not (out / "manifest.jsonl").exists()
    assert prepare(["msp_podcast", "--root", str(tmp_path / "corpus"), "--out", str(out), "--on-error", "skip"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [d["item"] for d in report["defects"]] == [f"{KEPT}.wav"]
    assert prepare(["msp_podcast", "--root", str(tmp_path / "corpus"), "--out", str(out), "--text-only"]) == 0
    assert len(read_manifest(out / "manifest.jsonl")) == TOTAL


def test_prepare_missing_root_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare(["msp_podcast", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert "expected a directory" in capsys.readouterr().err
