"""Commands that need no model start without importing torch, Lightning or transformers.

Checked on imports, not on timing (benchmarks/startup.py measures the time): each command's ``--help`` (and a
real ``tabulate`` run) in a fresh interpreter, then ``sys.modules`` is inspected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meritsl_lightning.cli import PIPELINE_COMMANDS

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "lightning", "pytorch_lightning", "transformers", "torchaudio", "torchmetrics")
# commands whose own process needs no model (present ones are checked; later commands join by name)
LIGHT = ("prepare", "generate", "tabulate", "pseudo-label", "reproduce", "sweep")

PROBE = """
import contextlib, io, json, sys
from meritsl_lightning.cli import main
argv = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    else:
        code = 0
heavy = json.loads(sys.argv[2])
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
"""


def imported_after(argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in LIGHT if name in PIPELINE_COMMANDS)], ids=" ".join)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    result = imported_after(argv)
    assert result["code"] == 0
    assert result["heavy"] == []


def test_tabulate_runs_without_torch(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "stage1_text" / "version_0"
    run.mkdir(parents=True)
    (run / "test_metrics.json").write_text(json.dumps({"test": {"test/weighted_f1": 0.5}}))
    result = imported_after(["tabulate", str(tmp_path / "runs")])
    assert result == {"code": 0, "heavy": []}


def test_training_commands_still_reach_lightning() -> None:
    result = imported_after(["fit", "--help"])
    assert result["code"] == 0
    assert "lightning" in result["heavy"] and "torch" in result["heavy"]
