"""Stage II building block: Bi-GRU + multi-head self-attention over the utterances of a conversation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class ContextEncoder(nn.Module):
    """[B, K, D_in] utterance embeddings + mask [B, K] -> [B, K, 2*hidden] contextual embeddings."""

    def __init__(
        self, input_dim: int, hidden_size: int = 512, num_layers: int = 1, num_heads: int = 4, dropout: float = 0.3
    ) -> None:
        super().__init__()
        self.output_dim = 2 * hidden_size
        if self.output_dim % num_heads:
            raise ValueError(f"2*hidden_size={self.output_dim} must be divisible by num_heads={num_heads}")
        self.input_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            input_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.attention = nn.MultiheadAttention(self.output_dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(self.output_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.input_dropout(x), lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
        attended, _ = self.attention(h, h, h, key_padding_mask=~mask, need_weights=False)
        return self.norm(h + self.dropout(attended))
