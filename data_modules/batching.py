"""Datasets, collation and length-bucketed batch sampling for utterance- and conversation-level batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

IGNORE_INDEX = -100
SEED_BOUND = 2**62


class BucketBatchSampler(BatchSampler):
    """Batches of similar length: sort each chunk of ``batch_size * bucket_multiplier`` sampled indices by
    length, cut it into batches and (when ``shuffle``) visit the batches in random order.

    The wrapped ``sampler`` decides which indices this process sees, so Lightning can swap in a
    ``DistributedSampler`` under DDP.

    Resumable mid-epoch: each epoch's order comes from the global torch generator as it stood when the epoch
    began, which ``state_dict`` records with the number of batches the training loop consumed
    (``consumed``, kept up to date by the trainer); after ``load_state_dict`` the next iteration replays that
    order without touching the global generator and skips the consumed batches. ``item_seeds`` makes each
    item ``(index, seed)``, a per-epoch seed for the item's own randomness (e.g. a random crop), so that a
    resumed epoch draws the same crops whatever the loader processes did before.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        batch_size: int,
        drop_last: bool,
        lengths: Sequence[int] = (),
        bucket_multiplier: int = 50,
        shuffle: bool = True,
        item_seeds: bool = False,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = list(lengths)
        self.bucket_multiplier = max(1, bucket_multiplier)
        self.shuffle = shuffle
        self.item_seeds = item_seeds
        self.consumed = 0  # batches of the current epoch the training loop has finished
        self._epoch_rng: torch.Tensor | None = None  # global generator state when the current epoch began
        self._epoch: int | None = None
        self._num_batches = 0
        self._resume: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[list[Any]]:
        resume, self._resume = self._resume, None
        skip = 0
        if resume is not None and resume["consumed"] < resume["num_batches"]:
            # replay the interrupted epoch's order from its recorded generator state, leaving the global one alone
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(resume["rng"])
                if resume["epoch"] is not None and hasattr(self.sampler, "set_epoch"):
                    self.sampler.set_epoch(resume["epoch"])
                batches = self._plan(resume["rng"])
            skip = resume["consumed"]
        else:
            if resume is not None and resume["epoch"] is not None and hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(resume["epoch"] + 1)  # the interrupted epoch was complete: the next one
            batches = self._plan(torch.get_rng_state())
        self.consumed = skip
        self._num_batches = len(batches)
        return iter(batches[skip:])

    def _plan(self, rng_state: torch.Tensor) -> list[list[Any]]:
        """The epoch's batches, drawn from the global generator (whose state at the start is ``rng_state``)."""
        self._epoch_rng = rng_state.clone()
        self._epoch = getattr(self.sampler, "epoch", None)
        indices = list(self.sampler)
        chunk = self.batch_size * self.bucket_multiplier
        batches: list[list[Any]] = []
        for start in range(0, len(indices), chunk):
            ordered = sorted(indices[start : start + chunk], key=lambda i: self.lengths[i])
            batches += [ordered[i : i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches)).tolist()]
        if self.item_seeds:
            epoch_seed = int(torch.randint(SEED_BOUND, ()).item())
            batches = [[(i, (epoch_seed + i) % SEED_BOUND) for i in batch] for batch in batches]
        return batches

    def state_dict(self) -> dict[str, Any]:
        """Where the current epoch stands: its generator state, sampler epoch, length and consumed batches."""
        return {
            "rng": self._epoch_rng if self._epoch_rng is not None else torch.get_rng_state(),
            "epoch": self._epoch,
            "num_batches": self._num_batches,
            "consumed": self.consumed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration continue the recorded epoch (or begin the next one if it was complete)."""
        self._resume = dict(state)

    @property
    def resuming_mid_epoch(self) -> bool:
        return self._resume is not None and self._resume["consumed"] < self._resume["num_batches"]

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        chunk = self.batch_size * self.bucket_multiplier
        full, rest = divmod(n, chunk)
        per_chunk = chunk // self.batch_size
        if self.drop_last:
            return full * per_chunk + rest // self.batch_size
        return full * per_chunk + -(-rest // self.batch_size)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose ``BucketBatchSampler`` position is saved in Lightning checkpoints and restored on resume
    (Lightning's stateful-loader protocol: ``state_dict`` / ``load_state_dict``)."""

    def state_dict(self) -> dict[str, Any]:
        if isinstance(self.batch_sampler, BucketBatchSampler):
            return {"batch_sampler": self.batch_sampler.state_dict()}
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.batch_sampler, BucketBatchSampler) and "batch_sampler" in state:
            self.batch_sampler.load_state_dict(state["batch_sampler"])

    def __iter__(self) -> Any:
        if isinstance(self.batch_sampler, BucketBatchSampler) and self.batch_sampler.resuming_mid_epoch:
            # the interrupted run created this epoch's iterator long before its checkpoint: creating it again
            # (a worker seed drawn from the global generator) must not shift the random numbers training draws next
            with torch.random.fork_rng(devices=[]):
                return super().__iter__()
        return super().__iter__()


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
