"""Length-bucketed batch sampling and collation."""

from __future__ import annotations

import torch
from torch.utils.data import RandomSampler, SequentialSampler

from data_modules.batching import (
    IGNORE_INDEX,
    BucketBatchSampler,
    ConversationCollator,
    IndexDataset,
)


def test_bucketed_batches_cover_every_index_once_and_group_similar_lengths() -> None:
    torch.manual_seed(0)
    lengths = torch.randint(1, 100, (103,)).tolist()
    sampler = BucketBatchSampler(RandomSampler(IndexDataset(103)), 8, drop_last=False, lengths=lengths, bucket_multiplier=4)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(103))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    random_spread = sum(max(lengths[i : i + 8]) - min(lengths[i : i + 8]) for i in range(0, 103, 8)) / 13
    assert spread < random_spread / 2


def test_eval_batches_are_deterministic_and_sorted() -> None:
    lengths = [5, 1, 4, 2, 3]
    sampler = BucketBatchSampler(SequentialSampler(range(5)), 2, drop_last=False, lengths=lengths, shuffle=False)
    assert list(sampler) == [[1, 3], [4, 2], [0]] == list(sampler)


def test_drop_last_length() -> None:
    sampler = BucketBatchSampler(SequentialSampler(range(10)), 3, drop_last=True, lengths=[0] * 10, bucket_multiplier=2)
    assert len(list(sampler)) == len(sampler) == 3


def test_conversation_collation_pads_and_masks() -> None:
    labels = torch.tensor([0, 1, 2, IGNORE_INDEX, 3])
    scores = torch.tensor([0.5, -1.0, 2.0, float("nan"), 0.0])
    collate = ConversationCollator("test", [[0, 1, 2], [3, 4]], [f"u{i}" for i in range(5)], labels, scores)
    batch = collate([1, 0])
    assert batch["index"].tolist() == [[3, 4, 0], [0, 1, 2]]
    assert batch["mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 3, IGNORE_INDEX], [0, 1, 2]]
    assert batch["utt_ids"] == [["u3", "u4"], ["u0", "u1", "u2"]]
