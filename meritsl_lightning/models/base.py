"""The base LightningModule of every training stage: metrics, logging, optimisation, checkpoint metadata,
and the frozen-upstream inputs that Stages II and III train on."""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import ConfusionMatrix, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from data_modules.base import ERCDataModule, SplitData
from data_modules.batching import IGNORE_INDEX, pad_conversations
from meritsl_lightning.checkpoints import CheckpointMismatch, StageCheckpoint, read_stage_checkpoint
from meritsl_lightning.encoders.cache import EmbeddingCache, producer
from meritsl_lightning.encoders.speech import build_speech_encoder
from meritsl_lightning.errors import InvalidInput
from meritsl_lightning.metrics.sentiment import MOSIRegressionMetrics

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
SPLIT_PREFIX = {"train": "train", "validation": "val", "test": "test"}
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}
# cross-entropy class weights: none (the paper), balanced (N / (C * n_c) over the training split), or one per class
ClassWeights = Literal["none", "balanced"] | list[float] | None


def _metric_collection(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "weighted_f1": MulticlassF1Score(num_classes, average="weighted"),
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


class BaseStageModule(LightningModule):
    """Shared training logic; a stage fills in ``configure_models`` and ``logits``.

    Subclasses declare ``stage`` (stage1/stage2/stage3/...), ``modality`` (text/audio/multimodal) and the
    ``input_level`` of their batches (utterance or conversation).
    """

    stage: ClassVar[str]
    modality: ClassVar[str]
    input_level: ClassVar[str]
    monitor: ClassVar[str] = "val/weighted_f1"
    mode: ClassVar[str] = "max"

    def __init__(
        self,
        label_names: list[str] | None = None,
        task: str = "classification",
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.0,
        cache_dir: str | None = None,
        class_weights: ClassWeights = None,
    ) -> None:
        super().__init__()
        if not label_names:
            raise ValueError(
                f"{type(self).__name__} needs label_names; the CLI links them from the data module "
                "(data.label_names), in Python pass label_names=datamodule.label_names"
            )
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if task == "regression" and len(label_names) != 2:
            raise ValueError(f"a regression task reports a binarised score with labels [negative, positive], got {label_names}")
        self.save_hyperparameters()
        self.label_names = list(label_names)
        self.num_classes = len(self.label_names)
        self.task = task
        # regression: one output, the score; its sign gives the [negative, positive] label (>= 0 is positive)
        self.num_outputs = 1 if task == "regression" else self.num_classes
        self.class_weights = check_class_weights(class_weights, self.label_names, task)
        self.cache = EmbeddingCache(cache_dir)
        self._inputs: dict[str, Any] = {}  # split -> frozen-upstream tensors (never part of the state dict)
        self._device_inputs: dict[str, Any] = {}
        self._frozen_models: dict[str, BaseStageModule] = {}  # a plain dict: never saved with this model
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- hooks for the stages -------------------------------------------------------------------------------
    @abstractmethod
    def configure_models(self) -> None:
        """Build the trainable network."""

    def configure_losses(self) -> None:
        # a buffer of the loss, so a checkpoint keeps the weights it was trained with ("balanced" fills them in setup)
        weights = self.class_weights if isinstance(self.class_weights, list) else None
        if self.class_weights == "balanced":
            weights = [1.0] * self.num_classes
        weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)
        self.regression_criterion = nn.L1Loss()

    def configure_metrics(self) -> None:
        # keyed by split prefix; "train" cannot be a ModuleDict key (it is nn.Module.train)
        self.metrics = nn.ModuleDict({f"{p}_": _metric_collection(self.num_classes) for p in SPLIT_PREFIX.values()})
        self.per_class_f1 = nn.ModuleDict({f"{p}_": MulticlassF1Score(self.num_classes, average=None) for p in ("val", "test")})
        self.confusion = nn.ModuleDict(
            {f"{p}_": ConfusionMatrix(task="multiclass", num_classes=self.num_classes) for p in ("val", "test")}
        )
        if self.task == "regression":
            self.regression_metrics = nn.ModuleDict(
                {f"{p}_": MOSIRegressionMetrics() for p in SPLIT_PREFIX.values()}
            )

    @abstractmethod
    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits [B, C] (utterance batches) or [B, K, C] (conversation batches)."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Width of the per-utterance embedding that the next stage consumes."""

    @abstractmethod
    def compute_embeddings(self, data: SplitData, device: torch.device) -> torch.Tensor:
        """Per-utterance embeddings [N, embedding_dim] for a split, in ``data.rows`` order (frozen use)."""

    def prepare_split(self, data: SplitData, device: torch.device) -> Any:
        """Frozen upstream inputs of a split (cached tensors), or None when the stage reads raw batches."""
        return None

    def on_inputs_ready(self, stage: str) -> None:
        """Called once the split inputs of ``stage`` are prepared (e.g. to fit input statistics)."""

    def upstream_identity(self) -> str | None:
        """Identity of the frozen inputs this model was trained on (recorded in its checkpoint)."""
        return None

    def encoder_records(self) -> dict[str, Any]:
        """The text and speech encoders under this model (``{"text": ..., "speech": ...}``), for the run record."""
        return {}

    # -- inputs ---------------------------------------------------------------------------------------------
    @property
    def extraction_device(self) -> torch.device:
        return self.trainer.strategy.root_device if self._trainer is not None else self.device

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if not isinstance(dm, ERCDataModule):
            raise InvalidInput(f"{type(self).__name__} needs a meritsl data module (ERCDataModule), got {type(dm).__name__}")
        if dm.task != self.task:
            raise InvalidInput(f"{type(self).__name__} was built for a {self.task} task, the data module ({dm.corpus}/{dm.protocol}) is {dm.task}")
        if dm.label_names != self.label_names:
            raise InvalidInput(
                f"{type(self).__name__} was built for labels {self.label_names} but the data module "
                f"({dm.corpus}/{dm.protocol}) has {dm.label_names}"
            )
        dm.use_batch_level(self.input_level)  # type: ignore[arg-type]
        if stage == "fit" and self.class_weights == "balanced":
            self.criterion.weight.copy_(balanced_class_weights(dm.split_data("train").labels, self.label_names))
            log.info("balanced class weights from the training split: %s", dict(zip(self.label_names, self.criterion.weight.tolist(), strict=True)))
        splits = STAGE_SPLITS.get(stage, (dm.predict_split,))
        device = self.extraction_device
        # a cache miss builds frozen models, which draws random numbers: fork the generators so that training
        # is the same whether the inputs were computed or read from the cache
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for split in splits:
                if split not in self._inputs:
                    data = dm.split_data(split)
                    self._inputs[split] = self.rank_zero_first(lambda d=data: self.prepare_split(d, device))
                    self._device_inputs.pop(split, None)
        self.on_inputs_ready(stage)

    def rank_zero_first(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 first (it fills the cache), then on the other ranks (cache hits)."""
        trainer = self.trainer
        if trainer.world_size == 1:
            return fn()
        if not trainer.is_global_zero:
            trainer.strategy.barrier("meritsl_cache")
            return fn()
        result = fn()
        trainer.strategy.barrier("meritsl_cache")
        return result

    def split_inputs(self, split: str) -> Any:
        """The prepared inputs of ``split`` on this module's device (moved once)."""
        if split not in self._inputs:
            raise RuntimeError(f"inputs of split {split!r} were not prepared; setup() prepares {sorted(self._inputs)}")
        if split not in self._device_inputs:
            self._device_inputs[split] = _to_device(self._inputs[split], self.device)
        return self._device_inputs[split]

    def frozen(self, checkpoint: StageCheckpoint) -> BaseStageModule:
        """The frozen model of an earlier-stage checkpoint, loaded on first use and sharing this cache."""
        if checkpoint.path not in self._frozen_models:
            model = checkpoint.load_frozen()
            model.cache = self.cache
            self._frozen_models[checkpoint.path] = model
        return self._frozen_models[checkpoint.path]

    def upstream_embeddings(self, checkpoint: StageCheckpoint, data: SplitData, device: torch.device) -> torch.Tensor:
        """Per-utterance embeddings of a frozen earlier stage for a split, from the cache or computed once."""
        key = {
            "kind": f"{checkpoint.stage}_{checkpoint.modality}",
            "model": checkpoint.identity,
            "speech_encoder": current_speech_encoder(checkpoint),
            **producer(device),
            **data.cache_key(),
        }
        return self.cache.get_or_compute(key, lambda: frozen_embeddings(self.frozen(checkpoint), data, device))

    # -- steps ----------------------------------------------------------------------------------------------
    def target_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        """Which utterances of a batch count in the loss and metrics (flattened)."""
        if self.task == "regression":
            return ~torch.isnan(batch["scores"].reshape(-1))
        return batch["labels"].reshape(-1) != IGNORE_INDEX

    def _step(self, batch: dict[str, Any], prefix: str) -> torch.Tensor:
        outputs = self.logits(batch)
        outputs = outputs.reshape(-1, outputs.shape[-1])
        keep = self.target_mask(batch)
        outputs, labels = outputs[keep], batch["labels"].reshape(-1)[keep]
        if self.task == "regression":
            pred, scores = outputs[:, 0].float(), batch["scores"].reshape(-1)[keep].float()
            loss = self.regression_criterion(pred, scores)
            self.regression_metrics[f"{prefix}_"].update(pred, scores)
            preds = (pred >= 0).long()
        else:
            loss = self.criterion(outputs.float(), labels)
            preds = outputs.argmax(-1)
        self.metrics[f"{prefix}_"].update(preds, labels)
        if f"{prefix}_" in self.per_class_f1:
            self.per_class_f1[f"{prefix}_"].update(preds, labels)
            self.confusion[f"{prefix}_"].update(preds, labels)
        self.log(f"{prefix}/loss", loss, on_step=prefix == "train", on_epoch=True, batch_size=labels.numel(), sync_dist=prefix != "train")
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        logits = self.logits(batch).float()
        probs = logits if self.task == "regression" else logits.softmax(-1)
        utt_ids = batch["utt_ids"]
        out = []
        if logits.dim() == 3:
            for b, ids in enumerate(utt_ids):
                out += [self._prediction(u, probs[b, k]) for k, u in enumerate(ids)]
        else:
            out = [self._prediction(u, probs[i]) for i, u in enumerate(utt_ids)]
        return out

    def _prediction(self, utt_id: str, probs: torch.Tensor) -> dict[str, Any]:
        if self.task == "regression":
            score = float(probs[0])
            return {"utt_id": utt_id, "score": round(score, 6), "label": self.label_names[int(score >= 0)]}
        return {
            "utt_id": utt_id,
            "label": self.label_names[int(probs.argmax())],
            "probs": {name: round(float(p), 6) for name, p in zip(self.label_names, probs, strict=True)},
        }

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, prefix: str) -> None:
        if self.trainer.sanity_checking:
            self._reset(prefix)
            return
        values = self.metrics[f"{prefix}_"].compute()
        if self.task == "regression":
            values.update(self.regression_metrics[f"{prefix}_"].compute())
        # torchmetrics already synced these across ranks; sync_dist only silences Lightning's DDP warning
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, sync_dist=True)
        if f"{prefix}_" in self.per_class_f1:
            per_class = self.per_class_f1[f"{prefix}_"].compute()
            self.log_dict({f"{prefix}/f1_{name}": v for name, v in zip(self.label_names, per_class, strict=True)}, sync_dist=True)
            confusion = self.confusion[f"{prefix}_"].compute().tolist()
            self._write_confusion(prefix, confusion)
        self._reset(prefix)

    def _reset(self, prefix: str) -> None:
        self.metrics[f"{prefix}_"].reset()
        if self.task == "regression":
            self.regression_metrics[f"{prefix}_"].reset()
        if f"{prefix}_" in self.per_class_f1:
            self.per_class_f1[f"{prefix}_"].reset()
            self.confusion[f"{prefix}_"].reset()

    def _write_confusion(self, prefix: str, confusion: list[list[int]]) -> None:
        log_dir = self.trainer.log_dir
        if not self.trainer.is_global_zero or log_dir is None:
            return
        path = Path(log_dir) / f"{prefix}_confusion_matrix.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"labels": self.label_names, "rows_true_cols_pred": confusion, "epoch": self.current_epoch}, indent=1))

    # -- optimisation ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        if not self.hparams.warmup_ratio:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(total * self.hparams.warmup_ratio))

        def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint["meritsl"] = {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage,
            "modality": self.modality,
            "class_path": f"{cls.__module__}.{cls.__qualname__}",
            "label_names": self.label_names,
            "task": self.task,
            "embedding_dim": self.embedding_dim,
            "upstream_identity": self.upstream_identity(),
            "encoders": self.encoder_records(),
        }


