"""Stage I: utterance-level models, one per modality (paper Sec. III, Stage I).

- ``TextUtteranceModule``: a Hugging Face text encoder fully fine-tuned as an utterance classifier.
- ``SpeechUtteranceModule``: a light head over time-pooled features of a frozen speech encoder.
Their penultimate vectors are the utterance embeddings that Stage II consumes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from data_modules.base import SplitData
from meritsl_lightning.checkpoints import CheckpointMismatch, pretrained_text_encoder
from meritsl_lightning.encoders.cache import producer
from meritsl_lightning.encoders.provenance import (
    WITHOUT_PRETRAINING,
    TextEncoderError,
    speech_encoder_record,
    text_encoder_kind,
    text_encoder_record,
)
from meritsl_lightning.encoders.speech import SpeechEncoder, build_speech_encoder, extract_features
from meritsl_lightning.encoders.text import DEFAULT_LENGTH_BUCKETS, TextEncoder, TextPooling
from meritsl_lightning.errors import InvalidInput
from meritsl_lightning.models.base import BaseStageModule, ClassWeights
from meritsl_lightning.models.fast_text_step import FastStep, FastTextStep
from meritsl_lightning.nn.heads import SpeechUtteranceHead

log = logging.getLogger(__name__)


def build_text_encoder(source: str, pooling: TextPooling, max_length: int) -> tuple[TextEncoder, dict[str, Any]]:
    """A text encoder from a Hugging Face id or folder or a text pre-training ``.ckpt``, and its run record."""
    if text_encoder_kind(source) == "checkpoint":
        encoder = pretrained_text_encoder(source, pooling, max_length)
    else:
        try:
            encoder = TextEncoder(source, pooling, max_length)
        except OSError as e:
            raise TextEncoderError(f"text encoder {source!r}: not loadable as a Hugging Face model ({e})") from e
    return encoder, text_encoder_record(source, base=encoder.transformer.name_or_path)


class TextUtteranceModule(FastTextStep, BaseStageModule):
    """Stage I text: transformer + pooling + dropout + linear classifier, fine-tuned end to end.

    ``model_name_or_path`` is a Hugging Face id or folder, or a ``TextPretrainModule`` checkpoint (``.ckpt``,
    the LLM-supervised "RoBERTa-FT"): then its encoder is loaded and its 3-way head discarded.
    ``fast_step`` / ``compile_step`` / ``length_buckets`` choose the training step (models/fast_text_step.py).
    """

    stage = "stage1"
    modality = "text"
    input_level = "utterance"

    def __init__(
        self,
        model_name_or_path: str = "roberta-large",
        pooling: TextPooling = "cls_dense_tanh",
        max_length: int = 128,
        dropout: float = 0.1,
        embedding_batch_size: int = 64,
        label_names: list[str] | None = None,
        task: str = "classification",
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.06,
        cache_dir: str | None = None,
        class_weights: ClassWeights = None,
        fast_step: FastStep = "auto",
        compile_step: FastStep = "auto",
        length_buckets: list[int] = list(DEFAULT_LENGTH_BUCKETS),  # noqa: B006 - read only
    ) -> None:
        super().__init__(label_names, task, lr, weight_decay, warmup_ratio, cache_dir, class_weights)

    def configure_models(self) -> None:
        source = str(self.hparams.model_name_or_path)
        self.encoder, self._encoder_record = build_text_encoder(source, self.hparams.pooling, self.hparams.max_length)
        if self.stage == "stage1" and not self._encoder_record["llm_pretrained"]:
            log.warning(
                "Stage I text starts from %s, %s (the paper's ablation); for the MERITS-L recipe set "
                "TEXT_ENCODER (model_name_or_path) to a text pre-training checkpoint", source, WITHOUT_PRETRAINING,
            )
        self.dropout = nn.Dropout(self.hparams.dropout)
        self.classifier = nn.Linear(self.encoder.output_dim, self.num_outputs)

    @property
    def embedding_dim(self) -> int:
        return self.encoder.output_dim

    def encoder_records(self) -> dict[str, Any]:
        return {"text": self._encoder_record}

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encoder(**self.encoder.tokenize(texts, self.device))

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed_texts(batch["texts"])))

    @torch.inference_mode()
    def compute_embeddings(self, data: SplitData, device: torch.device) -> torch.Tensor:
        texts = [u.text for u in data.rows]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.zeros(len(texts), self.embedding_dim)
        step = self.hparams.embedding_batch_size
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            for start in range(0, len(order), step):
                idx = order[start : start + step]
                out[idx] = self.embed_texts([texts[i] for i in idx]).float().cpu()
        return out


class SpeechUtteranceModule(BaseStageModule):
    """Stage I speech: the CARE downstream head over a frozen speech encoder's pooled layer features.

    ``speech_encoder`` picks the encoder (one config key): ``filterbank``, a Hugging Face SSL model id or
    folder (``microsoft/wavlm-base``, ``hf:<id>``), or a pre-trained CARE checkpoint (``care:<best.ckpt>``).

    The encoder runs once per split; its features are cached on disk and standardised with training-set
    statistics.
    """

    stage = "stage1"
    modality = "audio"
    input_level = "utterance"

    def __init__(
        self,
        speech_encoder: str = "filterbank",
        encoder_options: dict[str, Any] | None = None,
        projection_dim: int = 768,
        embedding_dim: int = 1024,
        dropout: float = 0.2,
        activation: str = "none",
        extraction_batch_seconds: float = 64.0,
        label_names: list[str] | None = None,
        task: str = "classification",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.0,
        cache_dir: str | None = None,
        class_weights: ClassWeights = None,
    ) -> None:
        super().__init__(label_names, task, lr, weight_decay, warmup_ratio, cache_dir, class_weights)

    def configure_models(self) -> None:
        encoder = build_speech_encoder(self.hparams.speech_encoder, **(self.hparams.encoder_options or {}))
        encoder.eval().requires_grad_(False)
        self._frozen = {"encoder": encoder}  # a plain dict: frozen, never saved in this checkpoint
        self.head = SpeechUtteranceHead(
            encoder.num_layers,
            encoder.feature_dim,
            self.num_outputs,
            projection_dim=self.hparams.projection_dim,
            embedding_dim=self.hparams.embedding_dim,
            dropout=self.hparams.dropout,
            activation_name=self.hparams.activation,
            pooled_dim=encoder.pooled_dim,
        )

    @property
    def speech_encoder(self) -> SpeechEncoder:
        return self._frozen["encoder"]

    @property
    def embedding_dim(self) -> int:
        return self.head.embedding_dim

    def upstream_identity(self) -> str:
        return self.speech_encoder.identity()

    def encoder_records(self) -> dict[str, Any]:
        return {"speech": speech_encoder_record(self.hparams.speech_encoder, self.speech_encoder.identity())}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        recorded = (checkpoint.get("meritsl") or {}).get("upstream_identity")
        if recorded is not None and recorded != self.speech_encoder.identity():
            raise CheckpointMismatch(
                f"this Stage I speech checkpoint was trained on features of the speech encoder "
                f"{self.hparams.speech_encoder!r}, which has changed since (recorded {recorded}, now "
                f"{self.speech_encoder.identity()}): retrain it on the current encoder or restore the original"
            )

    def encoder_features(self, data: SplitData, device: torch.device) -> torch.Tensor:
        """Frozen speech-encoder features [N, L, D] of a split (cached); zeros where a row has no usable audio."""
        if all(u.audio_path is None for u in data.rows):
            raise InvalidInput(
                f"{data.corpus}/{data.split}: none of the {len(data.rows)} utterances has audio "
                f"(e.g. {data.rows[0].utt_id if data.rows else '-'}); a speech stage needs a manifest with audio, "
                "not one prepared with --text-only"
            )
        key = {"kind": "speech_encoder", "model": self.speech_encoder.identity(), **producer(device), **data.cache_key()}

        def compute() -> torch.Tensor:
            encoder = self.speech_encoder
            usable = has_audio(data)
            out = torch.zeros(len(data.rows), encoder.num_layers, encoder.feature_dim)
            # manifest start/end are times in the conversation; each row's file holds just that utterance
            items = [(data.rows[i].audio_path, None, None) for i in usable.nonzero().flatten().tolist()]
            try:
                out[usable] = extract_features(
                    encoder, items, device=device, max_batch_seconds=self.hparams.extraction_batch_seconds
                ).float()
            finally:
                encoder.cpu()
            return out

        return self.cache.get_or_compute(key, compute)

    def prepare_split(self, data: SplitData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder_features(data, device), has_audio(data)

    def on_inputs_ready(self, stage: str) -> None:
        if stage == "fit":
            features, usable = self._inputs["train"]
            self.head.set_feature_stats(features[usable])

    def target_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        # utterances whose clip is missing or corrupt carry no speech evidence: no loss, no metric
        usable = self.split_inputs(batch["split"])[1][batch["index"]]
        return super().target_mask(batch) & usable.reshape(-1)

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        features = self.split_inputs(batch["split"])[0][batch["index"]]
        return self.head(features)[0]

    @torch.inference_mode()
    def compute_embeddings(self, data: SplitData, device: torch.device) -> torch.Tensor:
        """Head embeddings; zero vectors for utterances without usable audio (Stage II sees them as such)."""
        features = self.encoder_features(data, device)
        out = torch.cat([self.head.embedding(chunk.to(device)).float().cpu() for chunk in features.split(1024)])
        return out * has_audio(data).unsqueeze(1)


def has_audio(data: SplitData) -> torch.Tensor:
    """[N] bool: the row has an audio file that the corpus parser found usable."""
    return torch.tensor([u.audio_path is not None and u.audio_ok for u in data.rows], dtype=torch.bool)
