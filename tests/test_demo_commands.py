"""The demo commands refuse bad arguments at once (before generating a corpus or training anything)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meritsl_lightning import cli
from meritsl_lightning.errors import DEBUG_ENV


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(info.value.code), [line for line in err.splitlines() if line.strip()]


def test_demo_unknown_stage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = error_of(capsys, "demo", "--out", str(tmp_path), "--stages", "stage4")
    assert status == 2
    assert "argument --stages: invalid choice: 'stage4'" in err[-1]
    assert not any(tmp_path.iterdir())  # nothing generated


def test_demo_unknown_corpus(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = error_of(capsys, "demo", "--out", str(tmp_path), "--corpus", "mosei")
    assert status == 2 and "argument --corpus: invalid choice: 'mosei'" in err[-1]


def test_demo_stage_without_its_upstream(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = error_of(capsys, "demo", "--out", str(tmp_path), "--stages", "stage3", "stage2_text")
    assert status == 2
    assert err == [
        "meritsl demo: error: --stages: stage3 needs stage2_audio, stage2_text, which neither runs before it nor is "
        "recorded in an earlier run's summary.json in --out"
    ]
    assert not any(tmp_path.iterdir())
    # recorded by an earlier run: accepted as far as the order goes (then a mistyped option stops it)
    (tmp_path / "summary.json").write_text(json.dumps({s: {"checkpoint": f"{s}.ckpt"} for s in ("stage2_text", "stage2_audio")}))
    status, err = error_of(capsys, "demo", "--out", str(tmp_path), "--stages", "stage3", "--stagez", "x")
    assert err == [
        "meritsl demo: error: unrecognized argument '--stagez' (options are listed by --help; stage "
        "overrides look like --trainer.accelerator=cuda)"
    ]


def test_demo_pretrain_argument_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = error_of(capsys, "demo-pretrain", "--out", str(tmp_path), "--epochs", "0")
    assert status == 2 and err[-1].endswith("error: --epochs must be >= 1, got 0")
    status, err = error_of(capsys, "demo-pretrain", "--out", str(tmp_path), "--epoch=2")
    assert status == 2 and "unrecognized argument '--epoch=2'" in err[-1]
    status, err = error_of(capsys, "demo-pretrain", "--out", str(tmp_path), "--seed", "x")
    assert status == 2 and "argument --seed: invalid int value: 'x'" in err[-1]
    assert not any(tmp_path.iterdir())
