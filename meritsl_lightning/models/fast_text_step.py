"""The fast training step of the text models (text pre-training and Stage I text share it).

At batch 32 an eager RoBERTa step is bound by the host, not the GPU: every new sequence length sets up new
kernels, the padding-mask check syncs the GPU with the host, and bf16 autocast dispatches hundreds of weight
casts. The fast step removes each cause and keeps the eager step's numbers:

- lengths padded up to a few buckets, and the batch padded to a fixed number of rows (pad rows carry no
  label), so only ``len(buckets)`` shapes ever reach the device;
- a prepared additive attention mask (``TextEncoder(additive_mask=True)``): no mask check, no host sync;
- the forward and loss compiled per bucket (``torch.compile``; on one CUDA device with CUDA graphs,
  ``mode="reduce-overhead"``), so weight casts and launches happen inside a graph, not one by one from the
  host. The weights stay fp32 and are the optimiser's master weights: no small update is lost;
- training metrics kept on the device and fed to torchmetrics at the end of the epoch: no sync per step.

``fast_step: auto`` (the default) turns it on for CUDA and leaves the CPU on the eager step; ``on`` forces it
(eager, bucketed and masked, on a CPU unless ``compile_step: on``); ``off`` is the eager step. Validation,
test and prediction always take the eager path, so a checkpoint is the same whichever step trained it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.nn import functional as F

from data_modules.batching import IGNORE_INDEX

log = logging.getLogger(__name__)

FastStep = Literal["auto", "on", "off"]
# The data modules define no batch-transfer hook, so the module's own (below) is the one that runs, as intended.
warnings.filterwarnings("ignore", message="You have overridden `on_before_batch_transfer` in `LightningModule` but have passed")


class FastTextStep:
    """Mixin for a ``BaseStageModule`` with ``encoder`` (a ``TextEncoder``), ``dropout`` and ``classifier``, and
    the hyperparameters ``fast_step``, ``compile_step`` and ``length_buckets``."""

    def fast_step_active(self) -> bool:
        mode = self.hparams.fast_step
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"fast_step must be auto, on or off, got {mode!r}")
        return mode == "on" or (mode == "auto" and self.device.type == "cuda")

    def _fast_state(self) -> dict[str, Any]:
        # a plain dict attribute: nothing here belongs in the state dict or the hyperparameters
        if not hasattr(self, "_fast"):
            self._fast = {"rows": 0, "outputs": [], "labels": [], "scores": [], "compiled": None, "compile_seconds": {}}
        return self._fast

    # -- the step -------------------------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        training = self._trainer is not None and self.trainer.training
        if training and isinstance(batch, dict) and "labels" in batch and self.fast_step_active():
            # counted on the host before the batch moves: the loss's batch size costs no sync later
            keep = ~torch.isnan(batch["scores"]) if self.task == "regression" else batch["labels"] != IGNORE_INDEX
            batch["num_targets"] = int(keep.sum())
        return batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if not self.fast_step_active():
            return super().training_step(batch, batch_idx)
        state = self._fast_state()
        texts = batch["texts"]
        # the loader's batch size fixes the rows (a short last batch gets pad rows, not a new shape)
        state["rows"] = max(state["rows"], len(texts), getattr(self.trainer.datamodule, "batch_size", 0) or 0)
        enc = self.encoder.tokenize_bucketed(texts, self.hparams.length_buckets, rows=state["rows"])
        extra = state["rows"] - len(texts)
        labels = F.pad(batch["labels"].reshape(-1), (0, extra), value=IGNORE_INDEX)
        scores = F.pad(batch["scores"].reshape(-1).float(), (0, extra), value=float("nan")) if self.task == "regression" else None
        device = self.device
        ids, mask = (enc[k].to(device, non_blocking=True) for k in ("input_ids", "attention_mask"))
        loss, outputs = self._run_fast_loss(ids, mask, labels, scores)
        # kept for the epoch's metrics; new tensors, so a later CUDA-graph replay cannot overwrite them
        state["labels"].append(labels.detach())
        if self.task == "regression":
            state["outputs"].append(outputs.detach()[:, 0].float().clone())
            state["scores"].append(scores.detach())
        else:
            state["outputs"].append(outputs.detach().argmax(-1))
        count = batch.get("num_targets", len(texts))
        self.log("train/loss", loss.detach().clone(), on_step=True, on_epoch=True, batch_size=count)
        return loss

    def fast_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and outputs of one padded batch; pad rows and unlabelled rows count in neither."""
        outputs = self.classifier(self.dropout(self.encoder(input_ids, attention_mask, additive_mask=True)))
        if scores is None:
            return self.criterion(outputs.float(), labels), outputs  # ignore_index and class weights as eager
        valid = ~torch.isnan(scores)
        error = torch.where(valid, (outputs[:, 0].float() - scores.nan_to_num()).abs(), 0.0)
        return error.sum() / valid.sum().clamp_min(1), outputs

    def _run_fast_loss(
        self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = self._fast_state()
        fn, cudagraphs = self._compiled_fast_loss()
        shape = f"{ids.shape[0]}x{ids.shape[1]}"
        with _attention_backends(ids.device):
            if fn is None or shape in state["compile_seconds"]:
                if cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()
                return (fn or self.fast_loss)(ids, mask, labels, scores)
            # first batch of this shape: compile (once per shape), timed; a backend failure falls back to eager
            _sync(ids.device)
            start = time.perf_counter()
            try:
                if cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()
                out = fn(ids, mask, labels, scores)
            except Exception as e:  # noqa: BLE001 - eager rerun below raises any genuine error
                log.warning("fast step: compiling shape %s failed (%s: %s); continuing with the eager step", shape, type(e).__name__, e)
                state["compiled"] = (None, False)
                return self.fast_loss(ids, mask, labels, scores)
            _sync(ids.device)
            state["compile_seconds"][shape] = time.perf_counter() - start
            log.info("fast step: shape %s compiled in %.1f s (once per shape)", shape, state["compile_seconds"][shape])
            return out

    def _compiled_fast_loss(self) -> tuple[Callable | None, bool]:
        state = self._fast_state()
        if state["compiled"] is None:
            mode = self.hparams.compile_step
            if mode not in ("auto", "on", "off"):
                raise ValueError(f"compile_step must be auto, on or off, got {mode!r}")
            cuda = self.device.type == "cuda"
            if mode == "off" or (mode == "auto" and not cuda):
                state["compiled"] = (None, False)
            else:
                # CUDA graphs replay a whole step per shape; under DDP the gradient all-reduce must stay outside
                cudagraphs = cuda and self.trainer.world_size == 1
                fn = torch.compile(self.fast_loss, dynamic=False, mode="reduce-overhead" if cudagraphs else None)
                state["compiled"] = (fn, cudagraphs)
        return state["compiled"]

    @property
    def fast_compile_seconds(self) -> dict[str, float]:
        """Seconds the first batch of each shape took (compilation included), keyed ``ROWSxLENGTH``."""
        return dict(self._fast_state()["compile_seconds"])

    # -- metrics --------------------------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        self._flush_fast_metrics()
        super().on_train_epoch_end()

    def _flush_fast_metrics(self) -> None:
        state = self._fast_state()
        if not state["outputs"]:
            return
        outputs, labels = torch.cat(state["outputs"]), torch.cat(state["labels"])
        if self.task == "regression":
            scores = torch.cat(state["scores"])
            keep = ~torch.isnan(scores)
            self.regression_metrics["train_"].update(outputs[keep], scores[keep])
            preds = (outputs[keep] >= 0).long()
        else:
            keep = labels != IGNORE_INDEX
            preds = outputs[keep]
        self.metrics["train_"].update(preds, labels[keep])
        for key in ("outputs", "labels", "scores"):
            state[key] = []


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _attention_backends(device: torch.device) -> contextlib.AbstractContextManager:
    """On CUDA, attention with a mask through the memory-efficient kernel (or math), never cuDNN, which builds a
    graph for every new sequence length."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])
