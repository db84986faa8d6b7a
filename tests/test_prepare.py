"""`meritsl prepare iemocap`: files written, report schema, exit statuses."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_modules.manifest import read_manifest
from meritsl_lightning.commands.prepare import CORPORA, add_prepare_parser, main
from tests.fixtures.iemocap_layout import (
    EXPECTED_EXCLUDED_4,
    EXPECTED_SPLITS,
    default_dialogues,
    find_turn,
    wav_path,
    write_iemocap,
)

REPO = Path(__file__).resolve().parents[1]


def _run(root: Path, out: Path, *extra: str) -> int:
    return main(["iemocap", "--root", str(root), "--out", str(out), *extra])


def test_writes_manifest_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_iemocap(tmp_path / "corpus")
    out = tmp_path / "out"
    assert _run(tmp_path / "corpus", out) == 0
    rows = read_manifest(out / "manifest.jsonl")
    report = json.loads((out / "report.json").read_text())
    assert len(rows) == sum(EXPECTED_SPLITS["iemocap4"].values())
    assert report["corpus"] == "iemocap" and report["protocol"] == "iemocap4"
    assert list(report["splits"]) == ["train", "validation", "test"]
    for split, n in EXPECTED_SPLITS["iemocap4"].items():
        entry = report["splits"][split]
        assert set(entry) == {"utterances", "conversations", "labels"}
        assert entry["utterances"] == n == sum(entry["labels"].values())
    assert report["splits"]["test"]["conversations"] == 2
    assert report["defects"] == []
    assert report["labels"] == ["hap", "sad", "neu", "ang"]
    assert report["excluded_by_protocol"] == EXPECTED_EXCLUDED_4
    assert report["published"] == {
        "total": 5531,
        "splits": {"train": 3205, "validation": 1085, "test": 1241},
        "labels": {"hap": 1636, "sad": 1084, "neu": 1708, "ang": 1103},
    }
    assert report["warnings"]  # the tiny copy has all five sessions but not the published counts
    assert len(report["source_files"]) == 16  # 8 label files + 8 transcriptions
    captured = capsys.readouterr()
    assert "25 utterances" in captured.out and "manifest.jsonl" in captured.out
    assert "warning: iemocap4: 25 utterances" in captured.err


def test_six_class_protocol(tmp_path: Path) -> None:
    write_iemocap(tmp_path)
    assert _run(tmp_path, tmp_path / "out", "--protocol", "iemocap6", "--deep") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["protocol"] == "iemocap6"
    assert {s: v["utterances"] for s, v in report["splits"].items()} == EXPECTED_SPLITS["iemocap6"]
    assert report["deep_audio_check"] is True


def test_bad_item_fails_with_exit_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dialogues = default_dialogues()
    find_turn(dialogues, "Ses02F_impro02_F000").wav = False
    corpus = write_iemocap(tmp_path, dialogues)
    assert _run(tmp_path, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert str(wav_path(corpus, "Ses02F_impro02_F000").resolve()) in err
    assert "missing audio file" in err and "--on-error skip" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_bad_item_skipped_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dialogues = default_dialogues()
    find_turn(dialogues, "Ses02F_impro02_F000").text = ""
    write_iemocap(tmp_path, dialogues)
    assert _run(tmp_path, tmp_path / "out", "--on-error", "skip") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(d["item"], d["line"]) for d in report["defects"]] == [("Ses02F_impro02_F000", 2)]
    assert set(report["defects"][0]) == {"item", "file", "problem", "line"}
    assert report["defects"][0]["file"].endswith("Session2/dialog/transcriptions/Ses02F_impro02.txt")
    assert report["splits"]["train"]["utterances"] == EXPECTED_SPLITS["iemocap4"]["train"] - 1
    assert "defects (items skipped): 1" in capsys.readouterr().out


def test_missing_root_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path / "nowhere", tmp_path / "out") == 2
    assert "expected a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path / "empty", tmp_path / "out") == 2
    assert "Session1..Session5" in capsys.readouterr().err


def test_nothing_left_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dialogues = default_dialogues()
    for d in dialogues:
        for t in d.turns:
            t.wav = False
    write_iemocap(tmp_path, dialogues)
    assert _run(tmp_path, tmp_path / "out", "--on-error", "skip") == 2
    assert "no utterances left" in capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["defects"]) == sum(EXPECTED_SPLITS["iemocap4"].values())


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["iemocap", "--root", str(tmp_path), "--out", str(tmp_path), "--protocol", "iemocap5"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["not-a-corpus", "--root", str(tmp_path), "--out", str(tmp_path)])
    assert info.value.code == 2


def test_registers_on_a_main_parser(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="meritsl")
    add_prepare_parser(parser.add_subparsers(dest="command"))
    write_iemocap(tmp_path)
    args = parser.parse_args(["prepare", "iemocap", "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert (args.command, args.corpus, args.protocol, args.on_error, args.deep) == (
        "prepare",
        "iemocap",
        "iemocap4",
        "fail",
        False,
    )
    assert args.func(args) == 0
    assert "iemocap" in CORPORA


def test_python_dash_m(tmp_path: Path) -> None:
    write_iemocap(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "meritsl_lightning.commands.prepare",
        "iemocap",
        "--root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "manifest.jsonl").is_file()


def test_text_only_needs_no_media(tmp_path: Path) -> None:
    import shutil

    from data_modules.manifest import read_manifest
    from meritsl_lightning.commands.prepare import main as prepare_main
    from tests.fixtures.iemocap_layout import write_iemocap

    corpus = write_iemocap(tmp_path / "data")
    for session in corpus.glob("Session*"):
        shutil.rmtree(session / "sentences")
    assert prepare_main(["iemocap", "--root", str(corpus), "--out", str(tmp_path / "out")]) == 2  # media missing
    assert prepare_main(["iemocap", "--root", str(corpus), "--out", str(tmp_path / "out"), "--text-only"]) == 0
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert len(rows) == 25 and all(r.audio_path is None and r.text for r in rows)
