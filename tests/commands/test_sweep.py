"""``meritsl sweep``: the sweep files validate, runs are proposed by W&B's ``sweeps`` engine and run as the
agent's command line, results are ranked from each run's own folder, a killed sweep resumes, bad files stop
before any training.

Most tests drive a stand-in for ``meritsl fit`` (FAKE_FIT below: it parses ``--config`` and ``--key=value``
like the CLI, answers ``--print_config`` and writes a run folder with a metric computed from its parameters),
so the runner's own behaviour is checked in seconds; one test runs real ``meritsl fit`` runs on the demo's
generated corpus.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from meritsl_lightning.commands import sweep as sweep_cmd
from tests.stage_runner import StageChain, demo_layout

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))
HEAVY = ("torch", "lightning", "pytorch_lightning", "transformers")

FAKE_FIT = r'''
import csv, os, sys, time
from pathlib import Path
import yaml

def put(cfg, key, value):
    *groups, last = key.split(".")
    for g in groups:
        cfg = cfg.setdefault(g, {})
    cfg[last] = value

def merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v

args, cfg = sys.argv[2:], {}
assert sys.argv[1] == "fit", sys.argv
i = 0
while i < len(args):
    if args[i] == "--config":
        merge(cfg, yaml.safe_load(open(args[i + 1])))
        i += 2
        continue
    if args[i].startswith("--") and "=" in args[i]:
        key, value = args[i][2:].split("=", 1)
        put(cfg, key, yaml.safe_load(value))
    i += 1
if "--print_config" in args:
    print(yaml.safe_dump(cfg))
    sys.exit(0)
model = cfg["model"]["init_args"]
if model.get("lr") == float(os.environ.get("FAKE_FAIL_LR", "-1")):
    sys.exit("diverged")
logger = cfg["trainer"]["logger"]["init_args"]
folder = Path(logger["save_dir"]) / logger["name"]
folder.mkdir(parents=True, exist_ok=True)
run = folder / f"version_{len(list(folder.glob('version_*')))}"
run.mkdir()
(run / "config.yaml").write_text(yaml.safe_dump(cfg))
if os.environ.get("FAKE_HANG_LR") and model.get("lr") == float(os.environ["FAKE_HANG_LR"]):
    time.sleep(600)
score = 1.0 - abs(model["lr"] - 0.01) * 10 - model.get("dropout", 0.0) / 10
with open(run / "metrics.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["epoch", "step", "train/loss", "val/weighted_f1"])
    w.writerows([[0, 1, 1.0, ""], [0, 1, "", score - 0.2], [1, 2, "", score], [2, 3, "", score - 0.1]])
'''


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """A sweep target folder: fake_fit.py, its base config and a sweep-file writer's home."""
    (tmp_path / "fake_fit.py").write_text(FAKE_FIT)
    base = {
        "trainer": {"max_epochs": 3, "logger": {"class_path": "CSVLogger", "init_args": {"save_dir": str(tmp_path / "runs"), "name": "fake", "version": None}}},
        "model": {"class_path": "Fake", "init_args": {"lr": 0.1, "dropout": 0.0}},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    return tmp_path


def write_sweep(folder: Path, method: str = "grid", parameters: dict | None = None, **extra: object) -> Path:
    spec = {
        "method": method,
        "metric": {"name": "val/weighted_f1", "goal": "maximize"},
        "parameters": parameters or {"model.init_args.lr": {"values": [0.001, 0.01, 0.1]}},
        "command": ["${env}", "python", str(folder / "fake_fit.py"), "fit", "--config", str(folder / "base.yaml"), "${args}"],
        **extra,
    }
    path = folder / f"{method}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_sweep(*argv: str, env: dict[str, str] | None = None, cwd: Path = REPO, **kwargs: object) -> subprocess.CompletedProcess:
    """``meritsl sweep`` in a fresh interpreter that reports which heavy modules it imported."""
    probe = (
        "import json, sys\n"
        "from meritsl_lightning.commands.sweep import main\n"
        "code = main(json.loads(sys.argv[1]))\n"
        f"print('HEAVY', json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
        "sys.exit(code)\n"
    )
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", probe, json.dumps(list(argv))], capture_output=True, text=True, env=full_env, cwd=cwd, **kwargs)


def sweep_here(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """``meritsl sweep`` in this process (its runs are still subprocesses): exit status and stderr."""
    code = sweep_cmd.main(list(argv))
    return code, capsys.readouterr().err


def results(out: Path) -> list[dict[str, str]]:
    with open(out / "sweep_results.csv", newline="") as f:
        return list(csv.DictReader(f))


# -- the sweep files ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_file_validates_and_renders_the_agents_command(path: Path) -> None:
    engine = sweep_cmd.sweeps_engine()
    spec = sweep_cmd.load_sweep(path)
    assert engine.schema_violations_from_proposed_config(spec) == []
    proposal = engine.next_run(spec, [], validate=True)
    params = {k: sweep_cmd.plain(v["value"]) for k, v in proposal.config.items()}
    assert set(params) == set(spec["parameters"])
    line = sweep_cmd.render_command(spec, params)
    assert line[:3] == ["/usr/bin/env", "meritsl", "fit"]
    configs = [line[i + 1] for i, w in enumerate(line) if w == "--config"]
    assert (REPO / configs[0]).is_file() and configs[-1] == "experiments/logging/wandb.yaml"
    flags = [w for w in line if w.startswith("--") and w.split("=")[0][2:] in params]
    assert flags == [f"--{k}={v}" for k, v in params.items()]
    assert line.index(flags[0]) > line.index(configs[-1])  # --config before ${args}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_parameters_name_keys_of_their_target_config(path: Path) -> None:
    from meritsl_lightning.trainer_cli import MeritslCLI

    spec = sweep_cmd.load_sweep(path)
    line = sweep_cmd.render_command(spec, {})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        MeritslCLI(args=[*line[2:], "--print_config"])
    flat = sweep_cmd.flatten(yaml.safe_load(printed.getvalue()))
    assert sweep_cmd.unknown_parameters(list(spec["parameters"]), flat) == []
    assert flat["wandb.enabled"] is True
    assert flat["trainer.logger.class_path"].endswith("CSVLogger")  # the run folder stays the CSV logger's


# -- the runner, on a stand-in target -------------------------------------------------------------------------
def test_grid_runs_every_point_ranks_best_first_without_importing_torch(fake: Path) -> None:
    out = fake / "sweep"
    done = run_sweep(str(write_sweep(fake)), "--out", str(out), cwd=fake, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.split("HEAVY ")[-1]) == []
    rows = results(out)
    assert [float(r["model.init_args.lr"]) for r in rows] == [0.01, 0.001, 0.1]  # best first
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and all(r["state"] == "finished" for r in rows)
    # the metric is the best validation value of each run's own metrics.csv (not its last)
    assert float(rows[0]["val/weighted_f1"]) == pytest.approx(1.0)
    assert float(rows[1]["val/weighted_f1"]) == pytest.approx(1.0 - 0.09)
    config = Path(rows[0]["config"])
    assert config.is_file() and yaml.safe_load(config.read_text())["model"]["init_args"]["lr"] == 0.01
    md = (out / "sweep_results.md").read_text()
    assert f"config: `{config}`" in md and md.index("| 1 |") < md.index("| 2 |")
    state = json.loads((out / "sweep_state.json").read_text())
    assert state["trials"][0]["command"][-1] == "--model.init_args.lr=0.001"


def test_bayes_feeds_back_metrics_and_failed_runs_rank_last(fake: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {
        "model.init_args.lr": {"values": [0.001, 0.01, 0.1]},
        "model.init_args.dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
    }
    out = fake / "sweep"
    monkeypatch.setenv("FAKE_FAIL_LR", "0.1")
    code, err = sweep_here(capsys, str(write_sweep(fake, "bayes", params)), "--count", "4", "--out", str(out))
    assert code == 0, err
    rows = results(out)
    assert len(rows) == 4
    finished = [r for r in rows if r["state"] == "finished"]
    failed = [r for r in rows if r["state"] == "failed"]
    assert rows[: len(finished)] == finished and all(float(r["model.init_args.lr"]) == 0.1 for r in failed)
    assert all("exit status 1" in r["error"] for r in failed)
    scores = [float(r["val/weighted_f1"]) for r in finished]
    assert scores == sorted(scores, reverse=True)


def test_killed_sweep_continues_where_it_stopped(fake: Path, capsys: pytest.CaptureFixture) -> None:
    path, out = write_sweep(fake), fake / "sweep"
    probe = "from meritsl_lightning.commands.sweep import main; import sys; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FAKE_HANG_LR": "0.01"}
    proc = subprocess.Popen([sys.executable, "-c", probe, str(path), "--out", str(out)], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((fake / "runs" / "fake").glob("version_*"))) < 2:
            time.sleep(0.5)
        assert len(list((fake / "runs" / "fake").glob("version_*"))) == 2, "the second run never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its run, as a crash or a cancelled job would
        proc.wait()
    state = json.loads((out / "sweep_state.json").read_text())
    assert [t["state"] for t in state["trials"]] == ["finished", "running"]
    first_dir = state["trials"][0]["run_dir"]

    code, err = sweep_here(capsys, str(path), "--out", str(out))
    assert code == 0, err
    state = json.loads((out / "sweep_state.json").read_text())
    assert [t["state"] for t in state["trials"]] == ["finished"] * 3
    assert state["trials"][0]["run_dir"] == first_dir  # not redone
    assert state["trials"][1]["params"] == {"model.init_args.lr": 0.01}  # the cut-short run, redone
    assert len(list((fake / "runs" / "fake").glob("version_*"))) == 4  # 1 + (killed + redo) + 1
    assert len(results(out)) == 3


# -- bad input: one message naming the file or key, before any run ------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(parameters={"model.init_args.lrr": {"values": [1, 2]}}), "parameter 'model.init_args.lrr' names no config key"),
        (lambda s: s.update(method="gridd"), "not a valid W&B sweep"),
        (lambda s: s.update(parameters={"model.init_args.lr": 0.1}), "not a valid W&B sweep"),
        (lambda s: s.update(parameters={"model.init_args.lr": {"distribution": "uniform", "min": 2, "max": 1}}), "not a valid W&B sweep"),
        (lambda s: s.pop("metric"), "no metric"),
        (lambda s: s["command"].remove("${args}"), "no ${args}"),
        (lambda s: s["command"].append("${args_json_file}"), "not supported"),
        (lambda s: s["command"].extend(["--trainer.logger.init_args.version=0"]), "version is fixed"),
        (lambda s: s["command"].__setitem__(5, "missing.yaml"), "does not parse"),
    ],
    ids=["unknown-key", "method", "parameter-not-a-mapping", "min-above-max", "no-metric", "no-args", "macro", "fixed-version", "missing-config"],
)
def test_bad_sweep_stops_before_any_run(fake: Path, capsys: pytest.CaptureFixture, mutate, message: str) -> None:
    path = write_sweep(fake)
    spec = yaml.safe_load(path.read_text())
    mutate(spec)
    path.write_text(yaml.safe_dump(spec))
    code, err = sweep_here(capsys, str(path), "--count", "2", "--out", str(fake / "sweep"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"meritsl sweep: {path}") and message in lines[0], err
    assert not (fake / "runs").exists()  # nothing ran


def test_sweep_file_that_is_not_yaml_or_not_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for text, message in (("method: [grid\n", "not YAML"), ("- a\n- b\n", "not a W&B sweep"), ("{}\n", "not a valid W&B sweep")):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        code, err = sweep_here(capsys, str(path), "--count", "1", "--out", str(tmp_path / "out"))
        assert code == 2 and err.startswith(f"meritsl sweep: {path}") and message in err, err


def test_a_folder_holding_another_sweep_is_refused(fake: Path, capsys: pytest.CaptureFixture) -> None:
    out = fake / "sweep"
    assert sweep_here(capsys, str(write_sweep(fake)), "--count", "1", "--out", str(out))[0] == 0
    other = write_sweep(fake, parameters={"model.init_args.lr": {"values": [0.5]}})
    code, err = sweep_here(capsys, str(other), "--count", "1", "--out", str(out))
    assert code == 2 and "holds a sweep of different contents" in err


# -- real runs: the demo's Stage III sweep on a generated corpus ----------------------------------------------
@pytest.mark.slow  # three `meritsl fit` processes (each imports torch): 40-60 s on 2 idle cores, minutes when busy
def test_demo_stage3_sweep_runs_two_meritsl_fit_runs(chain: StageChain, tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "experiments" / "sweeps" / "demo_stage3.yaml").read_text())
    spec["command"][spec["command"].index("${args}") : 0] = ["--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]
    path = tmp_path / "demo_stage3_quick.yaml"
    path.write_text(yaml.safe_dump(spec))
    demo = demo_layout(chain, tmp_path / "demo")
    out = tmp_path / "sweep"
    done = run_sweep(str(path), "--count", "2", "--out", str(out), env={"MERITSL_DEMO_DIR": str(demo)}, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert json.loads(done.stdout.split("HEAVY ")[-1]) == []
    rows = results(out)
    assert len(rows) == 2 and all(r["state"] == "finished" for r in rows), rows
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == demo / "logs" / "sweep_stage3"
        history = [float(r["val/weighted_f1"]) for r in csv.DictReader(open(run_dir / "metrics.csv")) if r["val/weighted_f1"]]
        assert float(row["val/weighted_f1"]) == pytest.approx(max(history))
        test = json.loads((run_dir / "test_metrics.json").read_text())["test"]
        assert float(row["test/weighted_f1"]) == pytest.approx(test["test/weighted_f1"])
        config = yaml.safe_load(Path(row["config"]).read_text())
        assert config["model"]["init_args"]["lr"] == pytest.approx(float(row["model.init_args.lr"]))
        assert config["wandb"]["enabled"] is True and list(run_dir.glob("wandb/offline-run-*"))
    assert float(rows[0]["val/weighted_f1"]) >= float(rows[1]["val/weighted_f1"])
