"""Checks that a run's logged test metrics are the ones its confusion matrix implies (recomputed with
torchmetrics from the matrix's counts), so a metric wired to the wrong average, class order or split fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score


def assert_metrics_match_confusion(log_dir: str | Path, results: dict[str, float], prefix: str = "test") -> None:
    confusion = json.loads((Path(log_dir) / f"{prefix}_confusion_matrix.json").read_text())
    labels, matrix = confusion["labels"], confusion["rows_true_cols_pred"]
    target = torch.tensor([t for t, row in enumerate(matrix) for p, n in enumerate(row) for _ in range(n)])
    preds = torch.tensor([p for t, row in enumerate(matrix) for p, n in enumerate(row) for _ in range(n)])
    assert target.numel() > 0
    k = len(labels)
    expected = {
        f"{prefix}/accuracy": multiclass_accuracy(preds, target, num_classes=k, average="micro"),
        f"{prefix}/weighted_f1": multiclass_f1_score(preds, target, num_classes=k, average="weighted"),
        f"{prefix}/macro_f1": multiclass_f1_score(preds, target, num_classes=k, average="macro"),
    }
    per_class = multiclass_f1_score(preds, target, num_classes=k, average="none")
    expected.update({f"{prefix}/f1_{name}": per_class[i] for i, name in enumerate(labels)})
    for key, value in expected.items():
        assert results[key] == pytest.approx(float(value), abs=1e-5), key
    loss = results[f"{prefix}/loss"]
    assert math.isfinite(loss) and loss > 0.0
