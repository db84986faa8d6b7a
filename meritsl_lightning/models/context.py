"""Stage II: conversation context per modality (paper Sec. III, Stage II).

A Bi-GRU and multi-head self-attention over the frozen Stage I embeddings of a conversation's utterances,
with a linear classifier per utterance. Its contextual vectors are what Stage III fuses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data_modules.base import SplitData
from meritsl_lightning.checkpoints import StageCheckpoint, read_stage_checkpoint
from meritsl_lightning.models.base import (
    BaseStageModule,
    ClassWeights,
    check_upstream_unchanged,
    conversation_batches,
    current_speech_encoder,
)
from meritsl_lightning.models.oof import read_oof
from meritsl_lightning.nn.context_encoder import ContextEncoder


class ContextModule(BaseStageModule):
    """Stage II over a frozen Stage I checkpoint (text or speech; the checkpoint decides the modality).

    ``stage1_oof`` (an ``oof.json`` of ``meritsl oof``): the training split's Stage I embeddings come from the
    fold models that did not train on each conversation, here and when a Stage III reads this model.
    """

    stage = "stage2"
    input_level = "conversation"

    def __init__(
        self,
        stage1_checkpoint: str,
        stage1_oof: str | None = None,
        hidden_size: int = 512,
        num_layers: int = 1,
        num_heads: int = 4,
        dropout: float = 0.3,
        embedding_batch_size: int = 32,
        label_names: list[str] | None = None,
        task: str = "classification",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.0,
        cache_dir: str | None = None,
        class_weights: ClassWeights = None,
    ) -> None:
        self.upstream = read_stage_checkpoint(
            stage1_checkpoint, role="stage1_checkpoint", stages=("stage1",), label_names=label_names, task=task
        )
        current_speech_encoder(self.upstream, role="stage1_checkpoint")  # a retrained speech encoder stops here
        self.oof = read_oof(stage1_oof, self.upstream, label_names, task) if stage1_oof else None
        super().__init__(label_names, task, lr, weight_decay, warmup_ratio, cache_dir, class_weights)
        self.hparams["stage1_checkpoint"] = self.upstream.path  # absolute, so the run can move directories
        if self.oof is not None:
            self.hparams["stage1_oof"] = self.oof.path

    @property
    def modality(self) -> str:  # type: ignore[override]
        return self.upstream.modality

    def configure_models(self) -> None:
        self.context = ContextEncoder(
            self.upstream.embedding_dim,
            hidden_size=self.hparams.hidden_size,
            num_layers=self.hparams.num_layers,
            num_heads=self.hparams.num_heads,
            dropout=self.hparams.dropout,
        )
        self.dropout = nn.Dropout(self.hparams.dropout)
        self.classifier = nn.Linear(self.context.output_dim, self.num_outputs)

    @property
    def embedding_dim(self) -> int:
        return self.context.output_dim

    @property
    def upstreams(self) -> list[StageCheckpoint]:
        return [self.upstream, *(self.oof.checkpoints if self.oof is not None else [])]

    def upstream_identity(self) -> str:
        return "|".join(u.identity for u in self.upstreams)

    def encoder_records(self) -> dict[str, Any]:
        return dict(self.upstream.encoders)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_upstream_unchanged(checkpoint, self.upstreams)

    def stage1_embeddings(self, data: SplitData, device: torch.device) -> torch.Tensor:
        """Frozen Stage I embeddings of a split: out-of-fold for the training split when ``stage1_oof`` is set."""
        if self.oof is not None and data.split == self.oof.split:
            return self.oof.embeddings(self, data, device)
        return self.upstream_embeddings(self.upstream, data, device)

    def prepare_split(self, data: SplitData, device: torch.device) -> torch.Tensor:
        return self.stage1_embeddings(data, device)

    def contextual(self, embeddings: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.context(embeddings[batch["index"]], batch["mask"])

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        hidden = self.contextual(self.split_inputs(batch["split"]), batch)
        return self.classifier(self.dropout(hidden))

    @torch.inference_mode()
    def compute_embeddings(self, data: SplitData, device: torch.device) -> torch.Tensor:
        upstream = self.stage1_embeddings(data, device).to(device)
        out = torch.zeros(len(data.rows), self.embedding_dim)
        for index, mask, convs in conversation_batches(data.conversations, self.hparams.embedding_batch_size, device):
            hidden = self.context(upstream[index], mask).float().cpu()
            for b, conv in enumerate(convs):
                out[conv] = hidden[b, : len(conv)]
        return out

