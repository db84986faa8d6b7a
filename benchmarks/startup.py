"""Start-up time of the commands that need no model, against ``python -c "import lightning.pytorch"``.

Each command is started in a fresh interpreter several times, interleaved with the reference so that load on
the machine hits both alike; medians are compared. Target: every such command under a third of the reference.

    python benchmarks/startup.py [--repeats 7] [--json runs/benchmarks/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 1 / 3
REFERENCE = ["-c", "import lightning.pytorch"]


def commands(runs_dir: Path) -> dict[str, list[str]]:
    """Interpreter arguments of each light command (``--help``, and a real ``tabulate`` run)."""
    sys.path.insert(0, str(REPO))
    from meritsl_lightning.cli import PIPELINE_COMMANDS

    light = [c for c in ("prepare", "generate", "tabulate", "pseudo-label", "reproduce", "sweep") if c in PIPELINE_COMMANDS]
    out = {"meritsl --help": ["-m", "meritsl_lightning", "--help"]}
    out.update({f"meritsl {c} --help": ["-m", "meritsl_lightning", c, "--help"] for c in light})
    out["meritsl tabulate (a run)"] = ["-m", "meritsl_lightning", "tabulate", str(runs_dir)]
    return out


def seconds(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):  # tabulate exits 1 when it finds no metrics; anything else is a failure
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp, "runs", "stage1_text", "version_0")
        run.mkdir(parents=True)
        (run / "test_metrics.json").write_text(json.dumps({"test": {"test/weighted_f1": 0.5}}))
        cmds = commands(Path(tmp, "runs"))
        seconds(REFERENCE, env)  # warm the file cache once for both sides
        times: dict[str, list[float]] = {"import lightning.pytorch": [], **{name: [] for name in cmds}}
        for _ in range(args.repeats):
            times["import lightning.pytorch"].append(seconds(REFERENCE, env))
            for name, cmd in cmds.items():
                times[name].append(seconds(cmd, env))
    reference = statistics.median(times["import lightning.pytorch"])
    rows = {name: {"median_s": statistics.median(t), "ratio": statistics.median(t) / reference} for name, t in times.items()}
    print(f"start-up, median of {args.repeats} fresh interpreters ({sys.executable})")
    for name, row in rows.items():
        print(f"  {name:<32} {row['median_s']:7.3f} s   {row['ratio']:6.3f} x reference")
    worst = max(row["ratio"] for name, row in rows.items() if name != "import lightning.pytorch")
    ok = worst < TARGET
    print(f"  slowest light command / import lightning.pytorch = {worst:.3f} (target < {TARGET:.3f}): {'met' if ok else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"repeats": args.repeats, "rows": rows, "target": TARGET, "met": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
