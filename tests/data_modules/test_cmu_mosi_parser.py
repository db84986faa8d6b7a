"""CMU-MOSI parser on a tiny hand-built copy of the raw archive layout."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_modules import cmu_mosi_parser
from data_modules.cmu_mosi_parser import (
    PROTOCOLS,
    PUBLISHED,
    VideoListError,
    load_video_list,
    parse_cmu_mosi,
    standard_folds,
)
from data_modules.manifest import CorpusProblem
from tests.fixtures.mosi_layout import (
    EXPECTED_SIGNS,
    EXPECTED_SPLITS,
    STEREO_44K,
    VIDEO_SPECS,
    Segment,
    default_videos,
    find_segment,
    full_copy_videos,
    labels_path,
    line_of,
    transcript_path,
    wav_path,
    write_mosi,
)


def _splits(result) -> dict[str, int]:
    return dict(Counter(u.split for u in result.utterances))


# --- the shipped folds ---------------------------------------------------------------------------------
def test_standard_folds_are_the_sdk_lists() -> None:
    folds = standard_folds()
    assert (
        {s: len(v) for s, v in folds.items()}
        == PUBLISHED["videos"]
        == {"train": 52, "validation": 10, "test": 31}
    )
    every = [v for videos in folds.values() for v in videos]
    assert len(set(every)) == 93 and all(len(v) == 11 for v in every)
    assert "c5xsKMxpXnc" in folds["validation"]  # the corrupt full video of datasets.md is a valid-fold video
    header = json.loads(cmu_mosi_parser.STANDARD_FOLDS_FILE.read_text())
    assert "cmu_mosi_std_folds.py" in header["source"] and header["license"].startswith("MIT")


def test_published_counts_are_consistent() -> None:
    for split, n in PUBLISHED["segments"].items():
        assert sum(PUBLISHED["scores"][split].values()) == n
    assert sum(PUBLISHED["segments"].values()) == PUBLISHED["total"]["segments"] == 2199


def test_missing_fold_file_says_what_is_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = write_mosi(tmp_path)
    monkeypatch.setattr(cmu_mosi_parser, "STANDARD_FOLDS_FILE", tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match=r"cmu_mosi_std_folds\.py.*video_list"):
        parse_cmu_mosi(corpus)


# --- the default layout --------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["mosi2", "mosi_regression"])
def test_counts_labels_and_scores(tmp_path: Path, protocol: str) -> None:
    write_mosi(tmp_path)
    result = parse_cmu_mosi(tmp_path, protocol=protocol)
    assert result.defects == []
    assert _splits(result) == EXPECTED_SPLITS
    assert result.info["score_breakdown"] == EXPECTED_SIGNS
    assert result.info["target"] == PROTOCOLS[protocol].target
    for u in result.utterances:
        assert u.label == ("positive" if u.score >= 0 else "negative")  # has-0: a zero score is positive
        assert float(u.label_raw) == u.score
        assert u.split == VIDEO_SPECS[u.dialogue_id][0]
    zero = next(u for u in result.utterances if u.utt_id == "Qr1Ca94K55A_2")
    assert zero.score == 0.0 and zero.label == "positive" and zero.label_raw == "0.0"


def test_root_may_be_raw_its_parent_or_above(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    rows = [parse_cmu_mosi(r, text_only=True).utterances for r in (tmp_path, corpus, corpus / "Raw")]
    assert rows[0] == rows[1] == rows[2]


def test_root_without_the_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Raw/Labels/OpinionLevelSentiment\.csv"):
        parse_cmu_mosi(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected a directory"):
        parse_cmu_mosi(tmp_path / "missing")


def test_missing_audio_folder_is_a_clear_error_unless_text_only(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    for wav in (corpus / "Raw" / "Audio" / "WAV_16000" / "Segmented").iterdir():
        wav.unlink()
    (corpus / "Raw" / "Audio" / "WAV_16000" / "Segmented").rmdir()
    with pytest.raises(FileNotFoundError, match="WAV_16000/Segmented.*text_only"):
        parse_cmu_mosi(corpus)
    assert _splits(parse_cmu_mosi(corpus, text_only=True)) == EXPECTED_SPLITS


def test_conversations_in_segment_order(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    rows = parse_cmu_mosi(corpus).utterances
    video = [u for u in rows if u.dialogue_id == "2iD-tVS8NPw"]
    assert [u.utt_id for u in video] == [f"2iD-tVS8NPw_{n}" for n in (1, 2, 3, 4)]
    assert [u.utt_index for u in video] == [0, 1, 2, 3]
    first = video[0]
    assert (first.start, first.end) == (3.0, 6.9) and first.text == "segment 1 of 2iD-tVS8NPw says 2.4"
    assert first.audio_path == str(wav_path(corpus, "2iD-tVS8NPw_1").resolve())
    assert first.speaker == "2iD-tVS8NPw"


def test_stereo_44k_wav_is_fine_and_text_only_needs_no_wav(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    assert sf.info(str(wav_path(corpus, STEREO_44K))).channels == 2
    result = parse_cmu_mosi(corpus, deep=True)
    assert STEREO_44K in {u.utt_id for u in result.utterances} and result.defects == []
    text_only = parse_cmu_mosi(corpus, text_only=True)
    assert all(u.audio_path is None for u in text_only.utterances)


def test_report_info(tmp_path: Path) -> None:
    write_mosi(tmp_path)
    info = parse_cmu_mosi(tmp_path).info
    assert info["labels"] == ["negative", "positive"]
    assert info["split_source"] == "CMU-MultimodalSDK standard folds"
    assert info["videos"] == {"train": 3, "validation": 1, "test": 2}
    assert info["unlabelled_transcript_lines"] == 6  # one closing remark per video
    assert any("c5xsKMxpXnc.mp4" in d for d in info["known_defects"])
    assert info["warnings"] == [
        "only 6 of the 93 standard-fold videos have labels; counts not compared with the published ones"
    ]
    assert "Labels/OpinionLevelSentiment.csv" in info["source_files"]
    json.dumps(info)


# --- a full copy is compared with the published counts ------------------------------------------------
def test_full_copy_matches_published_counts(tmp_path: Path) -> None:
    folds = standard_folds()
    videos = full_copy_videos(folds, PUBLISHED)
    corpus = write_mosi(tmp_path, videos)
    result = parse_cmu_mosi(corpus, text_only=True)
    assert result.info["warnings"] == []
    assert _splits(result) == PUBLISHED["segments"]
    assert result.info["score_breakdown"] == PUBLISHED["scores"]
    labels = Counter((u.split, u.label) for u in result.utterances)
    assert labels[("test", "negative")] == 379 and labels[("test", "positive")] == 307

    find_segment(videos, f"{folds['test'][0]}_1").labelled = False
    result = parse_cmu_mosi(write_mosi(tmp_path / "b", videos), text_only=True)
    assert any(
        w.startswith("test: 685 segments, the published count is 686") for w in result.info["warnings"]
    )


# --- video lists ---------------------------------------------------------------------------------------
def test_video_list_json_overrides_the_folds(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    vlist = tmp_path / "poria.json"
    vlist.write_text(
        json.dumps(
            {
                "train": ["2iD-tVS8NPw", "tmZoasNr4rU"],
                "valid": ["8d-gEyoeBzc"],
                "test": ["Qr1Ca94K55A", "c5xsKMxpXnc", "zhpQhgha_KU"],
            }
        )
    )
    result = parse_cmu_mosi(corpus, video_list=vlist)
    assert _splits(result) == {"train": 7, "validation": 3, "test": 7}
    assert result.info["split_source"] == f"video list {vlist}"
    assert result.info["warnings"] == [
        "split from a user video list: counts not compared with the published SDK-fold ones"
    ]


def test_video_list_text_format(tmp_path: Path) -> None:
    path = tmp_path / "videos.txt"
    path.write_text("# split video\ntrain a1\ntrain\ta2\nvalidation,b1\n\ndev b2  # a comment\ntest c1\n")
    assert load_video_list(path) == {"train": ["a1", "a2"], "validation": ["b1", "b2"], "test": ["c1"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("train a\ntest b\n", "split 'validation' has no videos"),
        ("train a\nvalid b\ntest a\n", "'a' is listed in 'train' and again in 'test'"),
        ("train a\nholdout b\n", r"videos\.txt:2: expected 'SPLIT VIDEO_ID'"),
        ('{"train": ["a"], "tset": ["b"]}', "unknown split 'tset'"),
        ('{"train": ["a"],', r"videos\.txt:1: not valid JSON"),
    ],
)
def test_bad_video_lists(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "videos.txt"
    path.write_text(content)
    with pytest.raises(VideoListError, match=message):
        load_video_list(path)


def test_missing_video_list(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    with pytest.raises(FileNotFoundError, match="video list .*not found"):
        parse_cmu_mosi(corpus, video_list=tmp_path / "none.json")


# --- bad input: fail names the file and line, skip reports and leaves the item out --------------------
def _fail_then_skip(root: Path, item: str, problem: str, file: Path, line: int | None, **kwargs) -> None:
    with pytest.raises(CorpusProblem) as e:
        parse_cmu_mosi(root, **kwargs)
    assert e.value.defect.item == item and problem in e.value.defect.problem
    assert e.value.defect.file == str(file) and e.value.defect.line == line
    assert (f"{file}:{line}" if line is not None else str(file)) in str(e.value)
    result = parse_cmu_mosi(root, on_error="skip", **kwargs)
    assert [(d.item, d.line) for d in result.defects] == [(item, line)]
    assert item not in {u.utt_id for u in result.utterances}


def test_label_without_wav(tmp_path: Path) -> None:
    videos = default_videos()
    find_segment(videos, "8d-gEyoeBzc_1").wav = False
    corpus = write_mosi(tmp_path, videos)
    _fail_then_skip(
        corpus, "8d-gEyoeBzc_1", "missing audio file", wav_path(corpus, "8d-gEyoeBzc_1").resolve(), None
    )
    # not fatal when only transcripts and labels are read
    assert _splits(parse_cmu_mosi(corpus, text_only=True)) == EXPECTED_SPLITS


def test_zero_length_audio(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    path = wav_path(corpus, "tmZoasNr4rU_2")
    sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    _fail_then_skip(corpus, "tmZoasNr4rU_2", "empty audio file", path.resolve(), None)


def test_malformed_transcript_line(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    path = transcript_path(corpus, "zhpQhgha_KU")
    path.write_text(path.read_text() + "3 DELIM a line without the separator\n")
    line = line_of(path, "3 DELIM")
    _fail_then_skip(corpus, f"zhpQhgha_KU line {line}", "malformed transcript line", path.resolve(), line)


def test_empty_transcript(tmp_path: Path) -> None:
    videos = default_videos()
    find_segment(videos, "c5xsKMxpXnc_2").text = "   "
    corpus = write_mosi(tmp_path, videos)
    path = transcript_path(corpus, "c5xsKMxpXnc")
    _fail_then_skip(corpus, "c5xsKMxpXnc_2", "empty transcript", path.resolve(), line_of(path, "2_DELIM_"))


def test_labelled_segment_without_transcript_line(tmp_path: Path) -> None:
    videos = default_videos()
    find_segment(videos, "2iD-tVS8NPw_3").transcribed = False
    corpus = write_mosi(tmp_path, videos)
    path = labels_path(corpus)
    _fail_then_skip(
        corpus, "2iD-tVS8NPw_3", "without a transcript line", path.resolve(), line_of(path, "2iD-tVS8NPw,3,")
    )


@pytest.mark.parametrize(
    ("score", "problem"),
    [
        ("3.2", "outside [-3, 3]"),
        ("-3.01", "outside [-3, 3]"),
        ("n/a", "is not a number"),
        ("nan", "is not a number"),
    ],
)
def test_bad_scores(tmp_path: Path, score: str, problem: str) -> None:
    videos = default_videos()
    find_segment(videos, "tmZoasNr4rU_1").score = score
    corpus = write_mosi(tmp_path, videos)
    path = labels_path(corpus)
    _fail_then_skip(corpus, "tmZoasNr4rU_1", problem, path.resolve(), line_of(path, "tmZoasNr4rU,1,"))


def test_malformed_label_row(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    path = labels_path(corpus)
    path.write_text(path.read_text() + "1.0,2.0,2iD-tVS8NPw,9\n")
    _fail_then_skip(corpus, "line 18", "malformed label row", path.resolve(), 18)


def test_duplicate_segment(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    path = labels_path(corpus)
    path.write_text(path.read_text() + "50.0,52.0,Qr1Ca94K55A,1,-2.2\n")
    with pytest.raises(CorpusProblem, match=r"duplicate segment.*already labelled at line \d+"):
        parse_cmu_mosi(corpus)
    result = parse_cmu_mosi(corpus, on_error="skip")
    assert [(d.item, d.line) for d in result.defects] == [("Qr1Ca94K55A_1", 18)]
    kept = next(u for u in result.utterances if u.utt_id == "Qr1Ca94K55A_1")
    assert kept.score == pytest.approx(0.333333333)  # the first row is kept


def test_video_in_no_fold_is_reported(tmp_path: Path) -> None:
    videos = default_videos()
    videos["AAAAAAAAAAA"] = [Segment("AAAAAAAAAAA", 1, "1.2", 1.0, 2.0, "an unknown video")]
    corpus = write_mosi(tmp_path, videos)
    path = labels_path(corpus)
    _fail_then_skip(corpus, "AAAAAAAAAAA", "video in no fold", path.resolve(), line_of(path, "AAAAAAAAAAA"))


def test_missing_transcript_file(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    path = transcript_path(corpus, "8d-gEyoeBzc")
    path.unlink()
    with pytest.raises(CorpusProblem, match="missing transcript file"):
        parse_cmu_mosi(corpus)
    result = parse_cmu_mosi(corpus, on_error="skip")
    assert [d.item for d in result.defects] == ["8d-gEyoeBzc"]
    assert _splits(result)["train"] == EXPECTED_SPLITS["train"] - 3


def test_zero_length_interval_header_and_crlf_are_tolerated(tmp_path: Path) -> None:
    videos = default_videos()
    seg = find_segment(videos, "zhpQhgha_KU_2")
    seg.end = seg.start
    corpus = write_mosi(tmp_path, videos)
    path = labels_path(corpus)
    path.write_bytes(b"start,end,video,segment,score\r\n" + path.read_bytes().replace(b"\n", b"\r\n"))
    tr = transcript_path(corpus, "zhpQhgha_KU")
    tr.write_bytes(tr.read_bytes().replace(b"\n", b"\r\n"))
    result = parse_cmu_mosi(corpus)
    assert result.defects == [] and _splits(result) == EXPECTED_SPLITS
    assert result.info["zero_length_label_intervals"] == ["zhpQhgha_KU_2"]
    assert result.info["label_csv_header_skipped"] is True


def test_unknown_protocol_and_policy(tmp_path: Path) -> None:
    corpus = write_mosi(tmp_path)
    with pytest.raises(ValueError, match="unknown CMU-MOSI protocol 'mosi7'"):
        parse_cmu_mosi(corpus, protocol="mosi7")
    with pytest.raises(ValueError, match="on_error"):
        parse_cmu_mosi(corpus, on_error="ignore")  # type: ignore[arg-type]
