"""The base data module: a corpus parsed into manifest rows, served as utterance or conversation batches."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from data_modules.batching import (
    IGNORE_INDEX,
    BucketBatchSampler,
    ConversationCollator,
    IndexDataset,
    ResumableDataLoader,
    UtteranceCollator,
)
from data_modules.errors import InvalidInput
from data_modules.folds import conversation_folds
from data_modules.manifest import (
    SPLITS,
    ManifestError,
    ParseResult,
    Utterance,
    fingerprint,
    read_manifest,
)
from data_modules.transcripts import TranscriptsReport, apply_transcripts

log = logging.getLogger(__name__)

BatchLevel = Literal["utterance", "conversation"]


@dataclass
class SplitData:
    """The utterances of one split, in conversation order, with their label ids."""

    corpus: str
    protocol: str
    split: str
    rows: list[Utterance]
    conversations: list[list[int]]  # positions into rows, one list per conversation, in turn order
    labels: torch.Tensor  # [N] label ids, IGNORE_INDEX where unlabelled
    scores: torch.Tensor  # [N] real-valued targets (regression protocols), NaN where absent

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.rows)

    def cache_key(self) -> dict[str, Any]:
        """The corpus part of an embedding-cache key."""
        return {"corpus": self.corpus, "protocol": self.protocol, "split": self.split, "content": self.fingerprint}


class ERCDataModule(LightningDataModule):
    """Base class of every corpus: subclasses parse their layout; this class splits, batches and buckets.

    Batches are utterance-level for Stage I (``texts``, ``index``, ``labels``) and conversation-level for
    Stages II-III (``index``/``mask``/``labels`` of shape [B, K]). The training model sets the level.
    """

    corpus: str = ""
    protocols: dict[str, list[str]] = {}  # protocol name -> label names (in id order)
    # protocols whose target is Utterance.score (their labels are a binarisation, reported alongside)
    regression_protocols: frozenset[str] = frozenset()

    def __init__(
        self,
        protocol: str,
        manifest: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_error: Literal["fail", "skip"] = "fail",
        text_only: bool = False,
        predict_split: str = "test",
        bucket_multiplier: int = 50,
        transcripts: str | None = None,
        transcripts_splits: list[str] | None = None,
    ) -> None:
        super().__init__()
        if protocol not in self.protocols:
            raise InvalidInput(f"{type(self).__name__}: unknown protocol {protocol!r}; expected one of {sorted(self.protocols)}")
        self.protocol = protocol
        self.manifest = manifest
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.on_error = on_error
        self.text_only = text_only
        self.predict_split = predict_split
        self.bucket_multiplier = bucket_multiplier
        # ASR text (a `meritsl transcribe` output) in place of the gold transcripts of these splits
        self.transcripts = transcripts
        self.transcripts_splits = list(transcripts_splits) if transcripts_splits is not None else ["test"]
        self.transcripts_report: TranscriptsReport | None = None
        self.training_folds: tuple[int, int, int] | None = None  # (held-out fold, K, seed): `meritsl oof`
        self.batch_level: BatchLevel = "utterance"
        self._splits: dict[str, SplitData] | None = None

    @property
    def label_names(self) -> list[str]:
        return list(self.protocols[self.protocol])

    @property
    def task(self) -> str:
        """``classification`` (targets: label ids) or ``regression`` (targets: scores)."""
        return "regression" if self.protocol in self.regression_protocols else "classification"

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @abstractmethod
    def parse(self) -> ParseResult:
        """Parse the corpus folder into manifest rows (with their default splits)."""

    def assign_splits(self, rows: list[Utterance]) -> list[Utterance]:
        """Hook to re-split rows (e.g. a different validation protocol); the default keeps the manifest's."""
        return rows

    def use_batch_level(self, level: BatchLevel) -> None:
        """Serve utterance- or conversation-level batches (called by the model that trains on them)."""
        if level not in ("utterance", "conversation"):
            raise ValueError(f"batch level must be 'utterance' or 'conversation', got {level!r}")
        self.batch_level = level

    def load_rows(self) -> list[Utterance]:
        if self.manifest:
            rows = read_manifest(self.manifest)
        else:
            result = self.parse()
            for d in result.defects:
                log.warning("skipped %s (%s: %s)", d.item, d.file, d.problem)
            rows = result.utterances
        return self.assign_splits(rows)

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            rows = self.load_rows()
            if self.transcripts:
                rows, self.transcripts_report = apply_transcripts(
                    rows, self.transcripts, self.transcripts_splits, self.on_error, self.corpus
                )
            self._splits = self._group(rows)

    def text_sources(self) -> dict[str, Any]:
        """Which text each split reads (``gold`` or ``asr``), and the transcripts file behind ``asr``."""
        asr = set(self.transcripts_splits) if self.transcripts else set()
        out: dict[str, Any] = {"splits": {s: "asr" if s in asr else "gold" for s in self.split_names()}}
        if self.transcripts_report is not None:
            out["transcripts"] = self.transcripts_report.as_dict()
        return out

    def _group(self, rows: list[Utterance]) -> dict[str, SplitData]:
        label_id = {name: i for i, name in enumerate(self.label_names)}
        by_split: dict[str, dict[str, list[Utterance]]] = defaultdict(lambda: defaultdict(list))
        for row in rows:
            if row.label is not None and row.label not in label_id:
                raise ManifestError(
                    f"utterance {row.utt_id}: label {row.label!r} is not in the {self.protocol} label set {self.label_names}"
                )
            by_split[row.split][row.dialogue_id].append(row)
        splits = {}
        for split, dialogues in by_split.items():
            ordered: list[Utterance] = []
            conversations: list[list[int]] = []
            for dialogue_id in sorted(dialogues):
                turns = sorted(dialogues[dialogue_id], key=lambda u: u.utt_index)
                conversations.append(list(range(len(ordered), len(ordered) + len(turns))))
                ordered += turns
            labels = torch.tensor([label_id[u.label] if u.label is not None else IGNORE_INDEX for u in ordered])
            scores = torch.tensor([u.score if u.score is not None else float("nan") for u in ordered])
            if self.task == "regression" and torch.isnan(scores).all():
                raise ManifestError(f"{self.corpus}/{self.protocol}: regression protocol, but no {split} row has a score")
            splits[split] = SplitData(self.corpus, self.protocol, split, ordered, conversations, labels, scores)
        return splits

    def split_data(self, split: str) -> SplitData:
        """The rows of one split (``train``, ``validation``, ``test``)."""
        self.setup()
        assert self._splits is not None
        if split not in self._splits:
            raise KeyError(f"{self.corpus}/{self.protocol} has no {split!r} split; it has {sorted(self._splits)}")
        return self._splits[split]

    def split_names(self) -> list[str]:
        self.setup()
        assert self._splits is not None
        return [s for s in SPLITS if s in self._splits] + sorted(set(self._splits) - set(SPLITS))

    def set_training_folds(self, held_out: int, num_folds: int, seed: int = 0) -> None:
        """Train on K-1 of K folds of the training conversations (``meritsl oof``); other splits are unchanged.

        The training split's rows stay whole (so frozen features and their caches are shared with the full
        model); only its batches leave the held-out fold's conversations out.
        """
        if num_folds < 2:
            raise ValueError(f"out-of-fold training needs K >= 2 folds, got {num_folds}")
        if not 0 <= held_out < num_folds:
            raise ValueError(f"held-out fold must be in [0, {num_folds}), got {held_out}")
        self.training_folds = (held_out, num_folds, seed)

    def held_out_dialogues(self) -> list[str]:
        """The training conversations the held-out fold holds (empty without ``set_training_folds``)."""
        if self.training_folds is None:
            return []
        held_out, k, seed = self.training_folds
        folds = conversation_folds([u.dialogue_id for u in self.split_data("train").rows], k, seed)
        return sorted(d for d, f in folds.items() if f == held_out)

    def _in_fold(self, data: SplitData) -> tuple[list[int], list[int]] | None:
        """Positions of the rows and conversations a fold model trains on, or None to use them all."""
        if data.split != "train" or self.training_folds is None:
            return None
        held_out = set(self.held_out_dialogues())
        convs = [i for i, c in enumerate(data.conversations) if data.rows[c[0]].dialogue_id not in held_out]
        return [r for i in convs for r in data.conversations[i]], convs

    def _loader(self, split: str, train: bool, targets_only: bool = True) -> DataLoader:
        data = self.split_data(split)
        utt_ids = [u.utt_id for u in data.rows]
        positions = None
        in_fold = self._in_fold(data)
        if self.batch_level == "utterance":
            n = len(data.rows)
            if targets_only:  # unlabelled rows (context only) have nothing to learn or score one by one
                has_target = ~torch.isnan(data.scores) if self.task == "regression" else data.labels != IGNORE_INDEX
                if not bool(has_target.all()):
                    positions = has_target.nonzero().flatten().tolist()
                    n = len(positions)
            if in_fold is not None:
                rows = set(in_fold[0])
                positions = [i for i in (positions if positions is not None else range(n)) if i in rows]
                n = len(positions)
            lengths = [len(data.rows[i].text) for i in (positions if positions is not None else range(n))]
            collate: Any = UtteranceCollator(split, [u.text for u in data.rows], utt_ids, data.labels, data.scores)
        else:
            n = len(data.conversations)
            if in_fold is not None:
                positions, n = in_fold[1], len(in_fold[1])
            lengths = [len(data.conversations[i]) for i in (positions if positions is not None else range(n))]
            collate = ConversationCollator(split, data.conversations, utt_ids, data.labels, data.scores)
        batch_size = self.batch_size if train else self.eval_batch_size
        dataset = IndexDataset(n, positions)
        sampler = RandomSampler(dataset) if train else SequentialSampler(dataset)
        batch_sampler = BucketBatchSampler(
            sampler, batch_size, drop_last=False, lengths=lengths, bucket_multiplier=self.bucket_multiplier, shuffle=train
        )
        return ResumableDataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, train=False, targets_only=False)
