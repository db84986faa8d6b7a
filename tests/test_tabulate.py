"""`meritsl tabulate`: mean, std and best over the versions of each run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meritsl_lightning.commands.tabulate import collect, main


def test_groups_versions_by_run_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, values in {"stage1_text_none": [0.60, 0.64], "stage1_text_gpt35": [0.70]}.items():
        for version, value in enumerate(values):
            run = tmp_path / name / f"version_{version}"
            run.mkdir(parents=True)
            (run / "test_metrics.json").write_text(json.dumps({"test": {"test/weighted_f1": value}}))
    assert collect([tmp_path], "test/weighted_f1") == {"stage1_text_none": [0.60, 0.64], "stage1_text_gpt35": [0.70]}
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "stage1_text_none" in out and "0.6200" in out and "0.0283" in out


def test_nothing_to_tabulate_is_reported(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 1
