"""Fig. 4 of the paper: end-to-end training against the hierarchy of separately trained, frozen stages.

- ``JointContextFusionModule``: Stages II (both modalities) and III trained together from the frozen Stage I
  embeddings, with one loss on the fused output, optionally plus per-modality losses on the Stage II outputs
  (``modality_loss_weight``; deep supervision).
- ``JointTextFinetuneModule``: the same, but the Stage I text encoder is fine-tuned jointly as well:
  conversation batches go through the transformer (a GPU job at RoBERTa-large size).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import nn

from data_modules.base import SplitData
from meritsl_lightning.checkpoints import StageCheckpoint, read_stage_checkpoint
from meritsl_lightning.encoders.text import TextPooling
from meritsl_lightning.models.base import (
    BaseStageModule,
    ClassWeights,
    TextSpeechUpstreams,
    check_upstream_unchanged,
    conversation_batches,
)
from meritsl_lightning.models.utterance import build_text_encoder
from meritsl_lightning.nn.co_attention import CoAttentionFusion
from meritsl_lightning.nn.context_encoder import ContextEncoder


class _JointStages(BaseStageModule):
    """Context encoders per modality + co-attention fusion over one conversation batch, trained as one network."""

    modality = "multimodal"
    input_level = "conversation"

    def build_stages(self, text_dim: int, audio_dim: int) -> None:
        h = self.hparams
        context = {"hidden_size": h.hidden_size, "num_layers": h.num_layers, "num_heads": h.context_heads, "dropout": h.context_dropout}
        self.text_context = ContextEncoder(text_dim, **context)
        self.audio_context = ContextEncoder(audio_dim, **context)
        self.fusion = CoAttentionFusion(
            self.text_context.output_dim, self.audio_context.output_dim, self.num_outputs,
            dim=h.dim, num_heads=h.num_heads, num_layers=h.fusion_layers, dropout=h.dropout,
        )  # fmt: skip
        self.context_dropout = nn.Dropout(h.context_dropout)
        if h.modality_loss_weight > 0:  # heads only when trained: unused parameters would break DDP
            self.text_head = nn.Linear(self.text_context.output_dim, self.num_outputs)
            self.audio_head = nn.Linear(self.audio_context.output_dim, self.num_outputs)
        self._contexts: tuple[torch.Tensor, torch.Tensor] | None = None

    @abstractmethod
    def text_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        """[B, K, D] text utterance vectors of the batch's conversations."""

    def fused(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        audio = self.split_inputs(batch["split"])[1][batch["index"]]
        text = self.text_context(self.text_inputs(batch), batch["mask"])
        audio = self.audio_context(audio, batch["mask"])
        return text, audio, self.fusion.encode(text, audio, batch["mask"])

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        text, audio, fused = self.fused(batch)
        self._contexts = (text, audio)
        return self.fusion.head(fused)

    @property
    def embedding_dim(self) -> int:
        return 2 * self.hparams.dim

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        weight = self.hparams.modality_loss_weight
        if weight > 0 and self._contexts is not None:
            text, audio = self._contexts
            extra = self._loss_on(self.text_head(self.context_dropout(text)), batch) + self._loss_on(
                self.audio_head(self.context_dropout(audio)), batch
            )
            self.log("train/modality_loss", extra, on_step=True, on_epoch=True, batch_size=int(batch["mask"].sum()))
            loss = loss + weight * extra
        self._contexts = None
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._contexts = None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self._contexts = None

    def _loss_on(self, outputs: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        keep = self.target_mask(batch)
        outputs = outputs.reshape(-1, outputs.shape[-1])[keep]
        if self.task == "regression":
            return self.regression_criterion(outputs[:, 0].float(), batch["scores"].reshape(-1)[keep].float())
        return self.criterion(outputs.float(), batch["labels"].reshape(-1)[keep])

    @torch.inference_mode()
    def compute_embeddings(self, data: SplitData, device: torch.device) -> torch.Tensor:
        """The fused per-utterance vectors (before the classifier), e.g. for analysis."""
        inputs = self.prepare_split(data, device)
        self._inputs[f"_embed_{data.split}"] = inputs
        self._device_inputs.pop(f"_embed_{data.split}", None)
        out = torch.zeros(len(data.rows), self.embedding_dim)
        for index, mask, convs in conversation_batches(data.conversations, 16, device):
            batch = {"split": f"_embed_{data.split}", "index": index, "mask": mask}
            fused = self.fused(batch)[2].float().cpu()
            for b, conv in enumerate(convs):
                out[conv] = fused[b, : len(conv)]
        return out


class JointContextFusionModule(TextSpeechUpstreams, _JointStages):
    """Fig. 4, end to end over frozen Stage I: Stages II and III trained jointly from the Stage I embeddings."""

    stage = "joint"

    def __init__(
        self,
        stage1_text_checkpoint: str,
        stage1_audio_checkpoint: str,
        modality_loss_weight: float = 0.0,
        hidden_size: int = 512,
        num_layers: int = 1,
        context_heads: int = 4,
        context_dropout: float = 0.3,
        dim: int = 256,
        num_heads: int = 4,
        fusion_layers: int = 2,
        dropout: float = 0.5,
        label_names: list[str] | None = None,
        task: str = "classification",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.0,
        cache_dir: str | None = None,
        class_weights: ClassWeights = None,
    ) -> None:
        self.text_upstream = _stage1(stage1_text_checkpoint, "stage1_text_checkpoint", "text", label_names, task)
        self.audio_upstream = _stage1(stage1_audio_checkpoint, "stage1_audio_checkpoint", "audio", label_names, task)
        super().__init__(label_names, task, lr, weight_decay, warmup_ratio, cache_dir, class_weights)
        self.hparams["stage1_text_checkpoint"] = self.text_upstream.path
        self.hparams["stage1_audio_checkpoint"] = self.audio_upstream.path

    def configure_models(self) -> None:
        self.build_stages(self.text_upstream.embedding_dim, self.audio_upstream.embedding_dim)

    def text_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.split_inputs(batch["split"])[0][batch["index"]]


class JointTextFinetuneModule(_JointStages):
    """Fig. 4, end to end with the text encoder: the Stage I text transformer fine-tuned jointly with Stages II
    and III (``text_encoder``: a Hugging Face id or folder, or a text pre-training ``.ckpt``, as ``TEXT_ENCODER``);
    speech stays the frozen Stage I speech model's embeddings. The transformer learns at ``text_lr``."""

    stage = "joint_text"

    def __init__(
        self,
        stage1_audio_checkpoint: str,
        text_encoder: str = "roberta-large",
        pooling: TextPooling = "cls_dense_tanh",
        max_length: int = 128,
        text_lr: float = 2e-5,
        text_batch_size: int = 64,
        modality_loss_weight: float = 0.0,
        hidden_size: int = 512,
        num_layers: int = 1,
        context_heads: int = 4,
        context_dropout: float = 0.3,
        dim: int = 256,
        num_heads: int = 4,
        fusion_layers: int = 2,
        dropout: float = 0.5,
        label_names: list[str] | None = None,
        task: str = "classification",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.06,
        cache_dir: str | None = None,
        class_weights: ClassWeights = None,
    ) -> None:
        self.audio_upstream = _stage1(stage1_audio_checkpoint, "stage1_audio_checkpoint", "audio", label_names, task)
        super().__init__(label_names, task, lr, weight_decay, warmup_ratio, cache_dir, class_weights)
        self.hparams["stage1_audio_checkpoint"] = self.audio_upstream.path

    def configure_models(self) -> None:
        h = self.hparams
        self.encoder, self._text_record = build_text_encoder(str(h.text_encoder), h.pooling, h.max_length)
        self.build_stages(self.encoder.output_dim, self.audio_upstream.embedding_dim)

    def upstream_identity(self) -> str:
        return self.audio_upstream.identity

    def encoder_records(self) -> dict[str, Any]:
        return {"text": self._text_record, "speech": self.audio_upstream.encoders.get("speech", {})}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_upstream_unchanged(checkpoint, [self.audio_upstream])

    def prepare_split(self, data: SplitData, device: torch.device) -> tuple[list[str], torch.Tensor]:
        return [u.text for u in data.rows], self.upstream_embeddings(self.audio_upstream, data, device)

    def text_inputs(self, batch: dict[str, Any]) -> torch.Tensor:
        texts = self.split_inputs(batch["split"])[0]
        index, mask = batch["index"], batch["mask"]
        rows = index[mask].tolist()
        step = self.hparams.text_batch_size
        parts = [
            self.encoder(**self.encoder.tokenize([texts[r] for r in rows[i : i + step]], self.device))
            for i in range(0, len(rows), step)
        ]
        flat = torch.cat(parts)
        out = flat.new_zeros(*index.shape, flat.shape[-1])
        out[mask] = flat
        return out

    def configure_optimizers(self) -> Any:
        """AdamW with the transformer at ``text_lr`` and the rest at ``lr``; warm-up then linear decay."""
        h = self.hparams
        text = {id(p) for p in self.encoder.parameters()}
        groups = []
        for own, lr in ((True, h.text_lr), (False, h.lr)):
            params = [p for p in self.parameters() if p.requires_grad and (id(p) in text) == own]
            groups += [
                {"params": [p for p in params if p.dim() >= 2], "lr": lr, "weight_decay": h.weight_decay},
                {"params": [p for p in params if p.dim() < 2], "lr": lr, "weight_decay": 0.0},
            ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
        if not h.warmup_ratio:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(total * h.warmup_ratio))

        def schedule(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _stage1(path: str, role: str, modality: str, label_names: list[str] | None, task: str) -> StageCheckpoint:
    return read_stage_checkpoint(path, role=role, stages=("stage1",), modality=modality, label_names=label_names, task=task)
