"""Datasets, collation and length-bucketed batch sampling for utterance- and conversation-level batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, Dataset, Sampler

IGNORE_INDEX = -100


class BucketBatchSampler(BatchSampler):
    """Batches of similar length: sort each chunk of ``batch_size * bucket_multiplier`` sampled indices by
    length, cut it into batches and (when ``shuffle``) visit the batches in random order.

    The wrapped ``sampler`` decides which indices this process sees, so Lightning can swap in a
    ``DistributedSampler`` under DDP.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool,
        lengths: Sequence[int] = (),
        bucket_multiplier: int = 50,
        shuffle: bool = True,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = list(lengths)
        self.bucket_multiplier = max(1, bucket_multiplier)
        self.shuffle = shuffle

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        chunk = self.batch_size * self.bucket_multiplier
        batches: list[list[int]] = []
        for start in range(0, len(indices), chunk):
            ordered = sorted(indices[start : start + chunk], key=lambda i: self.lengths[i])
            batches += [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches)).tolist()]
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        chunk = self.batch_size * self.bucket_multiplier
        full, rest = divmod(n, chunk)
        per_chunk = chunk // self.batch_size
        if self.drop_last:
            return full * per_chunk + rest // self.batch_size
        return full * per_chunk + -(-rest // self.batch_size)


class IndexDataset(Dataset):
    """Items are positions 0..n-1 (utterances or conversations of one split), or the given ``positions``;
    collation builds the batch."""

    def __init__(self, n: int, positions: list[int] | None = None) -> None:
        self.n = n
        self.positions = positions

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i if self.positions is None else self.positions[i]


def pad_conversations(convs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row positions padded to [B, K] (pad = 0) and the mask of real utterances."""
    width = max(len(c) for c in convs)
    index = torch.zeros(len(convs), width, dtype=torch.long)
    mask = torch.zeros(len(convs), width, dtype=torch.bool)
    for b, conv in enumerate(convs):
        index[b, : len(conv)] = torch.tensor(conv, dtype=torch.long)
        mask[b, : len(conv)] = True
    return index, mask


class UtteranceCollator:
    """Collates utterance positions into ``{split, index, labels, scores, texts, utt_ids}``."""

    def __init__(
        self, split: str, texts: list[str], utt_ids: list[str], labels: torch.Tensor, scores: torch.Tensor
    ) -> None:
        self.split, self.texts, self.utt_ids, self.labels, self.scores = split, texts, utt_ids, labels, scores

    def __call__(self, positions: list[int]) -> dict[str, Any]:
        index = torch.tensor(positions, dtype=torch.long)
        return {
            "split": self.split,
            "index": index,
            "labels": self.labels[index],
            "scores": self.scores[index],
            "texts": [self.texts[i] for i in positions],
            "utt_ids": [self.utt_ids[i] for i in positions],
        }


class ConversationCollator:
    """Collates conversations into padded ``index``, ``mask``, ``labels`` (-100 = pad) and ``scores`` (NaN = pad),
    each [B, K]."""

    def __init__(
        self,
        split: str,
        conversations: list[list[int]],
        utt_ids: list[str],
        labels: torch.Tensor,
        scores: torch.Tensor,
    ) -> None:
        self.split, self.conversations, self.utt_ids = split, conversations, utt_ids
        self.labels, self.scores = labels, scores

    def __call__(self, positions: list[int]) -> dict[str, Any]:
        convs = [self.conversations[p] for p in positions]
        index, mask = pad_conversations(convs)
        labels = self.labels[index].masked_fill(~mask, IGNORE_INDEX)
        scores = self.scores[index].masked_fill(~mask, float("nan"))
        return {
            "split": self.split,
            "index": index,
            "mask": mask,
            "labels": labels,
            "scores": scores,
            "utt_ids": [[self.utt_ids[i] for i in conv] for conv in convs],
        }