class TextSpeechUpstreams:
    """For a ``BaseStageModule`` over two frozen upstream checkpoints, ``text_upstream`` and ``audio_upstream``
    (Stage III over the Stage II pair, the Fig. 4 joint model over the Stage I pair): their identity, the
    encoders they stand on, the stale-upstream check on load, and their embeddings of a split."""

    text_upstream: StageCheckpoint
    audio_upstream: StageCheckpoint

    def upstream_identity(self) -> str:
        return f"{self.text_upstream.identity}|{self.audio_upstream.identity}"

    def encoder_records(self) -> dict[str, Any]:
        return {"text": self.text_upstream.encoders.get("text", {}), "speech": self.audio_upstream.encoders.get("speech", {})}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_upstream_unchanged(checkpoint, [self.text_upstream, self.audio_upstream])

    def prepare_split(self, data: SplitData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.upstream_embeddings(self.text_upstream, data, device),  # type: ignore[attr-defined]
            self.upstream_embeddings(self.audio_upstream, data, device),  # type: ignore[attr-defined]
        )


def check_class_weights(value: ClassWeights, label_names: list[str], task: str) -> ClassWeights:
    """``None`` for plain cross-entropy, ``"balanced"``, or a list of one positive weight per label."""
    if value is None or value == "none":
        return None
    if task == "regression":
        raise ValueError(f"class_weights={value!r}: a regression task has no classes to weight; leave it none")
    if value == "balanced":
        return value
    if isinstance(value, str) or len(value) != len(label_names) or any(w < 0 for w in value):
        raise ValueError(
            f"class_weights must be none, balanced or one non-negative weight per label ({len(label_names)}: "
            f"{label_names}), got {value!r}"
        )
    return [float(w) for w in value]


