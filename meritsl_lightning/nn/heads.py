"""Classifier and embedding heads."""

from __future__ import annotations

import torch
from torch import nn

from meritsl_lightning.nn.pooling import LayerWeightedSum

ACTIVATIONS = {"none": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    """An activation module by name (``none`` is the identity)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SpeechUtteranceHead(nn.Module):
    """The CARE downstream head: layer weights -> Linear -> dropout -> Linear (embedding) -> dropout -> Linear.

    The authors' head has no non-linearity between the linears (``activation="none"``). With ``pooled_dim > 0``
    the first ``pooled_dim`` values of the last layer (an encoder's own utterance vector, e.g. CARE's pooled
    semantic vector) are concatenated to the layer-weighted sum: 1536 + 768 -> 2304 inputs for CARE base.
    """

    def __init__(
        self,
        num_layers: int,
        feature_dim: int,
        num_classes: int,
        projection_dim: int = 768,
        embedding_dim: int = 1024,
        dropout: float = 0.2,
        activation_name: str = "none",
        pooled_dim: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= pooled_dim <= feature_dim:
            raise ValueError(f"pooled_dim must be between 0 and feature_dim ({feature_dim}), got {pooled_dim}")
        self.pooled_dim = pooled_dim
        self.layer_weights = LayerWeightedSum(num_layers)
        # per-dimension standardisation with training-set statistics (set_feature_stats); unlike LayerNorm
        # it keeps the overall level of an utterance (loudness is an emotion cue)
        self.register_buffer("feature_mean", torch.zeros(num_layers, feature_dim))
        self.register_buffer("feature_std", torch.ones(num_layers, feature_dim))
        self.embed = nn.Sequential(
            nn.Linear(feature_dim + pooled_dim, projection_dim),
            activation(activation_name),
            nn.Dropout(dropout),
            nn.Linear(projection_dim, embedding_dim),
            activation(activation_name),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.embedding_dim = embedding_dim

    @torch.no_grad()
    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise inputs with the mean and std of ``features`` [N, L, D] (the training split)."""
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-5))

    def embedding(self, features: torch.Tensor) -> torch.Tensor:
        """[B, L, D] pooled layer features -> [B, embedding_dim] utterance embedding."""
        features = (features - self.feature_mean) / self.feature_std
        pooled = self.layer_weights(features)
        if self.pooled_dim:
            pooled = torch.cat([pooled, features[:, -1, : self.pooled_dim]], dim=-1)
        return self.embed(pooled)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embedding(features)
        return self.classifier(self.dropout(emb)), emb
