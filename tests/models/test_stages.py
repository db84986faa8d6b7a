"""Every stage trains through the CLI, tests its best checkpoint, and feeds the next stage frozen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from meritsl_lightning.checkpoints import CheckpointMismatch, read_stage_checkpoint
from meritsl_lightning.models import ContextModule, FusionModule, SpeechUtteranceModule, TextUtteranceModule
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.metric_checks import assert_metrics_match_confusion
from tests.stage_runner import StageChain

EXPECTED = {
    "stage1_text": (TextUtteranceModule, "stage1", "text"),
    "stage1_audio": (SpeechUtteranceModule, "stage1", "audio"),
    "stage2_text": (ContextModule, "stage2", "text"),
    "stage2_audio": (ContextModule, "stage2", "audio"),
    "stage3": (FusionModule, "stage3", "multimodal"),
}
METRICS = ("test/weighted_f1", "test/accuracy", "test/macro_f1", "test/loss") + tuple(
    f"test/f1_{c}" for c in ("hap", "sad", "neu", "ang")
)


@pytest.mark.parametrize("stage", list(EXPECTED))
def test_stage_trains_tests_and_records_its_identity(chain: StageChain, stage: str) -> None:
    cls, stage_name, modality = EXPECTED[stage]
    cli = chain.clis[stage]
    assert type(cli.model) is cls
    results = cli.test_results[0]
    assert set(METRICS) <= set(results)
    log_dir = Path(cli.trainer.log_dir)
    assert_metrics_match_confusion(log_dir, results)
    meta = read_stage_checkpoint(chain.checkpoints[stage], role=stage, stages=(stage_name,), modality=modality)
    assert meta.label_names == ["hap", "sad", "neu", "ang"]
    assert meta.embedding_dim == cli.model.embedding_dim
    confusion = json.loads((log_dir / "test_confusion_matrix.json").read_text())
    assert sum(map(sum, confusion["rows_true_cols_pred"])) == 6  # the fixture's 4-class Session 5 turns
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["model"]["class_path"].startswith("meritsl_lightning.models.")
    assert config["model"]["class_path"].rsplit(".", 1)[1] == cls.__name__
    assert config["data"]["init_args"]["root"] == str(chain.corpus)
    assert json.loads((log_dir / "test_metrics.json").read_text())["best_checkpoint"] == chain.checkpoints[stage]
    # the next stage's config finds the latest best checkpoint at a stable path
    assert (log_dir.parent / "best.ckpt").resolve() == Path(chain.checkpoints[stage]).resolve()


def test_model_selection_uses_validation_weighted_f1(chain: StageChain) -> None:
    callback = chain.clis["stage3"].trainer.checkpoint_callback
    assert callback.monitor == "val/weighted_f1" and callback.mode == "max"


def test_frozen_upstream_is_not_trained_or_saved(chain: StageChain) -> None:
    ckpt = torch.load(chain.checkpoints["stage3"], map_location="cpu", weights_only=True)
    assert all(k.startswith(("fusion.", "metrics.", "per_class_f1.", "confusion.")) for k in ckpt["state_dict"])
    stage2 = read_stage_checkpoint(chain.checkpoints["stage2_text"], role="x", stages=("stage2",)).load_frozen()
    assert not stage2.training and not any(p.requires_grad for p in stage2.parameters())


def test_stage2_embeddings_match_between_cache_and_recomputation(chain: StageChain) -> None:
    model = read_stage_checkpoint(chain.checkpoints["stage2_audio"], role="x", stages=("stage2",)).load_frozen()
    dm = chain.clis["stage2_audio"].datamodule
    data = dm.split_data("test")
    first = model.compute_embeddings(data, torch.device("cpu"))
    assert first.shape == (len(data.rows), model.embedding_dim)
    model.cache.root = chain.root / "fresh-cache"  # force Stage I to be recomputed from audio
    torch.testing.assert_close(model.compute_embeddings(data, torch.device("cpu")), first)


def test_missing_checkpoint_is_named(chain: StageChain, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="stage1_checkpoint: checkpoint file .*nope.ckpt does not exist"):
        ContextModule(stage1_checkpoint=str(tmp_path / "nope.ckpt"), label_names=["hap", "sad", "neu", "ang"])


def test_wrong_stage_checkpoint_is_refused(chain: StageChain) -> None:
    with pytest.raises(CheckpointMismatch, match="stage2_text_checkpoint: .* is a stage1 text checkpoint.*stage2"):
        FusionModule(
            stage2_text_checkpoint=chain.checkpoints["stage1_text"],
            stage2_audio_checkpoint=chain.checkpoints["stage2_audio"],
            label_names=["hap", "sad", "neu", "ang"],
        )


def test_wrong_modality_checkpoint_is_refused(chain: StageChain) -> None:
    with pytest.raises(CheckpointMismatch, match="stage2_audio_checkpoint: .* is a stage2 text checkpoint.*audio"):
        FusionModule(
            stage2_text_checkpoint=chain.checkpoints["stage2_text"],
            stage2_audio_checkpoint=chain.checkpoints["stage2_text"],
            label_names=["hap", "sad", "neu", "ang"],
        )


def test_label_set_mismatch_is_refused(chain: StageChain) -> None:
    six = ["hap", "sad", "neu", "ang", "exc", "fru"]
    with pytest.raises(CheckpointMismatch, match=r"trained on labels \['hap', 'sad', 'neu', 'ang'\].*'exc', 'fru'"):
        ContextModule(stage1_checkpoint=chain.checkpoints["stage1_text"], label_names=six)


def test_label_set_mismatch_through_the_cli(chain: StageChain) -> None:
    from meritsl_lightning.trainer_cli import MeritslCLI

    # a 4-class Stage I under a 6-class data module: the CLI's error carries the checkpoint's reason
    with pytest.raises(ValueError, match="stage1_checkpoint: .* was trained on labels"):
        MeritslCLI(args=["fit", *chain.common_args("six", protocol="iemocap6"), *chain.model_args("stage2_text")])


def test_non_meritsl_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointMismatch, match="not a meritsl-lightning stage checkpoint"):
        ContextModule(stage1_checkpoint=str(path), label_names=["a", "b"])


def test_changed_upstream_is_refused_when_loading(chain: StageChain, tmp_path: Path) -> None:
    import shutil

    stage1 = tmp_path / "stage1.ckpt"
    shutil.copy(Path(chain.checkpoints["stage1_audio"]).resolve(), stage1)
    stage2 = ContextModule(stage1_checkpoint=str(stage1), hidden_size=8, num_heads=2, label_names=["hap", "sad", "neu", "ang"])
    ckpt = {"state_dict": stage2.state_dict(), "hyper_parameters": dict(stage2.hparams), "pytorch-lightning_version": "2.6.6"}
    stage2.on_save_checkpoint(ckpt)
    stage2_path = tmp_path / "stage2.ckpt"
    torch.save(ckpt, stage2_path)
    ContextModule.load_from_checkpoint(stage2_path)  # unchanged upstream: loads
    blob = torch.load(stage1, weights_only=True)
    blob["state_dict"]["head.classifier.bias"] += 1.0
    torch.save(blob, stage1)
    with pytest.raises(CheckpointMismatch, match="changed since this stage2 checkpoint was trained"):
        ContextModule.load_from_checkpoint(stage2_path)


def test_speech_stage_refuses_utterances_without_audio(chain: StageChain, tmp_path: Path) -> None:
    from data_modules import IEMOCAPDataModule
    from data_modules.manifest import read_manifest, write_manifest
    from meritsl_lightning.commands.prepare import main as prepare

    assert prepare(["iemocap", "--root", str(chain.corpus), "--out", str(tmp_path)]) == 0
    rows = read_manifest(tmp_path / "manifest.jsonl")
    for row in rows:
        row.audio_path = None  # what a text-only manifest holds
    write_manifest(rows, tmp_path / "text_only.jsonl")
    dm = IEMOCAPDataModule(manifest=str(tmp_path / "text_only.jsonl"))
    model = SpeechUtteranceModule(projection_dim=8, embedding_dim=8, label_names=dm.label_names, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="none of the .* utterances has audio.*not one prepared with --text-only"):
        model.encoder_features(dm.split_data("train"), torch.device("cpu"))


@pytest.mark.parametrize("stage", ["stage2_text", "stage3"])
def test_training_is_the_same_with_a_cold_or_a_warm_cache(chain: StageChain, stage: str, tmp_path: Path) -> None:
    """A cache miss loads frozen earlier stages (random numbers drawn); the trained weights must not depend on it."""

    def weights(name: str, cache: Path) -> dict[str, torch.Tensor]:
        args = [a for a in chain.model_args(stage) if "cache_dir" not in a] + [f"--model.init_args.cache_dir={cache}"]
        cli = MeritslCLI(args=["fit", *chain.common_args(name), *args, f"--trainer.default_root_dir={tmp_path}",
                               f"--trainer.logger.init_args.save_dir={tmp_path}", "--test_after_fit=false"])  # fmt: skip
        return {k: v.clone() for k, v in cli.model.state_dict().items()}

    cold = weights("cold", tmp_path / "fresh-cache")
    warm = weights("warm", chain.cache_dir)  # the chain's own runs filled it
    assert cold.keys() == warm.keys()
    for key in cold:
        torch.testing.assert_close(cold[key], warm[key], rtol=0, atol=0, msg=key)