def balanced_class_weights(labels: torch.Tensor, label_names: list[str]) -> torch.Tensor:
    """N / (C * n_c) over the labelled utterances of the training split."""
    counts = torch.bincount(labels[labels != IGNORE_INDEX], minlength=len(label_names)).float()
    if (counts == 0).any():
        missing = [name for name, n in zip(label_names, counts, strict=True) if n == 0]
        raise ValueError(f"class_weights=balanced: the training split has no utterance of {missing}")
    return counts.sum() / (len(label_names) * counts)


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def conversation_batches(
    conversations: list[list[int]], batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[list[int]]]]:
    """Padded row ``index`` [B, K] and ``mask`` [B, K] for consecutive groups of conversations."""
    for start in range(0, len(conversations), batch_size):
        convs = conversations[start : start + batch_size]
        index, mask = pad_conversations(convs)
        yield index.to(device), mask.to(device), convs


def frozen_embeddings(model: BaseStageModule, data: SplitData, device: torch.device) -> torch.Tensor:
    """Run a frozen stage model over a split on ``device``; CPU float embeddings [N, D]."""
    model.to(device).eval()
    try:
        return model.compute_embeddings(data, device).float().cpu()
    finally:
        model.cpu()


def check_upstream_unchanged(checkpoint: dict[str, Any], upstreams: list[StageCheckpoint]) -> None:
    """Refuse a checkpoint whose earlier-stage files changed since it was trained (its inputs would differ)."""
    recorded = (checkpoint.get("meritsl") or {}).get("upstream_identity")
    if recorded is None:
        return
    if recorded != "|".join(u.identity for u in upstreams):
        raise CheckpointMismatch(
            f"the earlier-stage checkpoint(s) {', '.join(u.path for u in upstreams)} changed since this "
            f"{checkpoint['meritsl']['stage']} checkpoint was trained on them; retrain it or restore the original files"
        )


