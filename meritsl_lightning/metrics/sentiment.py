"""CMU-MOSI regression metrics (the MSA-benchmark set) as torchmetrics, so that they aggregate under DDP.

``MOSIRegressionMetrics`` takes predicted and gold scores and reports, as in the MMSA / MulT evaluation
code:

- ``mae``: mean absolute error; ``pearson``: Pearson's r;
- ``acc2_has0`` / ``f1_has0``: accuracy and weighted F1 of negative (< 0) vs non-negative (>= 0);
- ``acc2_non0`` / ``f1_non0``: the same on the segments whose gold score is not 0, negative (< 0) vs
  positive (> 0) for gold and prediction alike;
- ``acc7``: accuracy over the 7 classes ``round(clip(score, -3, 3))`` (round half to even, as numpy).

Each is a small subclass of the torchmetrics class that maps scores to what it counts, so the states,
their reduction across processes and ``compute`` are torchmetrics' own.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanAbsoluteError, MetricCollection, PearsonCorrCoef
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy, MulticlassF1Score

SCORE_MIN, SCORE_MAX = -3.0, 3.0
NUM_ACC7_CLASSES = 7


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1).float()


def has0_binary(scores: torch.Tensor) -> torch.Tensor:
    """1 for non-negative (>= 0), 0 for negative scores."""
    return (_flat(scores) >= 0).long()


def non0_binary(scores: torch.Tensor) -> torch.Tensor:
    """1 for positive (> 0), 0 otherwise (zero counts as negative, as in MMSA's non-0 Acc-2)."""
    return (_flat(scores) > 0).long()


def acc7_class(scores: torch.Tensor) -> torch.Tensor:
    """The Acc-7 class 0..6 of each score: ``round(clip(score, -3, 3)) + 3``."""
    return torch.round(_flat(scores).clamp(SCORE_MIN, SCORE_MAX)).long() + 3


def _non_zero(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    preds, target = _flat(preds), _flat(target)
    keep = target != 0
    return non0_binary(preds[keep]), non0_binary(target[keep])


class ScoreMAE(MeanAbsoluteError):
    """Mean absolute error of scores of any shape."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(_flat(preds), _flat(target))


class ScorePearson(PearsonCorrCoef):
    """Pearson's r between predicted and gold scores of any shape."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(_flat(preds), _flat(target))


class Acc2Has0(BinaryAccuracy):
    """Accuracy of negative (< 0) vs non-negative (>= 0)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(has0_binary(preds), has0_binary(target))


class Acc2Non0(BinaryAccuracy):
    """Accuracy of negative vs positive on the items whose gold score is not 0."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = _non_zero(preds, target)
        if target.numel():  # torchmetrics rejects empty updates
            super().update(preds, target)


class F1Has0(MulticlassF1Score):
    """Weighted F1 of negative (< 0) vs non-negative (>= 0)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(num_classes=2, average="weighted", **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(has0_binary(preds), has0_binary(target))


class F1Non0(MulticlassF1Score):
    """Weighted F1 of negative vs positive on the items whose gold score is not 0."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(num_classes=2, average="weighted", **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = _non_zero(preds, target)
        if target.numel():
            super().update(preds, target)


class Acc7(MulticlassAccuracy):
    """Accuracy over the 7 rounded, clipped score classes -3..3."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(num_classes=NUM_ACC7_CLASSES, average="micro", **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(acc7_class(preds), acc7_class(target))


class MOSIRegressionMetrics(MetricCollection):
    """MAE, Pearson r, Acc-2 and F1 (has-0 and non-0) and Acc-7 of predicted vs gold sentiment scores.

    ``update(preds, target)`` takes scores of any (equal) shape; ``compute()`` returns
    ``{mae, pearson, acc2_has0, acc2_non0, f1_has0, f1_non0, acc7}`` (with ``prefix``/``postfix``).
    Accuracies and F1 are fractions in [0, 1]. With no non-zero gold score, the non-0 values are 0.
    """

    def __init__(self, prefix: str | None = None, postfix: str | None = None) -> None:
        super().__init__(
            {
                "mae": ScoreMAE(),
                "pearson": ScorePearson(),
                "acc2_has0": Acc2Has0(),
                "acc2_non0": Acc2Non0(),
                "f1_has0": F1Has0(),
                "f1_non0": F1Non0(),
                "acc7": Acc7(),
            },
            prefix=prefix,
            postfix=postfix,
            # Members see differently transformed inputs: states that happen to match after one batch
            # must never be merged into one compute group.
            compute_groups=False,
        )
