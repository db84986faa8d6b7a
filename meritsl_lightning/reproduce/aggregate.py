"""From run folders to table rows: each run's test score from its own ``test_metrics.json``; mean, sample std
(ddof=1) and a 95 % t-interval over seeds; the paper's value and the difference; failed runs listed."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meritsl_lightning.reproduce.engine import MARKER, read_marker
from meritsl_lightning.reproduce.spec import TableSpec

PLAN_FILE = "{table}.plan.json"  # the run folders the table's last reproduction used (tabulate prefers them)
# a run folder may serve several tables (Fig. 4 reuses Table 1's stage runs in the same folder): rows are
# keyed without the table its marker names
ROW_FIELDS = ("corpus", "protocol", "stage", "text_encoder", "speech_encoder")


@dataclass
class RunRecord:
    run_dir: Path | None  # None: a run that never started because a step it needs failed
    marker: dict[str, Any]
    score: float | None  # the test metric, None when the run did not finish

    @property
    def row_key(self) -> tuple[str, ...]:
        return tuple(str(self.marker.get(f, "")) for f in ROW_FIELDS)


def mean_std_ci(values: list[float], confidence: float = 0.95) -> tuple[float | None, float | None, list[float] | None]:
    """Mean, sample standard deviation (ddof=1) and the t-distribution confidence interval of the mean, clipped
    to [0, 1] (the scores are fractions; with 2 or 3 seeds the t-interval is wide)."""
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    from scipy.stats import t

    std = statistics.stdev(values)
    half = float(t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, std, [max(0.0, mean - half), min(1.0, mean + half)]  # a fraction's interval stays in [0, 1]


def load_runs(out: Path, metric: str) -> list[RunRecord]:
    """Every run folder with a reproduction marker below ``out``, with its score read from its own metrics."""
    records = []
    for marker_path in sorted(out.rglob(MARKER)):
        run_dir = marker_path.parent
        marker = read_marker(run_dir)
        if not marker or "table" not in marker:
            continue  # a pre-training or corpus step, not a table run
        score = None
        metrics = run_dir / "test_metrics.json"
        if marker.get("status") == "finished" and metrics.is_file():
            value = json.loads(metrics.read_text()).get("test", {}).get(metric)
            score = float(value) if isinstance(value, int | float) else None
        records.append(RunRecord(run_dir, marker, score))
    return records


def select(records: list[RunRecord], plan: list[str] | None) -> list[RunRecord]:
    """One record per (row, seed): the run folders the plan names; without a plan, the newest finished run
    (or the newest attempt, when none finished)."""
    if plan is not None:
        chosen = {str(Path(p).resolve()) for p in plan}
        return [r for r in records if r.run_dir is not None and str(r.run_dir.resolve()) in chosen]
    best: dict[tuple, RunRecord] = {}
    for r in records:
        k = (*r.row_key, r.marker.get("seed"))
        old = best.get(k)
        rank = (r.score is not None, r.marker.get("finished_at", 0))
        if old is None or rank > (old.score is not None, old.marker.get("finished_at", 0)):
            best[k] = r
    return list(best.values())


def plan_path(out: Path, table: str) -> Path:
    return out / PLAN_FILE.format(table=table)


def write_plan(out: Path, table: str, run_dirs: list[Path], blocked: list[dict[str, Any]]) -> None:
    """Record which run folders this reproduction used and which runs never started (for ``tabulate``)."""
    plan = {"run_dirs": [str(p) for p in run_dirs], "blocked": blocked}
    plan_path(out, table).write_text(json.dumps(plan, indent=1))


def read_plan(out: Path, table: str) -> tuple[list[str] | None, list[RunRecord]]:
    """The run folders of the table's last reproduction in ``out`` (None without one) and its never-started runs."""
    path = plan_path(out, table)
    if not path.is_file():
        return None, []
    plan = json.loads(path.read_text())
    return plan["run_dirs"], [RunRecord(None, marker, None) for marker in plan.get("blocked", [])]


def build_table(records: list[RunRecord], table: TableSpec) -> dict[str, Any]:
    """``{"rows": [...], "failed": [...]}`` in the table's corpus and stage order; values are fractions."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.row_key, []).append(r)
    corpus_order = {c.name: i for i, c in enumerate(table.corpora)}
    stage_order = {s.name: i for i, s in enumerate(table.stages)}
    rows, failed = [], []
    for key in sorted(groups, key=lambda k: (corpus_order.get(k[0], 99), k[0], k[1], stage_order.get(k[2], 99), *k[2:])):
        corpus, protocol, stage, text_encoder, speech_encoder = key
        runs = sorted(groups[key], key=lambda r: int(r.marker.get("seed", 0)))
        ok = [r for r in runs if r.score is not None]
        for r in runs:
            if r.score is None:
                failed.append(_failure(r))
        scores = [r.score for r in ok]
        mean, std, ci = mean_std_ci(scores)
        paper = table.paper.get((corpus, protocol, stage))
        rows.append(
            {
                "corpus": corpus,
                "protocol": protocol,
                "stage": stage,
                "text_encoder": text_encoder,
                "speech_encoder": speech_encoder,
                "seeds": [int(r.marker["seed"]) for r in ok],
                "test_weighted_f1": scores,
                "n": len(scores),
                "mean": mean,
                "std": std,
                "ci95": ci,
                "paper": paper,
                "delta": None if paper is None or mean is None else mean - paper,
            }
        )
    return {"rows": rows, "failed": failed}


def _failure(r: RunRecord) -> dict[str, Any]:
    m = r.marker
    return {
        "corpus": m.get("corpus"),
        "protocol": m.get("protocol"),
        "stage": m.get("stage"),
        "seed": m.get("seed"),
        "reason": m.get("message") or "no test metrics",
        "run_dir": None if r.run_dir is None else str(r.run_dir),
        "log": m.get("log"),
    }
