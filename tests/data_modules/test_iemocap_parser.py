"""IEMOCAP parser on a tiny hand-built copy of the release layout."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_modules.iemocap_parser import PROTOCOLS, parse_iemocap
from data_modules.manifest import CorpusProblem, Defect
from tests.fixtures.iemocap_layout import (
    EXPECTED_EXCLUDED_4,
    EXPECTED_SPLITS,
    Dialogue,
    default_dialogues,
    emo_path,
    find_turn,
    line_of,
    transcript_path,
    wav_path,
    write_iemocap,
)

# A turn the 4-class protocol keeps (Session 2, train).
KEPT = "Ses02F_impro02_F000"
KEPT_DIALOGUE = "Ses02F_impro02"


def _split_counts(result) -> dict[str, int]:
    return dict(Counter(u.split for u in result.utterances))


@pytest.mark.parametrize("protocol", ["iemocap4", "iemocap6"])
def test_counts_per_split(tmp_path: Path, protocol: str) -> None:
    write_iemocap(tmp_path)
    result = parse_iemocap(tmp_path, protocol=protocol)
    assert _split_counts(result) == EXPECTED_SPLITS[protocol]
    assert result.defects == []
    assert {u.label for u in result.utterances} == set(PROTOCOLS[protocol].labels)


def test_root_may_be_the_release_folder_or_its_parent(tmp_path: Path) -> None:
    corpus = write_iemocap(tmp_path)
    by_parent = parse_iemocap(tmp_path).utterances
    by_corpus = parse_iemocap(corpus).utterances
    assert by_parent == by_corpus


def test_four_class_merges_exc_into_hap(tmp_path: Path) -> None:
    write_iemocap(tmp_path)
    four = {u.utt_id: u for u in parse_iemocap(tmp_path, protocol="iemocap4").utterances}
    six = {u.utt_id: u for u in parse_iemocap(tmp_path, protocol="iemocap6").utterances}
    exc = [u for u in six.values() if u.label_raw == "exc"]
    assert exc and all(u.label == "exc" for u in exc)
    assert all(four[u.utt_id].label == "hap" and four[u.utt_id].label_raw == "exc" for u in exc)
    assert not any(u.label_raw == "fru" for u in four.values())
    assert any(u.label == "fru" for u in six.values())


def test_protocol_label_orders() -> None:
    assert PROTOCOLS["iemocap4"].labels == ("hap", "sad", "neu", "ang")
    assert PROTOCOLS["iemocap6"].labels == ("hap", "sad", "neu", "ang", "exc", "fru")
    assert PROTOCOLS["iemocap4"].expected_total == sum(PROTOCOLS["iemocap4"].expected_splits.values())
    assert PROTOCOLS["iemocap6"].expected_total == sum(PROTOCOLS["iemocap6"].expected_labels.values())


def test_excluded_by_protocol_are_counted_not_defects(tmp_path: Path) -> None:
    dialogues = default_dialogues()
    # An excluded turn is not checked further: its missing wav is no defect.
    find_turn(dialogues, "Ses01F_impro01_F001").wav = False  # code xxx
    write_iemocap(tmp_path, dialogues)
    result = parse_iemocap(tmp_path)
    assert result.defects == []
    assert result.info["excluded_by_protocol"] == EXPECTED_EXCLUDED_4


def test_rows_are_in_start_time_order_across_speakers(tmp_path: Path) -> None:
    write_iemocap(tmp_path)
    rows = [
        u
        for u in parse_iemocap(tmp_path, protocol="iemocap6").utterances
        if u.dialogue_id == "Ses02F_impro02"
    ]
    ids = [u.utt_id.rsplit("_", 1)[1] for u in rows]
    assert ids == ["M000", "F000", "M001", "F001", "M002"]
    assert ids != sorted(ids)
    assert [u.utt_index for u in rows] == list(range(len(rows)))
    assert [u.start for u in rows] == sorted(u.start for u in rows)


def test_utt_index_counts_retained_turns_only(tmp_path: Path) -> None:
    write_iemocap(tmp_path)
    rows = [u for u in parse_iemocap(tmp_path).utterances if u.dialogue_id == "Ses01F_impro01"]
    # codes in time order: neu hap xxx exc fru ang -> xxx and fru dropped
    assert [u.label_raw for u in rows] == ["neu", "hap", "exc", "ang"]
    assert [u.utt_index for u in rows] == [0, 1, 2, 3]


def test_row_fields(tmp_path: Path) -> None:
    corpus = write_iemocap(tmp_path)
    row = next(u for u in parse_iemocap(tmp_path).utterances if u.utt_id == KEPT)
    assert row.dataset == "iemocap"
    assert row.split == "train"
    assert row.dialogue_id == KEPT_DIALOGUE
    assert row.speaker == "Ses02_F"
    assert (row.start, row.end) == (pytest.approx(2.0), pytest.approx(3.2))
    assert row.text == f"words of {KEPT}, feeling exc."
    assert Path(row.audio_path).is_absolute()
    assert Path(row.audio_path) == wav_path(corpus.resolve(), KEPT)
    assert row.audio_ok


def test_appledouble_and_subfolders_ignored(tmp_path: Path) -> None:
    corpus = write_iemocap(tmp_path)
    assert (emo_path(corpus, KEPT_DIALOGUE).parent / f"._{KEPT_DIALOGUE}.txt").is_file()
    assert (emo_path(corpus, KEPT_DIALOGUE).parent / "Categorical").is_dir()
    result = parse_iemocap(tmp_path)
    assert result.defects == []
    assert not any(f.split("/")[-1].startswith("._") for f in result.info["source_files"])


def test_non_turn_transcription_lines_ignored(tmp_path: Path) -> None:
    corpus = write_iemocap(tmp_path)
    text = transcript_path(corpus, KEPT_DIALOGUE).read_text()
    assert "[LAUGHTER]" in text and "M: [BREATHING]" in text
    assert parse_iemocap(tmp_path).defects == []


def test_no_sessions_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "IEMOCAP_full_release").mkdir()
    with pytest.raises(FileNotFoundError, match="Session1..Session5"):
        parse_iemocap(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected a directory"):
        parse_iemocap(tmp_path / "absent")


def test_unknown_protocol(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="iemocap4, iemocap6"):
        parse_iemocap(tmp_path, protocol="iemocap5")


def test_partial_copy_warns_instead_of_comparing(tmp_path: Path) -> None:
    write_iemocap(tmp_path, sessions=(1, 5))
    result = parse_iemocap(tmp_path)
    assert _split_counts(result) == {"validation": 7, "test": 6}
    assert result.info["sessions"] == ["Session1", "Session5"]
    assert len(result.info["warnings"]) == 1 and "only Session1, Session5 found" in result.info["warnings"][0]


def test_full_copy_with_other_counts_warns(tmp_path: Path) -> None:
    write_iemocap(tmp_path)
    warnings = parse_iemocap(tmp_path).info["warnings"]
    assert any("25 utterances" in w and "5531" in w for w in warnings)
    assert any("1241" in w for w in warnings)


# ---- bad input: each case corrupts one thing -------------------------------------------------------

Corruptor = Callable[[Path, list[Dialogue]], None]  # (tmp root, dialogues) -> edits before/after writing


def _write(tmp_path: Path, before: Callable[[list[Dialogue]], None] | None = None) -> Path:
    dialogues = default_dialogues()
    if before is not None:
        before(dialogues)
    return write_iemocap(tmp_path, dialogues)


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def case_missing_wav(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path, lambda ds: setattr(find_turn(ds, KEPT), "wav", False))
    return wav_path(corpus, KEPT), None, -1


def case_unreadable_wav(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path)
    wav_path(corpus, KEPT).write_bytes(b"not a wav file at all" * 10)
    return wav_path(corpus, KEPT), None, -1


def case_empty_wav(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path)
    path = wav_path(corpus, KEPT)
    path.write_bytes(path.read_bytes()[:44])  # header only
    return path, None, -1


def case_malformed_label_line(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path)
    path = emo_path(corpus, KEPT_DIALOGUE)
    _replace(path, f"\t{KEPT}\texc\t", f" {KEPT} exc ")
    return path, line_of(path, KEPT), -1


def case_unknown_code(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path, lambda ds: setattr(find_turn(ds, KEPT), "code", "joy"))
    return emo_path(corpus, KEPT_DIALOGUE), line_of(emo_path(corpus, KEPT_DIALOGUE), KEPT), -1


def case_empty_transcript(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path, lambda ds: setattr(find_turn(ds, KEPT), "text", "   "))
    return transcript_path(corpus, KEPT_DIALOGUE), line_of(transcript_path(corpus, KEPT_DIALOGUE), KEPT), -1


def case_label_without_transcription(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path, lambda ds: setattr(find_turn(ds, KEPT), "transcribed", False))
    return emo_path(corpus, KEPT_DIALOGUE), line_of(emo_path(corpus, KEPT_DIALOGUE), KEPT), -1


def case_duplicate_turn(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path)
    first = emo_path(corpus, KEPT_DIALOGUE)
    line = next(x for x in first.read_text().splitlines() if f"\t{KEPT}\t" in x)
    # The same turn id labelled again in another dialogue's file of the same session.
    other = emo_path(corpus, "Ses03M_impro05a")
    other.write_text(other.read_text() + line + "\n")
    return other, len(other.read_text().splitlines()), 0  # the first is kept


def case_duplicate_transcription(tmp_path: Path) -> tuple[Path, int | None, int]:
    corpus = _write(tmp_path)
    path = transcript_path(corpus, KEPT_DIALOGUE)
    line = next(x for x in path.read_text().splitlines() if x.startswith(KEPT))
    path.write_text(path.read_text() + line + "\n")
    return path, len(path.read_text().splitlines()), 0


CASES = {
    "missing wav": (case_missing_wav, "missing audio file"),
    "unreadable wav": (case_unreadable_wav, "unreadable audio file"),
    "empty wav": (case_empty_wav, "empty audio file"),
    "malformed label line": (case_malformed_label_line, "malformed EmoEvaluation line"),
    "unknown code": (case_unknown_code, "unknown emotion code 'joy'"),
    "empty transcript": (case_empty_transcript, "empty transcript"),
    "label without transcription": (
        case_label_without_transcription,
        "labelled turn without a transcription",
    ),
    "duplicate turn id": (case_duplicate_turn, "duplicate turn id"),
    "duplicate transcription": (case_duplicate_transcription, "duplicate turn id in transcription"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_naming_file_line_and_item(tmp_path: Path, case: str) -> None:
    corrupt, problem = CASES[case]
    file, line, _ = corrupt(tmp_path)
    with pytest.raises(CorpusProblem) as info:
        parse_iemocap(tmp_path, on_error="fail")
    message = str(info.value)
    where = f"{file}:{line}" if line is not None else str(file)
    assert where in message.replace(str(tmp_path.resolve()), str(tmp_path))
    assert problem in message
    assert KEPT in message


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_skipped_and_listed(tmp_path: Path, case: str) -> None:
    corrupt, problem = CASES[case]
    file, line, change = corrupt(tmp_path)
    result = parse_iemocap(tmp_path, on_error="skip")
    assert len(result.defects) == 1, result.defects
    defect = result.defects[0]
    assert isinstance(defect, Defect)
    assert defect.item == KEPT
    assert Path(defect.file) == file.resolve()
    assert defect.line == line
    assert problem in defect.problem
    expected = sum(EXPECTED_SPLITS["iemocap4"].values()) + change
    assert len(result.utterances) == expected
    kept = [u for u in result.utterances if u.utt_id == KEPT]
    assert len(kept) == (1 if change == 0 else 0)
    rows = [u for u in result.utterances if u.dialogue_id == KEPT_DIALOGUE]
    assert [u.utt_index for u in rows] == list(range(len(rows)))


def test_missing_transcription_file_reports_each_kept_turn(tmp_path: Path) -> None:
    corpus = _write(tmp_path)
    transcript_path(corpus, KEPT_DIALOGUE).unlink()
    result = parse_iemocap(tmp_path, on_error="skip")
    assert {d.item for d in result.defects} == {
        u
        for u in ("Ses02F_impro02_M000", "Ses02F_impro02_F000", "Ses02F_impro02_M001", "Ses02F_impro02_M002")
    }
    assert all("file not found" in d.problem for d in result.defects)
    assert not any(u.dialogue_id == KEPT_DIALOGUE for u in result.utterances)


def test_transcription_file_without_label_file(tmp_path: Path) -> None:
    corpus = _write(tmp_path)
    emo_path(corpus, "Ses03F_script02_2").unlink()
    with pytest.raises(CorpusProblem, match="transcription turns without labels") as info:
        parse_iemocap(tmp_path)
    assert str(transcript_path(corpus, "Ses03F_script02_2").resolve()) in str(info.value)


def _nan_wav(corpus: Path) -> Path:
    path = wav_path(corpus, KEPT)
    data = np.zeros(1600, dtype="float32")
    data[100] = np.nan
    sf.write(path, data, 16000, subtype="FLOAT")
    return path


def test_deep_check_decodes_audio(tmp_path: Path) -> None:
    corpus = _write(tmp_path)
    path = _nan_wav(corpus)
    assert parse_iemocap(tmp_path).defects == []  # the header is fine
    with pytest.raises(CorpusProblem, match="non-finite samples") as info:
        parse_iemocap(tmp_path, deep=True)
    assert str(path.resolve()) in str(info.value)
    skipped = parse_iemocap(tmp_path, deep=True, on_error="skip")
    assert [d.item for d in skipped.defects] == [KEPT]


# ---- turns the release transcribes but never labels -------------------------------------------------
OVERLAP = "Ses02F_impro02_MXX0"  # as the release names overlapped speech


def _with_unlabelled_turns(tmp_path: Path) -> Path:
    """KEPT loses its EmoEvaluation line; an overlapped turn with a time span and no wav is transcribed."""
    corpus = _write(tmp_path, lambda ds: setattr(find_turn(ds, KEPT), "labelled", False))
    path = transcript_path(corpus, KEPT_DIALOGUE)
    path.write_text(path.read_text() + f"{OVERLAP} [001.0000-001.6000]: overlapping words\n")
    return corpus


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_unlabelled_turns_are_kept_as_context_and_counted(tmp_path: Path, on_error: str) -> None:
    corpus = _with_unlabelled_turns(tmp_path)
    result = parse_iemocap(tmp_path, on_error=on_error)
    assert result.defects == []
    assert result.info["unlabelled_turns"]["count"] == 2
    assert result.info["unlabelled_turns"]["ids"] == [KEPT, OVERLAP]
    unlabelled = {u.utt_id: u for u in result.utterances if u.label is None}
    assert set(unlabelled) == {KEPT, OVERLAP}
    assert unlabelled[KEPT].audio_ok and unlabelled[KEPT].audio_path == str(wav_path(corpus, KEPT).resolve())
    assert not unlabelled[OVERLAP].audio_ok  # no wav: context text only, not a defect
    assert unlabelled[OVERLAP].text == "overlapping words" and unlabelled[OVERLAP].split == "train"
    labelled = _split_counts(type(result)([u for u in result.utterances if u.label is not None]))
    assert labelled == {**EXPECTED_SPLITS["iemocap4"], "train": EXPECTED_SPLITS["iemocap4"]["train"] - 1}
    # in time order within the conversation: the overlap (1.0 s) comes right after the first turn (0.5 s)
    rows = sorted((u for u in result.utterances if u.dialogue_id == KEPT_DIALOGUE), key=lambda u: u.utt_index)
    assert [u.utt_index for u in rows] == list(range(len(rows)))
    assert rows[1].utt_id == OVERLAP and rows[0].start == 0.5
    # the published-count warning compares labelled turns only
    assert any(f"{sum(EXPECTED_SPLITS['iemocap4'].values()) - 1} utterances" in w for w in result.info["warnings"])


def test_unlabelled_turns_with_text_only(tmp_path: Path) -> None:
    _with_unlabelled_turns(tmp_path)
    unlabelled = [u for u in parse_iemocap(tmp_path, text_only=True).utterances if u.label is None]
    assert {u.utt_id for u in unlabelled} == {KEPT, OVERLAP}
    assert all(u.audio_path is None and not u.audio_ok for u in unlabelled)
