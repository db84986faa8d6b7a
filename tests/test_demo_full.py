"""The full demos of every generated corpus, through the real command (``make test-slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIVE = ("stage1_text", "stage1_audio", "stage2_text", "stage2_audio", "stage3")
CARE = ("care_pretrain", "stage1_audio_care", "stage2_audio_care", "stage3_care")


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["iemocap", "meld", "cmu_mosi"])
def test_full_demo(corpus: str, tmp_path: Path) -> None:
    out = tmp_path / f"demo-{corpus}"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "meritsl_lightning", "demo", "--corpus", corpus, "--out", str(out), *(["--strict"] if corpus == "iemocap" else [])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(FIVE + CARE) <= set(summary)
    for stage in FIVE + CARE:
        assert Path(summary[stage]["checkpoint"]).is_file()
        if stage == "care_pretrain":
            assert summary[stage]["validation"]["loss"] > 0
        else:
            assert 0.0 < summary[stage]["test"]["weighted_f1"] <= 1.0
    if corpus != "iemocap":
        return  # the generated MELD and CMU-MOSI corpora do not show the claims (README); only IEMOCAP is held to them
    # --strict held: context helps each modality and fusion helps both, by the demo's margin
    assert summary["stage3"]["test"]["weighted_f1"] > max(summary[s]["test"]["weighted_f1"] for s in ("stage2_text", "stage2_audio"))
