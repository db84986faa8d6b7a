"""Re-saved copies of the IEMOCAP, CMU-MOSI and MSP-Podcast text files (UTF-8 BOM, CRLF or CR line ends,
cp1252 bytes, a UTF-8 file with one cp1252 line) parse to the same rows as the clean copy (MELD has its own
test in test_meld_parser.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from data_modules.cmu_mosi_parser import load_video_list, parse_cmu_mosi
from data_modules.iemocap_parser import parse_iemocap
from data_modules.msp_podcast_parser import parse_msp_podcast
from data_modules.text_decoding import decode_lines
from tests.fixtures import iemocap_layout, mosi_layout, msp_layout

ODD_TEXT = "Caf\u00e9 \u2013 na\u00efve, it\u2019s \u201cfine\u201d\u2026"  # every character has a cp1252 byte
OTHER_TEXT = "Zo\u00eb says \u201cbonjour\u201d"  # stays UTF-8 in the "mixed" copy
VARIANTS = ("bom", "crlf", "cr", "cp1252", "mixed")


def resave(path: Path, variant: str) -> None:
    """Rewrite a UTF-8 (LF) text file as a re-saved copy would look."""
    text = path.read_text(encoding="utf-8")
    raw = {
        "bom": b"\xef\xbb\xbf" + text.encode("utf-8"),
        "crlf": text.replace("\n", "\r\n").encode("utf-8"),
        "cr": text.replace("\n", "\r").encode("utf-8"),
        "cp1252": text.encode("cp1252"),
        # a UTF-8 file in which only the line holding ODD_TEXT was pasted from a cp1252 editor
        "mixed": text.encode("utf-8").replace(ODD_TEXT.encode("utf-8"), ODD_TEXT.encode("cp1252")),
    }[variant]
    path.write_bytes(raw)


def rows(parse: Callable, root: Path) -> list[tuple]:
    result = parse(root, text_only=True)
    assert result.defects == []
    return [(u.split, u.dialogue_id, u.utt_index, u.utt_id, u.text, u.label, u.label_raw, u.score, u.start, u.end)
            for u in result.utterances]  # fmt: skip


def test_decode_lines_matches_the_clean_text() -> None:
    clean = ["first line", ODD_TEXT, "", "last"]
    text = "\n".join(clean) + "\n"
    for variant in VARIANTS:
        raw = {
            "bom": b"\xef\xbb\xbf" + text.encode(),
            "crlf": text.replace("\n", "\r\n").encode(),
            "cr": text.replace("\n", "\r").encode(),
            "cp1252": text.encode("cp1252"),
            "mixed": text.encode().replace(ODD_TEXT.encode(), ODD_TEXT.encode("cp1252")),
        }[variant]
        assert decode_lines(raw) == clean, variant
    assert decode_lines(b"ok\n\x81\xff\n") == ["ok", "\ufffd\u00ff"]  # undefined cp1252 byte: replaced, not fatal


@pytest.mark.parametrize("variant", VARIANTS)
def test_iemocap(tmp_path: Path, variant: str) -> None:
    dialogues = iemocap_layout.default_dialogues()
    iemocap_layout.find_turn(dialogues, "Ses01F_impro01_F000").text = ODD_TEXT  # first line of its transcription
    iemocap_layout.find_turn(dialogues, "Ses01F_impro01_M000").text = OTHER_TEXT
    clean = iemocap_layout.write_iemocap(tmp_path / "clean", dialogues)
    odd = iemocap_layout.write_iemocap(tmp_path / "odd", dialogues)
    for d in dialogues:
        resave(iemocap_layout.transcript_path(odd, d.name), variant)
        resave(iemocap_layout.emo_path(odd, d.name), variant if variant != "mixed" else "bom")
    expected = rows(parse_iemocap, clean)
    assert ("Ses01F_impro01_F000", ODD_TEXT) in {(r[3], r[4]) for r in expected}
    assert rows(parse_iemocap, odd) == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_cmu_mosi(tmp_path: Path, variant: str) -> None:
    videos = mosi_layout.default_videos()
    mosi_layout.find_segment(videos, "2iD-tVS8NPw_2").text = ODD_TEXT
    mosi_layout.find_segment(videos, "2iD-tVS8NPw_3").text = OTHER_TEXT
    clean = mosi_layout.write_mosi(tmp_path / "clean", videos)
    odd = mosi_layout.write_mosi(tmp_path / "odd", videos)
    for video in videos:
        resave(mosi_layout.transcript_path(odd, video), variant)
    resave(mosi_layout.labels_path(odd), variant if variant != "mixed" else "crlf")
    expected = rows(parse_cmu_mosi, clean)
    assert ("2iD-tVS8NPw_2", ODD_TEXT) in {(r[3], r[4]) for r in expected}
    assert rows(parse_cmu_mosi, odd) == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_cmu_mosi_video_list(tmp_path: Path, variant: str) -> None:
    path = tmp_path / "videos.txt"
    path.write_text(f"# {ODD_TEXT}\n# {OTHER_TEXT}\ntrain 2iD-tVS8NPw\nvalid c5xsKMxpXnc\ntest zhpQhgha_KU\n", encoding="utf-8")
    expected = load_video_list(path)
    resave(path, variant)
    assert load_video_list(path) == expected == {"train": ["2iD-tVS8NPw"], "validation": ["c5xsKMxpXnc"], "test": ["zhpQhgha_KU"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_msp_podcast(tmp_path: Path, variant: str) -> None:
    segments = msp_layout.edited(msp_layout.default_segments(), "0001_0008", transcript=ODD_TEXT)
    segments = msp_layout.edited(segments, "0001_0009", transcript=OTHER_TEXT)
    clean = msp_layout.write_msp(tmp_path / "clean", segments, json_labels=False)
    odd = msp_layout.write_msp(tmp_path / "odd", segments, json_labels=False)
    resave(msp_layout.labels_csv(odd), variant if variant != "mixed" else "bom")
    for transcript in (odd / "Transcripts").iterdir():
        resave(transcript, variant)
    expected = rows(parse_msp_podcast, clean)
    assert ("MSP-PODCAST_0001_0008", ODD_TEXT) in {(r[3], r[4]) for r in expected}
    assert rows(parse_msp_podcast, odd) == expected
