"""``meritsl tabulate RUN_DIR ...``: a table of test metrics over runs (mean ± std over the versions of each run)."""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meritsl tabulate", description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", type=Path, help="folders holding run directories (e.g. runs/fig3)")
    p.add_argument("--metric", default="test/weighted_f1")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    args = p.parse_args(argv)
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
