"""Writing a reproduced table: ``<name>.md``, ``.csv``, ``.json`` and ``.png`` (values are fractions)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from meritsl_lightning.reproduce.spec import TableSpec

DASH = "—"
CSV_FIELDS = (
    "corpus", "protocol", "stage", "text_encoder", "speech_encoder", "seeds", "test_weighted_f1",
    "n", "mean", "std", "ci95_lo", "ci95_hi", "paper", "delta",
)  # fmt: skip


def _f(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None:
        return DASH
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def write_all(out: Path, table: TableSpec, result: dict[str, Any], notes: list[str]) -> list[Path]:
    """Write the four files into ``out``; returns their paths."""
    paths = [out / f"{table.name}.{ext}" for ext in ("md", "csv", "json", "png")]
    paths[0].write_text(markdown(table, result, notes))
    write_csv(paths[1], result["rows"])
    paths[2].write_text(json.dumps({**result, "notes": notes}, indent=1) + "\n")
    plot(paths[3], table, result["rows"])
    return paths


def markdown(table: TableSpec, result: dict[str, Any], notes: list[str]) -> str:
    lines = [
        f"# {table.title}",
        "",
        "Test weighted F1 of every seed (fractions); mean, sample std (ddof=1), 95 % confidence interval of the mean "
        "(t distribution, n - 1 degrees of freedom; clipped to [0, 1]). Model selection on validation weighted F1 only; each score is "
        "read from its run's own `test_metrics.json`.",
        "",
        "| corpus | protocol | stage | seeds | test weighted F1 per seed | mean ± std | 95 % CI | n | paper | Δ | text encoder | speech encoder |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        per_seed = " ".join(_f(v) for v in r["test_weighted_f1"]) or DASH
        ci = DASH if r["ci95"] is None else f"[{_f(r['ci95'][0])}, {_f(r['ci95'][1])}]"
        mean_std = _f(r["mean"]) + ("" if r["std"] is None else f" ± {_f(r['std'])}")
        lines.append(
            f"| {r['corpus']} | {r['protocol']} | {r['stage']} | {' '.join(map(str, r['seeds'])) or DASH} | {per_seed} "
            f"| {mean_std} | {ci} | {r['n']} | {_f(r['paper'])} | {_f(r['delta'], sign=True)} "
            f"| {r['text_encoder']} | {r['speech_encoder']} |"
        )
    lines += ["", "## Failed runs", ""]
    if result["failed"]:
        for f in result["failed"]:
            where = f" (log: {f['log']})" if f.get("log") else ""
            lines.append(f"- {f['corpus']} {f['protocol']} {f['stage']} seed {f['seed']}: {f['reason']}{where}")
    else:
        lines.append("none")
    if notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    **{k: r[k] for k in ("corpus", "protocol", "stage", "text_encoder", "speech_encoder", "n")},
                    "seeds": " ".join(map(str, r["seeds"])),
                    "test_weighted_f1": " ".join(repr(v) for v in r["test_weighted_f1"]),
                    **{k: "" if r[k] is None else repr(r[k]) for k in ("mean", "std", "paper", "delta")},
                    "ci95_lo": "" if r["ci95"] is None else repr(r["ci95"][0]),
                    "ci95_hi": "" if r["ci95"] is None else repr(r["ci95"][1]),
                }
            )


def plot(path: Path, table: TableSpec, rows: list[dict[str, Any]]) -> None:
    """One panel per corpus: each stage's mean with its 95 % interval as error bars, the paper's value beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys((r["corpus"], r["protocol"]) for r in rows)) or [("none", "")]
    fig, axes = plt.subplots(1, len(corpora), figsize=(4.2 * len(corpora), 3.8), squeeze=False)
    labels = {s.name: s.label for s in table.stages}
    for ax, (corpus, protocol) in zip(axes[0], corpora, strict=True):
        panel = [r for r in rows if (r["corpus"], r["protocol"]) == (corpus, protocol)]
        xs = list(range(len(panel)))
        means = [r["mean"] if r["mean"] is not None else float("nan") for r in panel]
        errors = [[0.0, 0.0] if r["ci95"] is None else [r["mean"] - r["ci95"][0], r["ci95"][1] - r["mean"]] for r in panel]
        ax.bar([x - 0.2 for x in xs], means, width=0.4, yerr=list(zip(*errors, strict=True)) if errors else None,
               capsize=3, label="reproduced (mean, 95 % CI)", color="tab:blue")  # fmt: skip
        if table.paper:  # a table the paper gives no numbers for (Fig. 4) has no paper bars
            paper = [r["paper"] if r["paper"] is not None else float("nan") for r in panel]
            ax.bar([x + 0.2 for x in xs], paper, width=0.4, label="paper", color="tab:gray")
        ax.set_xticks(xs, [labels.get(r["stage"], r["stage"]) for r in panel], rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"{corpus} ({protocol})")
        ax.set_ylabel("test weighted F1")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
