"""`meritsl tabulate`: mean, std and best over the versions of each run; a reproduction folder's table again."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from scipy import stats

from meritsl_lightning.commands.tabulate import collect, main
from meritsl_lightning.reproduce.aggregate import plan_path
from meritsl_lightning.reproduce.engine import MARKER


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


def _run(out: Path, stage: str, seed: int, score: float | None, finished_at: float, name: str = "") -> Path:
    run = out / "runs" / "iemocap" / stage / f"seed{seed}-{name or 'k'}"
    run.mkdir(parents=True)
    marker = {
        "table": "table1", "corpus": "iemocap", "protocol": "iemocap4", "stage": stage, "seed": seed,
        "text_encoder": "roberta-large (without LLM pre-training)", "speech_encoder": "microsoft/wavlm-base (not CARE)",
        "status": "finished" if score is not None else "failed", "finished_at": finished_at,
        "message": "" if score is not None else "exit status 1", "log": str(out / "logs" / "x.log"),
    }  # fmt: skip
    (run / MARKER).write_text(json.dumps(marker))
    if score is not None:
        (run / "test_metrics.json").write_text(json.dumps({"best_checkpoint": "x", "test": {"test/weighted_f1": score}}))
    return run


def test_reproduction_folder_gives_its_table(tmp_path: Path) -> None:
    """Rows per (corpus, protocol, stage) from each run's own metrics; newest finished run per seed; failures listed."""
    scores = {0: 0.70, 1: 0.66, 2: 0.71}
    for seed, score in scores.items():
        _run(tmp_path, "stage1_text", seed, score, finished_at=10 + seed)
    _run(tmp_path, "stage1_text", 0, 0.10, finished_at=1, name="older")  # superseded by the newer seed-0 run
    _run(tmp_path, "stage1_audio", 0, 0.55, finished_at=5)
    _run(tmp_path, "stage1_audio", 1, None, finished_at=6)  # crashed: listed, not dropped
    assert main([str(tmp_path), "--json", str(tmp_path / "t.json"), "--write"]) == 0
    table = json.loads((tmp_path / "t.json").read_text())
    text = next(r for r in table["rows"] if r["stage"] == "stage1_text")
    values = list(scores.values())
    mean, std = statistics.fmean(values), statistics.stdev(values)
    half = stats.t.ppf(0.975, 2) * std / math.sqrt(3)
    assert text["seeds"] == [0, 1, 2] and text["test_weighted_f1"] == values and text["n"] == 3
    assert text["mean"] == pytest.approx(mean) and text["std"] == pytest.approx(std)
    assert text["ci95"] == pytest.approx([mean - half, mean + half])
    assert text["paper"] == 0.6984 and text["delta"] == pytest.approx(mean - 0.6984)
    audio = next(r for r in table["rows"] if r["stage"] == "stage1_audio")
    assert audio["n"] == 1 and audio["std"] is None and audio["ci95"] is None
    assert [(f["stage"], f["seed"], f["reason"]) for f in table["failed"]] == [("stage1_audio", 1, "exit status 1")]
    for ext in ("md", "csv", "json", "png"):
        assert (tmp_path / f"table1.{ext}").stat().st_size > 0


def test_plan_file_selects_the_runs_of_the_last_reproduction(tmp_path: Path) -> None:
    chosen = _run(tmp_path, "stage1_text", 0, 0.50, finished_at=1, name="a")
    _run(tmp_path, "stage1_text", 0, 0.90, finished_at=2, name="b")  # newer, but not the reproduction's
    blocked = {"table": "table1", "corpus": "iemocap", "protocol": "iemocap4", "stage": "stage2_text", "seed": 0,
               "text_encoder": "t", "speech_encoder": "s", "status": "blocked", "message": "not run: iemocap/stage1_text/seed0 failed"}  # fmt: skip
    plan_path(tmp_path, "table1").write_text(json.dumps({"run_dirs": [str(chosen)], "blocked": [blocked]}))
    assert main([str(tmp_path), "--json", str(tmp_path / "t.json")]) == 0
    table = json.loads((tmp_path / "t.json").read_text())
    assert [r["test_weighted_f1"] for r in table["rows"] if r["stage"] == "stage1_text"] == [[0.5]]
    assert [f["reason"] for f in table["failed"]] == [blocked["message"]]
