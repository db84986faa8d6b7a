"""A Hugging Face text encoder (any AutoModel id or local folder) with utterance pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, AutoTokenizer

from meritsl_lightning.nn.pooling import masked_mean

TextPooling = Literal["cls_dense_tanh", "cls", "mean"]
DEFAULT_LENGTH_BUCKETS = (16, 32, 64, 128)


class TextEncoder(nn.Module):
    """Tokenizer + transformer + pooling -> one vector per utterance.

    ``cls_dense_tanh`` (the default) is the penultimate layer of Hugging Face's RoBERTa classification head:
    the first-token state through a dense layer and tanh.
    """

    def __init__(self, model_name_or_path: str, pooling: TextPooling = "cls_dense_tanh", max_length: int = 128) -> None:
        super().__init__()
        if pooling not in ("cls_dense_tanh", "cls", "mean"):
            raise ValueError(f"unknown text pooling {pooling!r}; expected cls_dense_tanh, cls or mean")
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        # from_pretrained returns eval mode, and Lightning keeps module modes: fine-tuning wants dropout on
        self.transformer = AutoModel.from_pretrained(model_name_or_path).train()
        if getattr(self.transformer, "pooler", None) is not None:
            self.transformer.pooler = None  # unused: parameters without gradients would break DDP
        self.pooling = pooling
        self.max_length = min(max_length, _max_positions(self.transformer.config))
        self.output_dim = int(self.transformer.config.hidden_size)
        self.dense = nn.Linear(self.output_dim, self.output_dim) if pooling == "cls_dense_tanh" else None

    def tokenize(self, texts: list[str], device: torch.device | None = None) -> dict[str, torch.Tensor]:
        # lengths padded to a multiple of 16 so that few distinct shapes reach the GPU kernels
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, pad_to_multiple_of=16, return_tensors="pt"
        )
        return {k: v.to(device) if device is not None else v for k, v in enc.items()}

    def length_buckets(self, buckets: Sequence[int]) -> list[int]:
        """The padded lengths a batch may take: ``buckets`` below ``max_length``, then ``max_length`` itself."""
        return [*sorted({int(b) for b in buckets if 0 < b < self.max_length}), self.max_length]

    def tokenize_bucketed(self, texts: list[str], buckets: Sequence[int], rows: int = 0) -> dict[str, torch.Tensor]:
        """Token ids and mask on the CPU, padded to the smallest bucket that holds the longest text, and with
        all-pad rows up to ``rows``: only ``len(buckets) x 1`` shapes reach the device.

        A pad row attends to its first position only (it never becomes an all-masked softmax row).
        """
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        length = next(b for b in self.length_buckets(buckets) if b >= ids.shape[1])
        extra_rows = max(rows - ids.shape[0], 0)
        ids = F.pad(ids, (0, length - ids.shape[1], 0, extra_rows), value=self.tokenizer.pad_token_id)
        mask = F.pad(mask, (0, length - mask.shape[1], 0, extra_rows), value=0)
        if extra_rows:
            mask[-extra_rows:, 0] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, additive_mask: bool = False, **kwargs: torch.Tensor
    ) -> torch.Tensor:
        """Pooled vectors [B, D]. ``additive_mask`` hands the transformer a prepared [B, 1, 1, T] float mask,
        which transformers uses as it is: no padding check, so no device-to-host sync in the step."""
        mask = attention_mask
        if additive_mask:
            device = input_ids.device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.weight_dtype
            mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        hidden = self.transformer(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "mean":
            return masked_mean(hidden, attention_mask.bool())
        first = hidden[:, 0]
        return torch.tanh(self.dense(first)) if self.dense is not None else first

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.transformer.get_input_embeddings().weight.dtype


def _max_positions(config) -> int:
    # RoBERTa reserves padding_idx + 1 position ids
    positions = getattr(config, "max_position_embeddings", 512)
    offset = getattr(config, "pad_token_id", 0) + 1 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta") else 0
    return max(8, positions - offset)