def current_speech_encoder(checkpoint: StageCheckpoint, role: str | None = None) -> str | None:
    """The identity of the speech encoder under a speech checkpoint (Stage I, or a Stage II over one), recomputed
    from the encoder it names as that encoder is now, and checked against the identity the Stage I checkpoint
    recorded: a CARE checkpoint (or model folder) retrained or replaced since Stage I was trained on its features
    stops here, instead of feeding new features to an old head. None for text checkpoints."""
    if checkpoint.modality != "audio":
        return None
    role = role or checkpoint.stage
    return _speech_encoder_identity(checkpoint.path, checkpoint.identity, role)


# sha256 -> path of a Stage I checkpoint that lives elsewhere than its Stage II records (a bundle's copy)
STAGE1_COPIES: dict[str, str] = {}
# (checkpoint path, its sha256, the encoder files' sizes and times) -> verified identity: the encoder is built once
_IDENTITIES: dict[tuple[str, str, tuple], str] = {}


def _encoder_stamp(spec: str) -> tuple:
    """Sizes and modification times of the files a speech-encoder spec names (changes when they are rewritten)."""
    kind, sep, rest = spec.partition(":")
    path = Path(rest if sep and kind in ("care", "hf") else spec)
    files = sorted(path.iterdir()) if path.is_dir() else [path] if path.is_file() else []
    return tuple((f.name, (st := f.stat()).st_size, st.st_mtime_ns, st.st_ino) for f in files if f.is_file())


