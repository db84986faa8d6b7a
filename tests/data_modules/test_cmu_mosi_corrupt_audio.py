"""A corrupt CMU-MOSI segment wav: garbage bytes fail the default header check; garbage samples (NaN) behind a
valid header pass it and are caught by --deep; the file and the segment are named, or under on_error=skip the
segment is left out and listed, and `meritsl prepare` says so in one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_modules.cmu_mosi_parser import parse_cmu_mosi
from data_modules.manifest import CorpusProblem
from meritsl_lightning import cli
from tests.fixtures.mosi_layout import EXPECTED_SPLITS, wav_path, write_mosi

SEGMENT = "tmZoasNr4rU_1"  # a test-fold segment


def test_garbage_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_mosi(tmp_path)
    path = wav_path(corpus, SEGMENT)
    path.write_bytes(os.urandom(2048))
    with pytest.raises(CorpusProblem) as info:
        parse_cmu_mosi(corpus)
    assert info.value.defect.item == SEGMENT and info.value.defect.file == str(path.resolve())
    assert info.value.defect.problem.startswith("unreadable audio file: expected a WAV that soundfile can open")
    skipped = parse_cmu_mosi(corpus, on_error="skip")
    assert [(d.item, d.problem.split(":")[0]) for d in skipped.defects] == [(SEGMENT, "unreadable audio file")]
    assert SEGMENT not in {u.utt_id for u in skipped.utterances}
    assert len(skipped.utterances) == sum(EXPECTED_SPLITS.values()) - 1
    assert parse_cmu_mosi(corpus, text_only=True).defects == []  # text stages do not need the wav

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prepare", "cmu_mosi", "--root", str(corpus), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"{path.resolve()}: unreadable audio file" in err and f"(item {SEGMENT})" in err
    assert "--on-error skip" in err


def test_garbage_samples_behind_a_valid_header_need_deep(tmp_path: Path) -> None:
    """A float WAV whose sample bytes were overwritten (0xFF..: NaN): the header is fine, the data is not."""
    corpus = write_mosi(tmp_path)
    path = wav_path(corpus, SEGMENT)
    sf.write(path, np.full(1600, 0.1, dtype=np.float32), 16000, subtype="FLOAT")
    raw = bytearray(path.read_bytes())
    raw[-400:] = b"\xff" * 400
    path.write_bytes(bytes(raw))
    assert parse_cmu_mosi(corpus).defects == []  # the header check cannot see it
    with pytest.raises(CorpusProblem) as info:
        parse_cmu_mosi(corpus, deep=True)
    assert info.value.defect.item == SEGMENT and info.value.defect.file == str(path.resolve())
    assert info.value.defect.problem == "audio file contains non-finite samples (NaN or inf)"
