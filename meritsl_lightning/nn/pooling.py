"""Pooling over time or tokens, respecting padding masks."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [B, T, D] over the positions where ``mask`` [B, T] is true."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class LayerWeightedSum(nn.Module):
    """Softmax-normalised learnable weights over stacked layer features [B, L, D] -> [B, D]."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.logits, dim=0).to(x.dtype)
        return torch.einsum("bld,l->bd", x, weights)