def _speech_encoder_identity(path: str, file_identity: str, role: str) -> str:
    blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    meta, hparams = blob["meritsl"], blob.get("hyper_parameters", {})
    memo = (path, file_identity, _encoder_stamp(str(hparams.get("speech_encoder", ""))))
    if memo in _IDENTITIES:
        return _IDENTITIES[memo]
    if meta["stage"] != "stage1":  # a Stage II (or later) speech model: follow it down to its Stage I
        # a byte-identical copy registered by content (e.g. in a model bundle) stands in for the recorded path
        stage1_sha = (meta.get("upstream_identity") or "").split("|")[0]
        stage1_path = STAGE1_COPIES.get(stage1_sha, hparams["stage1_checkpoint"])
        upstream = read_stage_checkpoint(stage1_path, role=f"{role} -> stage1_checkpoint", stages=("stage1",))
        identity = _speech_encoder_identity(upstream.path, upstream.identity, f"{role} -> stage1_checkpoint")
    else:
        spec, options = hparams["speech_encoder"], hparams.get("encoder_options") or {}
        try:
            identity = build_speech_encoder(spec, **options).identity()
        except Exception as e:
            raise CheckpointMismatch(
                f"{role}: {path} was trained on features of the speech encoder {spec!r}, which cannot be loaded now: {e}"
            ) from e
        recorded = meta.get("upstream_identity")
        if recorded is not None and recorded != identity:
            raise CheckpointMismatch(
                f"{role}: {path} was trained on features of the speech encoder {spec!r}, which has changed since "
                f"(recorded {recorded}, now {identity}), e.g. a CARE checkpoint retrained or replaced: retrain this "
                "Stage I speech model on the current encoder, or restore the encoder it was trained on"
            )
    _IDENTITIES[memo] = identity
    return identity
