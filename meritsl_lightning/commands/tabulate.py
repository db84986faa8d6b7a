"""``meritsl tabulate RUN_DIR ...``: a table of test metrics over runs.

A folder written by ``meritsl reproduce`` (run folders with ``reproduce_run.json``) gives that table again,
recomputed from each run's own ``test_metrics.json``: the same rows, seeds, mean, std, 95 % interval and
failed runs (``--write`` rewrites ``<table>.{md,csv,json,png}``). Any other folder gives mean ± std over the
versions of each run name.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def collect(roots: list[Path], metric: str) -> dict[str, list[float]]:
    """``<logger dir>/<name>/version_N/test_metrics.json`` files below ``roots``, grouped by ``<name>``."""
    runs: dict[str, list[float]] = defaultdict(list)
    for root in roots:
        for path in sorted(root.rglob("test_metrics.json")):
            test = json.loads(path.read_text()).get("test", {})
            if metric in test:
                runs[path.parent.parent.name].append(float(test[metric]))
    return dict(runs)


def format_rows(runs: dict[str, list[float]], metric: str) -> str:
    lines = [f"{'run':<28} {'n':>3} {metric + ' mean':>22} {'std':>7} {'best':>7}"]
    for name, values in sorted(runs.items()):
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"{name:<28} {len(values):>3} {statistics.fmean(values):>22.4f} {std:>7.4f} {max(values):>7.4f}")
    return "\n".join(lines)


def reproduced_tables(root: Path) -> dict[str, dict[str, Any]]:
    """The tables of a ``meritsl reproduce`` output folder, recomputed from its run folders (empty if none)."""
    from meritsl_lightning.reproduce.aggregate import build_table, load_runs, read_plan, select
    from meritsl_lightning.reproduce.tables import TABLES

    tables = {}
    loaded: dict[str, list] = {}  # metric -> every run folder's record (the tables share the folders)
    for name, table in TABLES.items():
        plan, blocked = read_plan(root, name)
        if table.metric not in loaded:
            loaded[table.metric] = load_runs(root, table.metric)
        records = loaded[table.metric]
        if plan is None:  # no record of the last reproduction: the newest runs first made for this table
            records = [r for r in records if r.marker.get("table") == name]
        chosen = select(records, plan) + blocked
        if chosen:
            tables[name] = build_table(chosen, table)
    return tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meritsl tabulate", description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", type=Path, help="folders holding run directories (e.g. runs/fig3, runs/table1)")
    p.add_argument("--metric", default="test/weighted_f1")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    p.add_argument("--write", action="store_true", help="reproduction folders: rewrite <table>.md/.csv/.json/.png there")
    args = p.parse_args(argv)
    found = {root: reproduced_tables(root) for root in args.roots}
    if any(found.values()):
        from meritsl_lightning.reproduce.report import markdown, write_all
        from meritsl_lightning.reproduce.tables import TABLES

        everything = {}
        for root, tables in found.items():
            notes = [f"recomputed by meritsl tabulate from the run folders in {root}"]
            for name, result in tables.items():
                print(markdown(TABLES[name], result, notes))
                everything[f"{root}:{name}" if len(args.roots) > 1 else name] = result
                if args.write:
                    write_all(root, TABLES[name], result, notes)
        if args.json:
            args.json.write_text(json.dumps(everything if len(everything) > 1 else next(iter(everything.values())), indent=1))
        return 0
    runs = collect(args.roots, args.metric)
    if not runs:
        print(f"no test_metrics.json with {args.metric} below {', '.join(map(str, args.roots))}")
        return 1
    print(format_rows(runs, args.metric))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
