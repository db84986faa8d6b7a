"""Out-of-fold Stage I embeddings for Stages II and III (``meritsl oof``, ``stage1_oof``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_modules import IEMOCAPDataModule
from data_modules.folds import conversation_folds
from meritsl_lightning.checkpoints import CheckpointMismatch, read_stage_checkpoint
from meritsl_lightning.commands.oof import main as oof_main
from meritsl_lightning.models import ContextModule
from tests.stage_runner import StageChain

LABELS = ["hap", "sad", "neu", "ang"]


@pytest.fixture(scope="module")
def oof_text(chain: StageChain) -> Path:
    out = chain.root / "oof" / "text.json"
    args = ["--folds", "2", "--seed", "0", "--out", str(out), "--full", chain.checkpoints["stage1_text"], "--name", "stage1_text_oof"]
    assert oof_main([*args, *chain.common_args("ignored"), *chain.model_args("stage1_text")]) == 0
    return out


def test_folds_are_seeded_and_balanced() -> None:
    folds = conversation_folds([f"d{i}" for i in range(7)] * 2, 3, seed=1)
    assert sorted(folds.values()).count(0) == 3 and set(folds.values()) == {0, 1, 2}
    assert folds == conversation_folds([f"d{i}" for i in range(7)], 3, seed=1)
    with pytest.raises(ValueError, match="num_folds must be at least 2"):
        conversation_folds(["a", "b"], 1)


def test_fold_models_never_see_their_held_out_conversations(chain: StageChain) -> None:
    dm = IEMOCAPDataModule(root=str(chain.corpus), batch_size=4)
    dm.use_batch_level("utterance")
    train = {u.utt_id: u.dialogue_id for u in dm.split_data("train").rows}
    seen = []
    for fold in range(2):
        dm.set_training_folds(fold, 2, seed=0)
        held_out = set(dm.held_out_dialogues())
        ids = [u for batch in dm.train_dataloader() for u in batch["utt_ids"]]
        assert held_out and not any(train[u] in held_out for u in ids)
        assert {train[u] for u in ids} == set(train.values()) - held_out
        assert len(dm.split_data("train").rows) == len(train)  # the split stays whole (shared caches)
        seen.append(held_out)
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(train.values())
    with pytest.raises(ValueError, match="K >= 2"):
        dm.set_training_folds(0, 1)


def test_oof_embeddings_differ_for_train_and_equal_for_validation_and_test(chain: StageChain, oof_text: Path) -> None:
    manifest = json.loads(oof_text.read_text())
    assert manifest["num_folds"] == 2 and manifest["full_checkpoint"] == str(Path(chain.checkpoints["stage1_text"]).resolve())
    model = ContextModule(chain.checkpoints["stage1_text"], stage1_oof=str(oof_text), hidden_size=8, num_heads=2, label_names=LABELS, cache_dir=str(chain.cache_dir))
    dm = IEMOCAPDataModule(root=str(chain.corpus), batch_size=4)
    cpu = torch.device("cpu")
    for split in ("train", "validation", "test"):
        data = dm.split_data(split)
        oof = model.stage1_embeddings(data, cpu)
        in_fold = model.upstream_embeddings(model.upstream, data, cpu)
        if split == "train":
            assert not torch.isclose(oof, in_fold, atol=1e-5).all(dim=1).any()  # every row from a fold model
            # and each row from the fold model that held its conversation out
            fold0 = manifest["folds"][0]
            emb0 = model.upstream_embeddings(read_stage_checkpoint(fold0["checkpoint"], role="t", stages=("stage1",)), data, cpu)
            rows = [i for i, u in enumerate(data.rows) if u.dialogue_id in set(fold0["held_out"])]
            torch.testing.assert_close(oof[rows], emb0[rows])
        else:
            torch.testing.assert_close(oof, in_fold)


def test_stage2_and_stage3_chain_on_oof_embeddings(chain: StageChain, oof_text: Path) -> None:
    stage2 = chain.fit("stage2_text", f"--model.init_args.stage1_oof={oof_text}", name="stage2_text_oof")
    ckpt = stage2.trainer.checkpoint_callback.best_model_path
    frozen = read_stage_checkpoint(ckpt, role="t", stages=("stage2",)).load_frozen()
    assert frozen.oof is not None and frozen.oof.path == str(oof_text.resolve())  # Stage III reads OOF train inputs
    stage3 = chain.fit("stage3", f"--model.init_args.stage2_text_checkpoint={ckpt}", name="stage3_oof")
    assert "test/weighted_f1" in stage3.test_results[0]


def test_bad_oof_inputs_say_why(chain: StageChain, oof_text: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert oof_main(["--folds", "1", "--out", str(tmp_path / "o.json")]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err
    body = json.loads(oof_text.read_text())
    one = tmp_path / "one.json"
    one.write_text(json.dumps({**body, "folds": body["folds"][:1]}))
    with pytest.raises(CheckpointMismatch, match="1 fold.*K >= 2"):
        ContextModule(chain.checkpoints["stage1_text"], stage1_oof=str(one), label_names=LABELS)
    with pytest.raises(CheckpointMismatch, match="was made for the Stage I checkpoint"):
        ContextModule(chain.checkpoints["stage1_audio"], stage1_oof=str(oof_text), label_names=LABELS)
    partial = tmp_path / "partial.json"
    held = body["folds"][0]["held_out"]
    partial.write_text(json.dumps({**body, "folds": [{**body["folds"][0], "held_out": held[:1]}, body["folds"][1]]}))
    model = ContextModule(chain.checkpoints["stage1_text"], stage1_oof=str(partial), label_names=LABELS, cache_dir=str(chain.cache_dir))
    train = IEMOCAPDataModule(root=str(chain.corpus)).split_data("train")
    with pytest.raises(CheckpointMismatch, match=f"no fold containing train conversation {held[1]}"):
        model.stage1_embeddings(train, torch.device("cpu"))
