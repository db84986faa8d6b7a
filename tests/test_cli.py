"""The one CLI: console scripts, configs with omegaconf interpolation, run directories, the paper configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from meritsl_lightning.checkpoints import read_stage_checkpoint
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.metric_checks import assert_metrics_match_confusion
from tests.stage_runner import StageChain

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child CLI: no leftover DDP variables from this process."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK", "RANK")}
    env.update(extra)
    return env


def test_console_scripts_belong_to_this_project() -> None:
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in ("meritsl", "lightning")}
    assert scripts["meritsl"].value == "meritsl_lightning.cli:main"
    assert scripts["lightning"].value == "meritsl_lightning.cli:lightning_main"
    assert scripts["lightning"].dist.name == "meritsl-lightning"


def test_lightning_script_points_elsewhere_for_foreign_commands() -> None:
    out = subprocess.run([str(BIN / "lightning"), "run", "model"], capture_output=True, text=True, env=clean_env())
    assert out.returncode == 2
    assert "fabric" in out.stderr and "'run'" in out.stderr


def test_help_lists_pipeline_and_training_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "meritsl_lightning", "--help"], capture_output=True, text=True, env=clean_env())
    assert out.returncode == 0
    for word in ("prepare", "generate", "demo", "fit", "validate", "test", "predict"):
        assert word in out.stdout


def test_print_config_resolves_omegaconf_interpolation(tmp_path: Path) -> None:
    env = clean_env(IEMOCAP_ROOT=str(tmp_path / "corpus"))
    out = subprocess.run(
        [str(BIN / "meritsl"), "fit", "--config", str(REPO / "experiments/iemocap_stage1_text.yaml"), "--print_config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert config["data"]["init_args"]["root"] == str(tmp_path / "corpus")
    assert config["model"]["class_path"] == "meritsl_lightning.models.TextUtteranceModule"
    assert config["model"]["init_args"]["lr"] == pytest.approx(2e-5)
    assert config["seed_everything"] == 0


def test_each_run_writes_its_config_into_its_own_directory(chain: StageChain) -> None:
    # its own logger name: a re-run under "stage2_text" would move the shared chain's best.ckpt pointer
    first = Path(chain.fit("stage2_text", name="stage2_text_rerun").trainer.log_dir)
    second = Path(chain.fit("stage2_text", name="stage2_text_rerun").trainer.log_dir)
    assert first != second and first.parent == second.parent
    assert (first / "config.yaml").is_file() and (second / "config.yaml").is_file()
    assert yaml.safe_load((second / "config.yaml").read_text())["model"]["init_args"]["stage1_checkpoint"]


def test_second_stage2_run_reads_stage1_embeddings_from_the_cache(chain: StageChain) -> None:
    again = chain.fit("stage2_audio", name="stage2_audio_rerun")
    assert again.model.cache.misses == 0
    assert again.model.cache.hits >= 3  # train, validation, test


def test_changed_stage1_checkpoint_invalidates_its_cache_entries(chain: StageChain, tmp_path: Path) -> None:
    import torch

    changed = tmp_path / "stage1_audio_changed.ckpt"
    blob = torch.load(Path(chain.checkpoints["stage1_audio"]).resolve(), weights_only=True)
    blob["state_dict"]["head.classifier.bias"] += 0.5
    torch.save(blob, changed)
    cli = MeritslCLI(
        args=["fit", *chain.common_args("changed"), *chain.model_args("stage2_audio"), f"--model.init_args.stage1_checkpoint={changed}"]
    )
    # Stage I embeddings are recomputed (3 splits); the speech-encoder features beneath them are reused
    assert cli.model.cache.misses == 3


def test_stage3_paper_config_through_the_lightning_script(chain: StageChain, tmp_path: Path) -> None:
    cmd = [
        str(BIN / "lightning"),
        "fit",
        "--config",
        str(REPO / "experiments/iemocap_stage3.yaml"),
        f"--data.init_args.root={chain.corpus}",
        f"--model.init_args.stage2_text_checkpoint={chain.checkpoints['stage2_text']}",
        f"--model.init_args.stage2_audio_checkpoint={chain.checkpoints['stage2_audio']}",
        f"--model.init_args.cache_dir={chain.cache_dir}",
        "--model.init_args.dim=16",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test/weighted_f1" in out.stdout
    best = tmp_path / "stage3" / "version_0" / "checkpoints" / "best.ckpt"
    assert (tmp_path / "stage3" / "best.ckpt").resolve() == best.resolve()
    meta = read_stage_checkpoint(str(best), role="stage3", stages=("stage3",), modality="multimodal")
    assert meta.label_names == ["hap", "sad", "neu", "ang"]
    summary = json.loads((tmp_path / "stage3" / "version_0" / "test_metrics.json").read_text())
    assert Path(summary["best_checkpoint"]).resolve() == best.resolve()
    assert_metrics_match_confusion(tmp_path / "stage3" / "version_0", summary["test"])


def test_stage3_trains_with_two_process_ddp(chain: StageChain, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "meritsl_lightning",
        "fit",
        *chain.common_args("ddp"),
        *chain.model_args("stage3"),
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stderr and "distributed_backend=gloo" in out.stderr
    run = tmp_path / "ddp" / "version_0"
    read_stage_checkpoint(str(run / "checkpoints" / "best.ckpt"), role="stage3", stages=("stage3",))
    summary = json.loads((run / "test_metrics.json").read_text())
    assert_metrics_match_confusion(run, summary["test"])  # metrics aggregated over both processes
    confusion = json.loads((run / "test_confusion_matrix.json").read_text())["rows_true_cols_pred"]
    assert sum(map(sum, confusion)) == 6  # every Session 5 test turn counted once, not once per process


def test_stage2_two_process_ddp_from_an_empty_cache_matches_a_single_process_test(chain: StageChain, tmp_path: Path) -> None:
    """Both ranks fill an empty embedding cache at once; the DDP run's test metrics (gathered over both ranks)
    equal a single-process test of its best checkpoint on an empty cache again, entry for entry."""
    ddp_cache, single_cache = tmp_path / "cache", tmp_path / "ddp_cache"
    model_args = [a for a in chain.model_args("stage2_audio") if not a.startswith("--model.init_args.cache_dir=")]
    fit = [
        sys.executable, "-m", "meritsl_lightning", "fit", *chain.common_args("ddp2"), *model_args,
        f"--model.init_args.cache_dir={ddp_cache}", "--trainer.strategy=ddp", "--trainer.devices=2",
        "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(fit, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stderr
    run = tmp_path / "ddp2" / "version_0"
    ddp_test = json.loads((run / "test_metrics.json").read_text())["test"]
    # the checkpoint's hyper-parameters name the cache folder (Lightning applies them over the command line):
    # move the DDP run's entries aside so the single process starts from an empty cache at the same path
    ddp_cache.rename(single_cache)
    ddp_cache, single_cache = single_cache, ddp_cache
    test = [
        sys.executable, "-m", "meritsl_lightning", "test", "--config", str(run / "config.yaml"),
        f"--ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
        "--trainer.strategy=auto", "--trainer.devices=1", f"--trainer.logger.init_args.save_dir={tmp_path / 'single'}",
    ]  # fmt: skip
    out = subprocess.run(test, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    single_test = json.loads(next((tmp_path / "single").rglob("test_metrics.json")).read_text())["test"]
    assert set(single_test) == set(ddp_test) and "test/weighted_f1" in ddp_test
    for name, value in ddp_test.items():
        assert single_test[name] == pytest.approx(value, abs=1e-6), name
    # the fit filled every split's entries, the test only the test split's: those are the same keys and tensors
    entries = {p.relative_to(single_cache): ddp_cache / p.relative_to(single_cache) for p in single_cache.rglob("*.pt")}
    assert len(entries) == 2 and len(list(ddp_cache.rglob("*.pt"))) == 6  # speech features + Stage I embeddings
    for rel, path in entries.items():  # no torn entry: the same tensors as the single process computed
        import torch

        # (not bit-equal: a DDP rank runs on fewer threads, so float sums add up in another order)
        torch.testing.assert_close(torch.load(path)["value"], torch.load(single_cache / rel)["value"], rtol=1e-5, atol=1e-5, msg=str(rel))


def test_predict_writes_one_line_per_utterance(chain: StageChain, tmp_path: Path) -> None:

    out = tmp_path / "predictions.jsonl"
    MeritslCLI(
        args=[
            "predict",
            *chain.common_args("predict"),
            *chain.model_args("stage3"),
            f"--ckpt_path={chain.checkpoints['stage3']}",
            f"--predictions.output={out}",
        ]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6  # the 4-class test turns of the fixture
    assert all(r["label"] in ("hap", "sad", "neu", "ang") and abs(sum(r["probs"].values()) - 1) < 1e-4 for r in rows)


@pytest.mark.parametrize("stage1_audio", ["iemocap", "meld", "cmu_mosi"])
def test_speech_encoder_switch_in_the_paper_configs(stage1_audio: str, tmp_path: Path) -> None:
    """SPEECH_ENCODER picks CARE (or any encoder) for Stage I speech; the config otherwise stays as it is."""
    config = REPO / f"experiments/{stage1_audio}_stage1_audio.yaml"
    for env, expected in ({}, "microsoft/wavlm-base"), ({"SPEECH_ENCODER": "care:runs/care/care_pretrain/best.ckpt"}, "care:runs/care/care_pretrain/best.ckpt"):
        out = subprocess.run(
            [str(BIN / "meritsl"), "fit", "--config", str(config), "--print_config"], capture_output=True, text=True, env=clean_env(**env)
        )
        assert out.returncode == 0, out.stderr
        assert yaml.safe_load(out.stdout)["model"]["init_args"]["speech_encoder"] == expected


def test_care_pretraining_config_selects_on_validation_loss() -> None:
    out = subprocess.run(
        [str(BIN / "meritsl"), "fit", "--config", str(REPO / "experiments/pretrain_care_msp_podcast.yaml"), "--print_config"],
        capture_output=True,
        text=True,
        env=clean_env(CARE_TRANSCRIPTS="/data/msp/transcripts.jsonl"),
    )
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert (config["checkpoint"]["monitor"], config["checkpoint"]["mode"]) == ("val/loss", "min")
    assert config["model"]["class_path"] == "meritsl_lightning.models.CAREPretrainModule"
    assert config["data"]["init_args"]["path"] == "/data/msp/transcripts.jsonl"
    assert (config["trainer"]["max_steps"], config["data"]["init_args"]["batch_size"]) == (200000, 128)
