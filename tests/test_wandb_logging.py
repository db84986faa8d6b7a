"""``--config experiments/logging/wandb.yaml``: a run logs to W&B (offline here) beside its CSV run folder,
after any stage config, under DDP as one run, and no API key reaches any file the run wrote."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meritsl_lightning.trainer_cli import MeritslCLI
from tests.stage_runner import StageChain, demo_layout

REPO = Path(__file__).resolve().parent.parent
OVERLAY = REPO / "experiments" / "logging" / "wandb.yaml"
STAGE_CONFIGS = sorted(p for p in (REPO / "experiments").glob("*.yaml")) + sorted((REPO / "experiments" / "demo").glob("*.yaml"))
FAKE_SECRETS = {
    "WANDB_API_KEY": "wandbfake0123456789abcdef0123456789abcdef",
    "OPENAI_API_KEY": "sk-fakeopenai-4242424242424242",
    "HF_TOKEN": "hf_fakehuggingfacetoken777777",
}


def wandb_summary(run_dir: Path) -> dict:
    """W&B's own reading of an offline run (``wandb leet inspect --summary --json``)."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def files_containing(roots: list[Path], secrets: list[str]) -> list[str]:
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                hits += [f"{path}: {s[:6]}..." for s in secrets if s.encode() in data]
    return hits


@pytest.mark.parametrize("config", STAGE_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_overlay_after_any_stage_config_adds_wandb_and_keeps_the_csv_logger(config: Path) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        MeritslCLI(args=["fit", "--config", str(config), "--config", str(OVERLAY), "--print_config"])
    resolved = yaml.safe_load(printed.getvalue())
    assert resolved["wandb"]["enabled"] is True and resolved["wandb"]["project"] == "meritsl"
    assert resolved["wandb"]["log_model"] is False
    assert resolved["trainer"]["logger"]["class_path"].endswith("CSVLogger")


def test_demo_stage_logs_to_wandb_offline_with_no_secret(chain: StageChain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb_home = tmp_path / "wandb_home"
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(wandb_home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    demo = demo_layout(chain, tmp_path / "demo")
    monkeypatch.setenv("MERITSL_DEMO_DIR", str(demo))
    config = REPO / "experiments" / "demo" / "iemocap_stage3.yaml"
    cli = MeritslCLI(args=["fit", "--config", str(config), "--config", str(OVERLAY), "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    root = demo / "logs"
    run_dir = Path(cli.trainer.log_dir)
    assert run_dir == root / "stage3" / "version_0"  # the CSV logger still owns the run folder
    for name in ("config.yaml", "metrics.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "test_metrics.json", "test_confusion_matrix.json"):
        assert (run_dir / name).is_file(), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["wandb"]["enabled"] is True

    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    run = wandb_summary(offline[0])
    assert run["state"] == "finished" and run["exit_code"] == 0
    assert run["project"] == "meritsl" and run["name"] == "iemocap/stage3/seed0"
    assert {"iemocap", "stage3", "seed0", "FusionModule", "iemocap4", "meritsl"} <= set(run["tags"])
    test = json.loads((run_dir / "test_metrics.json").read_text())["test"]
    for key, value in test.items():  # every test metric, the same numbers as the run folder's
        assert run["summary"][key] == pytest.approx(value), key
    assert {"val/weighted_f1", "train/loss_epoch", "val/loss"} <= set(run["summary"])
    assert "table" in str(run["summary"]["test/confusion_matrix_counts"])
    assert "test/confusion_matrix_table" in run["summary"]  # W&B's confusion-matrix plot
    assert run["config"]["model.init_args.dim"] == 32 and run["config"]["wandb.log_model"] is False

    secrets = list(FAKE_SECRETS.values())
    assert files_containing([demo, wandb_home], secrets) == []
    with open(run_dir / "checkpoints" / "best.ckpt", "rb") as f:
        assert not any(s.encode() in f.read() for s in secrets)


def test_second_run_in_the_same_folder_gets_its_own_version(chain: StageChain, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    args = ("stage3", f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}", "--config", str(OVERLAY))
    first, second = chain.fit(*args), chain.fit(*args)
    assert Path(first.trainer.log_dir).name == "version_0" and Path(second.trainer.log_dir).name == "version_1"
    runs = [list(Path(c.trainer.log_dir, "wandb").glob("offline-run-*")) for c in (first, second)]
    assert [len(r) for r in runs] == [1, 1] and runs[0][0].name != runs[1][0].name  # two W&B runs, not one


def test_ddp_job_makes_one_wandb_run(chain: StageChain, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "RANK")}
    cmd = [
        sys.executable, "-m", "meritsl_lightning", "fit", *chain.common_args("ddp"), *chain.model_args("stage3"),
        "--trainer.strategy=ddp", "--trainer.devices=2", f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--config", str(OVERLAY),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env={**env, "WANDB_MODE": "offline"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stderr
    runs = list(tmp_path.rglob("offline-run-*"))
    assert len(runs) == 1 and runs[0].parent == tmp_path / "ddp" / "version_0" / "wandb"
    summary = wandb_summary(runs[0])["summary"]
    assert "test/weighted_f1" in summary and "val/weighted_f1" in summary
