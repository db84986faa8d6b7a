"""Text pre-training on silver labels, and Stage I text starting from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_modules import SilverDataModule
from data_modules.manifest import CorpusProblem
from meritsl_lightning.checkpoints import CheckpointMismatch
from meritsl_lightning.models import TextUtteranceModule
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.fixtures.iemocap_layout import default_dialogues
from tests.stage_runner import StageChain

SENTIMENT = {"hap": "positive", "exc": "positive", "ang": "negative", "sad": "negative", "fru": "negative"}


def write_silver(path: Path) -> Path:
    turns = [t for d in default_dialogues() for t in d.turns]
    with open(path, "w") as f:
        for t in turns:
            f.write(json.dumps({"id": t.name, "text": t.text, "label": SENTIMENT.get(t.code, "neutral")}) + "\n")
        f.write(json.dumps({"id": "unparsed", "text": "hmm", "label": None, "raw_reply": "I cannot say"}) + "\n")
    return path


def test_silver_split_is_seeded_and_counts_what_it_leaves_out(tmp_path: Path) -> None:
    path = write_silver(tmp_path / "silver.jsonl")
    dm = SilverDataModule(str(path), validation_fraction=0.2, split_seed=3)
    train, val = dm.split_data("train").rows, dm.split_data("validation").rows
    assert len(train) + len(val) == 36 and len(val) == 7
    assert dm.skipped["unlabelled"] == 1
    again = SilverDataModule(str(path), validation_fraction=0.2, split_seed=3)
    assert [u.utt_id for u in again.split_data("validation").rows] == [u.utt_id for u in val]


def test_silver_label_outside_the_set_is_named(tmp_path: Path) -> None:
    path = tmp_path / "silver.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "x", "label": "happy"}) + "\n")
    with pytest.raises(CorpusProblem, match=r"silver.jsonl:1: label 'happy' is not in"):
        SilverDataModule(str(path)).setup()


def test_pretrain_then_stage1_text_starts_from_it(chain: StageChain, tmp_path: Path) -> None:
    silver = write_silver(tmp_path / "silver.jsonl")
    pretrain = MeritslCLI(
        args=["fit", *chain.text_pretrain_args("pretrain", silver)]
    )
    assert pretrain.model.label_names == ["positive", "negative", "neutral"]
    assert pretrain.test_results is None  # silver data has no test split
    ckpt = pretrain.trainer.checkpoint_callback.best_model_path
    stage1 = TextUtteranceModule(model_name_or_path=ckpt, label_names=["hap", "sad", "neu", "ang"])
    pretrained = torch.load(ckpt, weights_only=True)["state_dict"]
    for name, value in stage1.encoder.state_dict().items():
        torch.testing.assert_close(value, pretrained[f"encoder.{name}"])
    assert stage1.classifier.out_features == 4  # a fresh head for the target labels
    # and through the CLI
    cli = MeritslCLI(args=["fit", *chain.common_args("from_pretrain"), *chain.model_args("stage1_text"), f"--model.init_args.model_name_or_path={ckpt}"])
    assert "test/weighted_f1" in cli.test_results[0]


def test_stage1_checkpoint_is_not_a_pretrained_encoder(chain: StageChain) -> None:
    with pytest.raises(CheckpointMismatch, match="model_name_or_path: .* is a stage1 text checkpoint.*text_pretrain"):
        TextUtteranceModule(model_name_or_path=chain.checkpoints["stage1_text"], label_names=["hap", "sad", "neu", "ang"])
