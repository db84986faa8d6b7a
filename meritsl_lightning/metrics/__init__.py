"""Metrics beyond torchmetrics' built-ins (CMU-MOSI sentiment regression)."""

from meritsl_lightning.metrics.sentiment import MOSIRegressionMetrics, acc7_class, has0_binary, non0_binary

__all__ = ["MOSIRegressionMetrics", "acc7_class", "has0_binary", "non0_binary"]
