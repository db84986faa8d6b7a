"""``meritsl sweep SWEEP.yaml --count N [--out DIR]``: a W&B sweep file run here, without the W&B service.

W&B's own sweep engine (the ``sweeps`` package) validates the file and proposes each run (grid, random or
bayes, fed back the metric every finished run reached); each run is the command line ``wandb agent`` would
build from the file's ``command:`` (``${args}`` -> ``--key=value``), started as a subprocess. The sweep's
metric is read from the run's own folder (``test_metrics.json``, else the best value in ``metrics.csv``).
``DIR/sweep_state.json`` records every run as it starts and ends: a killed sweep started again skips the
finished runs and redoes the one that was cut short. This process imports neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

STATE = "sweep_state.json"
# the agent's command macros this runner fills in (``${args_json_file}`` needs the agent's own files)
MACROS = ("env", "interpreter", "program", "args", "args_no_hyphens", "args_no_equals", "args_no_boolean_flags", "args_json")
LOGGER_DIR_KEYS = ("trainer.logger", "trainer.default_root_dir")


class SweepError(Exception):
    """A sweep that cannot run: reported as one line naming the file or key, before any training."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meritsl sweep", description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="a W&B sweep config (experiments/sweeps/*.yaml)")
    p.add_argument("--count", type=int, default=None, help="runs in this sweep folder in all, counting earlier invocations (default: a grid's size; required for random and bayes)")
    p.add_argument("--out", type=Path, default=None, help="sweep folder: state, logs and results (default runs/sweeps/<sweep file name>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the proposals (random and bayes), so a sweep can be repeated")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or Path("runs/sweeps") / args.sweep.stem
    try:
        sweep = load_sweep(args.sweep)
        if args.count is not None and args.count < 1:
            raise SweepError(f"--count must be at least 1, not {args.count}")
        if args.count is None and sweep["method"] != "grid":
            raise SweepError(f"{args.sweep}: a {sweep['method']} sweep has no end; give --count N")
        return LocalSweep(args.sweep, sweep, out, args.seed).run(args.count)
    except SweepError as e:
        print(f"meritsl sweep: {e}", file=sys.stderr)
        return 2


# -- the sweep file -------------------------------------------------------------------------------------------
def sweeps_engine() -> Any:
    """The ``sweeps`` package (its pydantic-1 style config warns under pydantic 2; harmless)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import sweeps

    return sweeps


def load_sweep(path: Path) -> dict[str, Any]:
    """Reads and validates a sweep file with W&B's own schema, plus what this runner needs: a ``metric``
    and a ``command`` list with ``${args}`` and flat (dotted) parameter names."""
    if not path.is_file():
        raise SweepError(f"{path}: no such file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not YAML ({' '.join(str(e).split())})") from None
    if not isinstance(config, dict):
        raise SweepError(f"{path}: not a W&B sweep (expected a mapping with method, metric, parameters, command)")
    try:
        violations = sweeps_engine().schema_violations_from_proposed_config(config)
    except ValueError as e:
        violations = [str(e)]
    if violations:
        raise SweepError(f"{path}: not a valid W&B sweep: {'; '.join(violations)}")
    metric = config.get("metric")
    if not isinstance(metric, dict) or not metric.get("name"):
        raise SweepError(f"{path}: no metric (metric: {{name: val/weighted_f1, goal: maximize}}) to rank the runs by")
    for name, spec in config["parameters"].items():
        if "parameters" in spec:
            raise SweepError(f"{path}: parameter '{name}' nests parameters; name each config key flat, e.g. model.init_args.lr")
    command = config.get("command")
    if not isinstance(command, list) or not all(isinstance(c, str | int | float) for c in command):
        raise SweepError(f"{path}: no command list (command: [${{env}}, meritsl, fit, --config, CONFIG.yaml, ${{args}}])")
    words = [str(c) for c in command]
    if "${args}" not in words:
        raise SweepError(f"{path}: the command has no ${{args}}, so no run would receive its parameters")
    if "fit" not in words:
        raise SweepError(f"{path}: the command is not a `meritsl fit` command: {' '.join(words)}")
    unknown = [w for w in words if w.startswith("${") and w.endswith("}") and w[2:-1] not in MACROS]
    if unknown:
        raise SweepError(f"{path}: command macro {unknown[0]} is not supported here (supported: {', '.join('${' + m + '}' for m in MACROS)})")
    return config


def plain(value: Any) -> Any:
    """numpy scalars (as ``sweeps`` proposes them) as Python values, which render as the agent's JSON ones."""
    return value.item() if hasattr(value, "item") else value


