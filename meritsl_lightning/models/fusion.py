"""Stage III: co-attention fusion of the frozen Stage II text and speech models (paper Sec. III, Stage III)."""

from __future__ import annotations

from typing import Any

import torch

from data_modules.base import SplitData
from meritsl_lightning.checkpoints import read_stage_checkpoint
from meritsl_lightning.models.base import (
    BaseStageModule,
    ClassWeights,
    TextSpeechUpstreams,
    conversation_batches,
    current_speech_encoder,
)
from meritsl_lightning.nn.co_attention import CoAttentionFusion


class FusionModule(TextSpeechUpstreams, BaseStageModule):
    """Stacked co-attention blocks over the Stage II outputs of both modalities, then a classifier."""

    stage = "stage3"
    modality = "multimodal"
    input_level = "conversation"

    def __init__(
        self,
        stage2_text_checkpoint: str,
        stage2_audio_checkpoint: str,
        dim: int = 256,
        num_heads: int = 4,
        num_layers: int = 2,
        dropout: float = 0.5,
        label_names: list[str] | None = None,
        task: str = "classification",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.0,
        cache_dir: str | None = None,
        class_weights: ClassWeights = None,
    ) -> None:
        self.text_upstream = read_stage_checkpoint(
            stage2_text_checkpoint, role="stage2_text_checkpoint", stages=("stage2",), modality="text", label_names=label_names, task=task
        )
        self.audio_upstream = read_stage_checkpoint(
            stage2_audio_checkpoint, role="stage2_audio_checkpoint", stages=("stage2",), modality="audio", label_names=label_names, task=task
        )
        current_speech_encoder(self.audio_upstream, role="stage2_audio_checkpoint")
        super().__init__(label_names, task, lr, weight_decay, warmup_ratio, cache_dir, class_weights)
        self.hparams["stage2_text_checkpoint"] = self.text_upstream.path
        self.hparams["stage2_audio_checkpoint"] = self.audio_upstream.path

    def configure_models(self) -> None:
        self.fusion = CoAttentionFusion(
            self.text_upstream.embedding_dim,
            self.audio_upstream.embedding_dim,
            self.num_outputs,
            dim=self.hparams.dim,
            num_heads=self.hparams.num_heads,
            num_layers=self.hparams.num_layers,
            dropout=self.hparams.dropout,
        )

    @property
    def embedding_dim(self) -> int:
        return 2 * self.hparams.dim

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        text, audio = self.split_inputs(batch["split"])
        index = batch["index"]
        return self.fusion(text[index], audio[index], batch["mask"])

    @torch.inference_mode()
    def compute_embeddings(self, data: SplitData, device: torch.device) -> torch.Tensor:
        """The fused per-utterance vectors (before the classifier), e.g. for analysis."""
        text, audio = (t.to(device) for t in self.prepare_split(data, device))
        out = torch.zeros(len(data.rows), self.embedding_dim)
        for index, mask, convs in conversation_batches(data.conversations, 32, device):
            fused = self.fusion.encode(text[index], audio[index], mask).float().cpu()
            for b, conv in enumerate(convs):
                out[conv] = fused[b, : len(conv)]
        return out
