"""Stage III building block: stacked co-attention (cross-attention both ways, then self-attention)."""

from __future__ import annotations

import torch
from torch import nn


class _AttentionSublayer(nn.Module):
    """Multi-head attention -> dropout -> residual -> LayerNorm."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        out, _ = self.attention(query, context, context, key_padding_mask=pad, need_weights=False)
        return self.norm(query + self.dropout(out))


class CoAttentionBlock(nn.Module):
    """Text attends to audio and audio to text (same utterance sequence), then each attends to itself."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.text_cross = _AttentionSublayer(dim, num_heads, dropout)
        self.audio_cross = _AttentionSublayer(dim, num_heads, dropout)
        self.text_self = _AttentionSublayer(dim, num_heads, dropout)
        self.audio_self = _AttentionSublayer(dim, num_heads, dropout)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pad = ~mask
        text, audio = self.text_cross(text, audio, pad), self.audio_cross(audio, text, pad)
        return self.text_self(text, text, pad), self.audio_self(audio, audio, pad)


class CoAttentionFusion(nn.Module):
    """Project both modalities to ``dim``, apply ``num_layers`` co-attention blocks, classify the concatenation."""

    def __init__(
        self,
        text_dim: int,
        audio_dim: int,
        num_classes: int,
        dim: int = 256,
        num_heads: int = 4,
        num_layers: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.text_proj = nn.Linear(text_dim, dim)
        self.audio_proj = nn.Linear(audio_dim, dim)
        self.blocks = nn.ModuleList(CoAttentionBlock(dim, num_heads, dropout) for _ in range(num_layers))
        self.head = nn.Sequential(
            nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, num_classes)
        )

    def encode(self, text: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """text [B, K, Dt], audio [B, K, Da], mask [B, K] (true = real utterance) -> fused [B, K, 2*dim]."""
        t, a = self.text_proj(text), self.audio_proj(audio)
        for block in self.blocks:
            t, a = block(t, a, mask)
        return torch.cat([t, a], dim=-1)

    def forward(self, text: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, K, C]."""
        return self.head(self.encode(text, audio, mask))
