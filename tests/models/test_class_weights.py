"""class_weights: none | balanced | [w1, ...] on every stage, from the training split only, inside the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from data_modules.batching import IGNORE_INDEX
from meritsl_lightning.models import FusionModule, SpeechUtteranceModule
from meritsl_lightning.models.base import balanced_class_weights
from tests.stage_runner import StageChain

LABELS = ["hap", "sad", "neu", "ang"]


def test_balanced_weights_are_n_over_c_times_count() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, IGNORE_INDEX])
    torch.testing.assert_close(balanced_class_weights(labels, LABELS), torch.tensor([8 / 12, 8 / 4, 8 / 8, 8 / 8]))
    with pytest.raises(ValueError, match=r"no utterance of \['ang'\]"):
        balanced_class_weights(torch.tensor([0, 1, 2]), LABELS)


def test_wrong_class_weights_say_why(chain: StageChain) -> None:
    with pytest.raises(ValueError, match=r"one non-negative weight per label \(4: \['hap', 'sad', 'neu', 'ang'\]\), got \[1.0, 2.0\]"):
        SpeechUtteranceModule(label_names=LABELS, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="regression task has no classes"):
        SpeechUtteranceModule(label_names=["negative", "positive"], task="regression", class_weights="balanced")
    fusion = FusionModule(
        chain.checkpoints["stage2_text"], chain.checkpoints["stage2_audio"], dim=8, num_heads=2, label_names=LABELS, class_weights=[1, 2, 3, 4]
    )
    assert fusion.criterion.weight.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert SpeechUtteranceModule(label_names=LABELS, class_weights="none").criterion.weight is None


def test_balanced_weights_come_from_the_training_split_and_reach_the_loss(chain: StageChain) -> None:
    cli = chain.fit("stage2_text", "--model.init_args.class_weights=balanced", name="stage2_text_balanced")
    model, dm = cli.model, cli.datamodule
    expected = balanced_class_weights(dm.split_data("train").labels, LABELS)
    assert not torch.allclose(expected, torch.ones(4))  # the fixture corpus is imbalanced, so the test can fail
    torch.testing.assert_close(model.criterion.weight, expected)
    # the checkpoint keeps them, so its test loss is the trained one
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
    torch.testing.assert_close(best["state_dict"]["criterion.weight"], expected)

    model.eval()
    model.log = lambda *args, **kwargs: None  # _step outside the loop
    batch = next(iter(dm.val_dataloader()))
    batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.no_grad():
        loss = model._step(batch, "val")
        logits = model.logits(batch).reshape(-1, 4)
    labels = batch["labels"].reshape(-1)
    keep = labels != IGNORE_INDEX
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], labels[keep], weight=expected))
    assert not torch.allclose(loss, F.cross_entropy(logits[keep], labels[keep]))