def render_command(sweep: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The command line ``wandb agent`` builds for a run with these parameters (its own helpers, same rules:
    ``${envvar:NAME}`` filled from the environment, each macro token replaced by its list)."""
    from wandb.sdk.launch.sweeps import utils as agent_utils

    command = agent_utils.create_sweep_command([str(c) for c in sweep["command"]])
    macros = agent_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros.update(interpreter=["python"], program=[str(sweep.get("program", ""))], env=["/usr/bin/env"])
    line: list[str] = []
    for word in command:
        line += (macros.get(word[2:-1]) or []) if word.startswith("${") and word.endswith("}") else [word]
    return line


# -- the target config ----------------------------------------------------------------------------------------
def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unknown_parameters(names: list[str], flat: dict[str, Any]) -> list[str]:
    """Parameters that name no key of the resolved config (a key or a group of keys). Keys below a group
    whose ``class_path`` is itself swept are left to the run, since their set depends on the class."""
    known = set(flat) | {".".join(k.split(".")[:i]) for k in flat for i in range(1, k.count(".") + 1)}
    swept_classes = [n[: -len("class_path")] for n in names if n.endswith("class_path")]
    return [n for n in names if n not in known and not any(n.startswith(g) for g in swept_classes)]


def child_env(run_id: str | None = None) -> dict[str, str]:
    """The runs' environment: this interpreter's scripts first on PATH (``meritsl``, ``python``), W&B offline
    unless WANDB_MODE says otherwise, and a run id as the agent gives one."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("WANDB_MODE", "offline")
    for var in ("WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH"):  # no server sweep to attach to
        env.pop(var, None)
    if run_id:
        env["WANDB_RUN_ID"] = run_id
    return env


def resolve_config(sweep_path: Path, sweep: dict[str, Any]) -> dict[str, Any]:
    """The target's resolved config (``... fit --config X --print_config``, parameters left out): a command
    that does not parse stops here, before any training."""
    command = [*render_command(sweep, {}), "--print_config"]
    out = subprocess.run(command, capture_output=True, text=True, env=child_env())
    if out.returncode != 0:
        lines = [ln.strip() for ln in (out.stderr or out.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else f"exit status {out.returncode}")
        raise SweepError(f"{sweep_path}: its command `{shlex.join(command[:-1])}` does not parse: {reason}")
    try:
        config = yaml.safe_load(out.stdout)
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict):
        raise SweepError(f"{sweep_path}: `{shlex.join(command)}` printed no config")
    return flatten(config)


def logger_dir(sweep_path: Path, flat: dict[str, Any], params: dict[str, Any]) -> Path:
    """``<save_dir>/<name>``, the folder in which each run's logger makes a new ``version_N``."""
    value = {**flat, **params}.get
    logger = value("trainer.logger")
    if logger is False:
        raise SweepError(f"{sweep_path}: the target has trainer.logger: false, so no run gets its own folder to read")
    if isinstance(logger, list) and logger and isinstance(logger[0], dict):
        args0 = logger[0].get("init_args", {})
        save_dir, name, version = args0.get("save_dir"), args0.get("name"), args0.get("version")
    elif value("trainer.logger.class_path"):
        save_dir, name = value("trainer.logger.init_args.save_dir"), value("trainer.logger.init_args.name")
        version = value("trainer.logger.init_args.version")
    else:  # Lightning's default logger
        save_dir, name, version = value("trainer.default_root_dir") or ".", "lightning_logs", None
    if version not in (None, ""):
        raise SweepError(f"{sweep_path}: trainer.logger.init_args.version is fixed ({version}), so every run would write into one folder")
    return Path(str(save_dir or ".")) / str(name or "")


# -- one run's results ----------------------------------------------------------------------------------------
def read_metric(run_dir: Path, metric: str) -> tuple[list[float], dict[str, float]]:
    """The metric's history (``metrics.csv``, one value per logged row) and the run's test metrics."""
    test_file = run_dir / "test_metrics.json"
    test = json.loads(test_file.read_text()).get("test", {}) if test_file.is_file() else {}
    history: list[float] = []
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.is_file():
        with open(metrics_csv, newline="") as f:
            history = [float(row[metric]) for row in csv.DictReader(f) if row.get(metric) not in (None, "")]
    return history, {k: float(v) for k, v in test.items()}


def best(values: list[float], goal: str) -> float:
    return min(values) if goal == "minimize" else max(values)


# -- the sweep ------------------------------------------------------------------------------------------------
class LocalSweep:
    """Proposes, runs and records the runs of one sweep file in one folder."""

    def __init__(self, sweep_path: Path, sweep: dict[str, Any], out: Path, seed: int = 0) -> None:
        self.path, self.sweep, self.out, self.seed = sweep_path, sweep, out, seed
        self.metric = sweep["metric"]["name"]
        self.goal = sweep["metric"].get("goal", "minimize")
        self.digest = hashlib.sha256(json.dumps(sweep, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.state = self._load_state()

    def _load_state(self) -> dict[str, Any]:
        path = self.out / STATE
        if not path.is_file():
            return {"sweep_file": str(self.path), "sweep_digest": self.digest, "trials": []}
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SweepError(f"{path}: unreadable sweep state ({e}); move it away to start this sweep afresh") from None
        if state.get("sweep_digest") != self.digest:
            raise SweepError(f"{self.out} holds a sweep of different contents ({state.get('sweep_file')}); give another --out")
        return state

    def _save_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / f".{STATE}.tmp"
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.out / STATE)

    def run(self, count: int | None) -> int:
        """Runs until ``count`` runs have ended (or the grid is done); writes the results after each."""
        flat = resolve_config(self.path, self.sweep)
        unknown = unknown_parameters(list(self.sweep["parameters"]), flat)
        if unknown:
            cmd = shlex.join(render_command(self.sweep, {}))
            raise SweepError(f"{self.path}: parameter {', '.join(repr(u) for u in unknown)} names no config key of `{cmd}`")
        logger_dir(self.path, flat, {})  # a fixed version stops here, not after the first run
        trials = self.state["trials"]
        for trial in trials:
            if trial["state"] == "running":  # cut short by a kill: redo it with the same parameters
                trial.update(state="pending", error=None)
        while True:
            ended = sum(t["state"] in ("finished", "failed") for t in trials)
            if count is not None and ended >= count:
                break
            trial = next((t for t in trials if t["state"] == "pending"), None) or self._propose()
            if trial is None:
                print(f"[sweep] the grid is exhausted after {ended} runs")
                break
            self._run_trial(trial, flat, ended + 1, count)
            self.write_results()
        self.write_results()
        finished = [t for t in trials if t["state"] == "finished"]
        print(f"[sweep] {len(finished)} finished, {len(trials) - len(finished)} failed or pending; results in {self.out / 'sweep_results.md'}")
        return 0 if finished else 1

    def _propose(self) -> dict[str, Any] | None:
        engine = sweeps_engine()
        done = [
            engine.SweepRun(
                name=t["id"],
                state=engine.RunState.finished if t["state"] == "finished" else engine.RunState.failed,
                config={k: {"value": v} for k, v in t["params"].items()},
                summary_metrics={self.metric: t["metric"]} if t.get("metric") is not None else {},
                history=[{self.metric: v} for v in t.get("history", [])],
            )
            for t in self.state["trials"]
        ]
        index = len(self.state["trials"])
        random.seed(self.seed * 100_003 + index)  # proposals repeat for the same --seed
        import numpy as np

        np.random.seed((self.seed * 100_003 + index) % 2**32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proposal = engine.next_run(self.sweep, done, validate=True)
        if proposal is None:
            return None
        params = {k: plain(v["value"]) for k, v in proposal.config.items()}
        trial = {"id": f"{self.path.stem[:24]}-{index + 1:03d}", "params": params, "state": "pending"}
        self.state["trials"].append(trial)
        return trial

    def _run_trial(self, trial: dict[str, Any], flat: dict[str, Any], number: int, count: int | None) -> None:
        from wandb.sdk.lib.runid import generate_id

        folder = logger_dir(self.path, flat, trial["params"])
        before = set(folder.glob("version_*"))
        command = render_command(self.sweep, trial["params"])
        log = self.out / "logs" / f"{trial['id']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        trial.update(state="running", command=command, log=str(log), wandb_run_id=generate_id(), started=time.time())
        self._save_state()
        shown = " ".join(f"{k}={v}" for k, v in trial["params"].items())
        print(f"[sweep] run {number}/{count or '?'} {trial['id']}: {shown} (log {log})", flush=True)
        with open(log, "w") as f:
            proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=child_env(trial["wandb_run_id"]))
            previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            try:
                code = proc.wait()
            finally:
                if proc.poll() is None:  # this runner was stopped: stop the run too (it is redone next time)
                    proc.terminate()
                    proc.wait()
                signal.signal(signal.SIGTERM, previous)
        trial["seconds"] = round(time.time() - trial.pop("started"), 1)
        new = sorted(set(folder.glob("version_*")) - before)
        mine = [d for d in new if list(d.glob(f"wandb/*-{trial['wandb_run_id']}"))] or new
        run_dir = mine[-1] if len(mine) == 1 else None
        trial["run_dir"] = str(run_dir) if run_dir else None
        if code != 0:
            self._fail(trial, f"exit status {code}; see {log}")
        elif run_dir is None:
            self._fail(trial, f"found {len(new)} new run folders in {folder} (expected one)")
        else:
            history, test = read_metric(run_dir, self.metric)
            trial.update(history=history, test=test)
            if self.metric in test:
                trial.update(state="finished", metric=test[self.metric])
            elif history:
                trial.update(state="finished", metric=best(history, self.goal))
            else:
                self._fail(trial, f"{self.metric} is in neither {run_dir / 'metrics.csv'} nor test_metrics.json")
        self._save_state()
        if trial["state"] == "finished":
            print(f"[sweep] {trial['id']}: {self.metric} = {trial['metric']:.4f} ({trial['seconds']:.0f} s, {run_dir})", flush=True)

    def _fail(self, trial: dict[str, Any], error: str) -> None:
        trial.update(state="failed", metric=None, error=error)
        print(f"[sweep] {trial['id']} failed: {error}", file=sys.stderr, flush=True)

    # -- results --------------------------------------------------------------------------------------------
    def ranked(self) -> list[dict[str, Any]]:
        """Ended runs, best first by the sweep's metric; failed runs last."""
        ended = [t for t in self.state["trials"] if t["state"] in ("finished", "failed")]
        sign = 1 if self.goal == "minimize" else -1
        return sorted(ended, key=lambda t: (t.get("metric") is None, sign * (t.get("metric") or 0.0)))

    def write_results(self) -> None:
        rows = self.ranked()
        params = list(self.sweep["parameters"])
        tests = sorted({k for t in rows for k in t.get("test", {}) if k.endswith("weighted_f1")})
        header = ["rank", "run", "state", self.metric, *params, *tests, "run_dir", "config", "error"]
        table = []
        for rank, t in enumerate(rows, 1):
            config = str(Path(t["run_dir"]) / "config.yaml") if t.get("run_dir") else ""
            table.append(
                [rank, t["id"], t["state"], t.get("metric"), *(t["params"].get(p) for p in params),
                 *(t.get("test", {}).get(k) for k in tests), t.get("run_dir") or "", config, t.get("error") or ""]
            )  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "sweep_results.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(["" if v is None else v for v in row] for row in table)
        (self.out / "sweep_results.md").write_text(self._markdown(header, table))

    def _markdown(self, header: list[str], table: list[list[Any]]) -> str:
        def cell(v: Any) -> str:
            return "—" if v in (None, "") else f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")

        best_row = next((r for r in table if r[2] == "finished"), None)
        lines = [
            f"# Sweep {self.sweep.get('name', self.path.stem)} ({self.path})",
            "",
            f"Method {self.sweep['method']}; runs ranked by {self.metric} ({self.goal}), read from each run's own folder; "
            f"{sum(r[2] == 'finished' for r in table)} finished, {sum(r[2] == 'failed' for r in table)} failed.",
            "",
        ]
        if best_row:
            lines += [f"Best run: {best_row[1]}, {self.metric} = {best_row[3]:.4f}; config: `{best_row[-2]}`", ""]
        keep = [i for i, h in enumerate(header) if h not in ("config",)]
        lines.append("| " + " | ".join(header[i] for i in keep) + " |")
        lines.append("|" + "---|" * len(keep))
        lines += ["| " + " | ".join(cell(row[i]) for i in keep) + " |" for row in table]
        return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
