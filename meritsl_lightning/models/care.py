"""CARE pre-training (arXiv 2409.05566) as a LightningModule, and loading its checkpoints as encoders."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from data_modules.audio import load_audio
from data_modules.care_pretrain import CAREPretrainDataModule, CARETargets, SpeechText
from meritsl_lightning.checkpoints import CARE_STAGE, pretrained_text_encoder_of
from meritsl_lightning.encoders.acoustic_targets import (
    DESCRIPTORS,
    NORMALISATIONS,
    Normalisation,
    acoustic_descriptors,
    descriptor_dim,
)
from meritsl_lightning.encoders.cache import EmbeddingCache, file_identity, producer
from meritsl_lightning.encoders.care import CAREModel
from meritsl_lightning.encoders.speech import _hash_model_folder
from meritsl_lightning.encoders.text import TextEncoder
from meritsl_lightning.errors import InvalidInput

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
TARGETS_VERSION = 1  # bump when the descriptor or teacher computation changes
TARGET_POLL_SECONDS = 2.0
TARGET_WAIT_SECONDS = 24 * 3600.0


class CAREPretrainModule(LightningModule):
    """Pre-trains CARE on speech with transcripts (``CAREPretrainDataModule``).

    Losses (summed; their gradients are routed inside ``CAREModel``):

    - semantic: MSE between the time-pooled semantic branch output and the text teacher's utterance
      embedding of the transcript. ``teacher_model`` is the config switch: a Hugging Face id or folder is
      mean-pooled over tokens (plain RoBERTa-base, the paper's default); a ``TextPretrainModule`` checkpoint
      (``.ckpt``, the LLM-supervised "RoBERTa-FT") gives its own utterance vector. A teacher wider than the
      semantic branch is matched through a trained linear map.
    - acoustic (times ``acoustic_weight``): frame-wise MSE to the normalised descriptors of
      ``encoders/acoustic_targets.py``.

    Teacher embeddings and descriptors are computed once per split and cached (``cache_dir``). The
    checkpoint monitor is ``val/loss``, the sum of both validation MSEs (the authors' selection rule).
    """

    stage = CARE_STAGE

    def __init__(
        self,
        speech_model: str = "microsoft/wavlm-base",
        text_model: str = "roberta-base",
        teacher_model: str = "roberta-base",
        shared_layers: int = 6,
        descriptors: list[str] | None = None,
        target_normalisation: Normalisation = "authors",
        acoustic_weight: float = 1.0,
        adapter_kernel: int = 5,
        adapter_stride: int = 3,
        lr: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_text_length: int = 128,
        teacher_batch_size: int = 64,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.descriptor_names = list(descriptors or DESCRIPTORS)
        if target_normalisation not in NORMALISATIONS:
            raise ValueError(f"target_normalisation must be one of {NORMALISATIONS}, got {target_normalisation!r}")
        self.target_normalisation = target_normalisation
        text = pretrained_text_encoder_of(text_model, "mean", max_text_length).transformer if text_model.endswith(".ckpt") else text_model
        self.care = CAREModel.from_pretrained(
            speech_model, text, shared_layers=shared_layers, acoustic_dim=descriptor_dim(self.descriptor_names),
            adapter_kernel=adapter_kernel, adapter_stride=adapter_stride,
        )  # fmt: skip
        self._frozen: dict[str, nn.Module] = {}  # the teacher, loaded on a cache miss only; never in the state dict
        self.teacher_dim = teacher_width(teacher_model)
        self.teacher_projection = nn.Identity() if self.teacher_dim == self.care.width else nn.Linear(self.care.width, self.teacher_dim)
        self.cache = EmbeddingCache(cache_dir)

    # -- targets ----------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if not isinstance(dm, CAREPretrainDataModule):
            raise InvalidInput(f"CAREPretrainModule needs a CAREPretrainDataModule, got {type(dm).__name__}")
        dm.configure_crops(self.care.hop)
        root = self.trainer.strategy.root_device
        # a cold cache loads the teacher and runs loaders, which draw random numbers: fork the generators so
        # that training is the same whether the targets were computed or read from the cache
        with torch.random.fork_rng(devices=[root] if root.type == "cuda" else []):
            for split in ("train", "validation"):
                dm.attach_targets(split, self._targets_under_ddp(dm.split_rows(split), dm.num_workers))
        if self.trainer.world_size > 1:
            self.trainer.strategy.barrier("meritsl_care_targets")

    def _targets_under_ddp(self, rows: list[SpeechText], num_workers: int) -> CARETargets:
        """The first process of each node computes (or reads) the targets; the others wait for its cache files
        without holding a collective, so a long first pass cannot run into the process group's timeout."""
        if self.trainer.world_size > 1 and self.trainer.local_rank != 0:
            paths = [self.cache.path_for(key) for key in self.target_keys(rows).values()]
            waited = 0.0
            while not all(p.is_file() for p in paths):
                if waited > TARGET_WAIT_SECONDS:
                    raise TimeoutError(
                        f"rank {self.trainer.global_rank}: the CARE targets did not appear in {self.cache.root} within "
                        f"{TARGET_WAIT_SECONDS / 3600:.0f} h (is the first process of this node still computing them?)"
                    )
                time.sleep(TARGET_POLL_SECONDS)
                waited += TARGET_POLL_SECONDS
        return self.targets(rows, num_workers)

    def target_keys(self, rows: list[SpeechText]) -> dict[str, dict[str, Any]]:
        """Cache keys of the teacher embeddings and of the descriptors (frames, offsets) of ``rows``."""
        texts = hashlib.sha256(json.dumps([(r.id, r.text) for r in rows]).encode()).hexdigest()
        audio = hashlib.sha256(json.dumps([_audio_stamp(r.audio_path) for r in rows]).encode()).hexdigest()
        base = {"kind": "care_descriptors", "version": TARGETS_VERSION, "names": self.descriptor_names, "hop": self.care.hop, "audio": audio}
        if self.target_normalisation != "standard":  # the earlier targets keep their cache keys
            base["normalisation"] = self.target_normalisation
        return {
            "teacher": {"kind": "care_teacher", "version": TARGETS_VERSION, "model": self.teacher_identity(), "texts": texts, **producer(self._target_device())},
            "frames": {**base, "part": "frames"},
            "offsets": {**base, "part": "offsets"},
        }

    def _target_device(self) -> torch.device:
        return self.trainer.strategy.root_device if self._trainer is not None else self.device

    def targets(self, rows: list[SpeechText], num_workers: int = 0) -> CARETargets:
        """Teacher embeddings and descriptors of ``rows``, from the cache or computed once."""
        device = self._target_device()
        keys = self.target_keys(rows)
        teacher = self.cache.get_or_compute(keys["teacher"], lambda: self._teacher_embeddings([r.text for r in rows], device))
        computed: list[tuple[torch.Tensor, torch.Tensor]] = []  # one pass yields both parts

        def part(i: int) -> torch.Tensor:
            if not computed:
                computed.append(compute_descriptors(rows, self.care.hop, self.descriptor_names, num_workers, self.target_normalisation))
            return computed[0][i]

        flat = self.cache.get_or_compute(keys["frames"], lambda: part(0))
        offsets = self.cache.get_or_compute(keys["offsets"], lambda: part(1))
        return CARETargets(teacher=teacher, descriptors=flat, offsets=offsets)

    def teacher_identity(self) -> str:
        source = self.hparams.teacher_model
        path = Path(source)
        weights = file_identity(path) if path.is_file() else _hash_model_folder(path) if path.is_dir() else source
        return f"{weights}:max_length={self.hparams.max_text_length}"

    @torch.inference_mode()
    def _teacher_embeddings(self, texts: list[str], device: torch.device) -> torch.Tensor:
        if "teacher" not in self._frozen:
            self._frozen["teacher"] = load_teacher(self.hparams.teacher_model, self.hparams.max_text_length).eval().requires_grad_(False)
        teacher = self._frozen["teacher"].to(device)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.zeros(len(texts), teacher.output_dim)
        step = self.hparams.teacher_batch_size
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                for start in tqdm(range(0, len(order), step), desc="CARE teacher", disable=len(order) < 50 * step):
                    idx = order[start : start + step]
                    out[idx] = teacher(**teacher.tokenize([texts[i] for i in idx], device)).float().cpu()
        finally:
            teacher.cpu()
        return out

    # -- steps ------------------------------------------------------------------------------------------------
    def losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(semantic MSE, acoustic MSE over valid frames) of a batch."""
        out = self.care(batch["waves"], batch["lengths"])
        semantic = F.mse_loss(self.teacher_projection(out.semantic).float(), batch["teacher"].float())
        frames = min(out.acoustic.shape[1], batch["acoustic"].shape[1])
        valid = out.frame_mask[:, :frames] & (
            torch.arange(frames, device=out.acoustic.device)[None, :] < batch["acoustic_lengths"][:, None]
        )
        error = (out.acoustic[:, :frames].float() - batch["acoustic"][:, :frames].float()).pow(2).mean(-1)
        acoustic = error[valid].mean() if valid.any() else error.sum() * 0.0
        return semantic, acoustic

    def _step(self, batch: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
        semantic, acoustic = self.losses(batch)
        loss = semantic + self.hparams.acoustic_weight * acoustic
        on_step = prefix == "train"
        size = batch["waves"].shape[0]
        self.log(f"{prefix}/semantic_loss", semantic, on_step=on_step, on_epoch=True, batch_size=size, sync_dist=not on_step)
        self.log(f"{prefix}/acoustic_loss", acoustic, on_step=on_step, on_epoch=True, batch_size=size, sync_dist=not on_step)
        self.log(f"{prefix}/loss", semantic + acoustic, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=not on_step)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        h = self.hparams
        return torch.optim.AdamW(params, lr=h.lr, betas=tuple(h.betas), eps=h.eps, weight_decay=h.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint["meritsl"] = {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage,
            "modality": "audio",
            "class_path": f"{cls.__module__}.{cls.__qualname__}",
            "label_names": [],
            "task": "pretraining",
            "embedding_dim": 2 * self.care.width,
            "upstream_identity": None,
            "care": self.care.architecture(),
        }


def load_teacher(source: str, max_length: int) -> TextEncoder:
    """The text teacher: a HF id/folder mean-pooled, or a ``TextPretrainModule`` checkpoint's own pooling."""
    if source.endswith(".ckpt"):
        return pretrained_text_encoder_of(source, None, max_length)
    return TextEncoder(source, "mean", max_length)


def teacher_width(source: str) -> int:
    """The teacher's embedding width, read from its config (the weights load only when targets are computed)."""
    from transformers import AutoConfig

    if source.endswith(".ckpt"):
        source = torch.load(source, map_location="cpu", weights_only=True, mmap=True)["hyper_parameters"]["model_name_or_path"]
    return int(AutoConfig.from_pretrained(source).hidden_size)


def _audio_stamp(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


class _DescriptorDataset(Dataset):
    def __init__(self, rows: list[SpeechText], hop: int, names: list[str], normalisation: Normalisation) -> None:
        self.rows, self.hop, self.names, self.normalisation = rows, hop, names, normalisation

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        wave = load_audio(self.rows[i].audio_path)
        return acoustic_descriptors(wave, self.hop, names=self.names, normalisation=self.normalisation).half()


def compute_descriptors(
    rows: list[SpeechText], hop: int, names: list[str], num_workers: int = 0, normalisation: Normalisation = "authors"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors of every row, concatenated -> (``[frames, A]`` float16, offsets ``[N + 1]``)."""
    loader = DataLoader(_DescriptorDataset(rows, hop, names, normalisation), batch_size=None, num_workers=num_workers)
    parts = list(tqdm(loader, total=len(rows), desc="CARE descriptors", disable=len(rows) < 1000))
    lengths = torch.tensor([0] + [p.shape[0] for p in parts])
    return torch.cat(parts), torch.cumsum(lengths, 0)
