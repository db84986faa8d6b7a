"""Training that survives a kill: atomic checkpoints, a periodic resumable checkpoint, the random-number and
sampler state a mid-epoch resume needs, and finding the newest resumable checkpoint of a run folder."""

from __future__ import annotations

import csv
import logging
import os
import random
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from weakref import proxy

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from data_modules.batching import BucketBatchSampler

log = logging.getLogger(__name__)

FINISHED_MARKER = "fit_finished"  # written into the run folder when fit returns normally
_VERSION = re.compile(r"version_(\d+)$")


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files are complete or absent: each is written to a hidden ``.partial`` file in
    the same folder, flushed to disk and renamed over the target.

    Lightning's own save writes a temporary file in the system temp folder and moves it over the target, which
    is a copy (not atomic) when that folder is on another file system, so a kill could leave a torn checkpoint.
    """

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        target = Path(filepath)
        partial = target.with_name(f".{target.name}.partial")
        trainer.save_checkpoint(partial, self.save_weights_only)
        if trainer.is_global_zero:
            _fsync(partial)
            os.replace(partial, target)
            _fsync(target.parent)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class ResumeCheckpoint(AtomicModelCheckpoint):
    """The resumable checkpoint ``checkpoints/resume.ckpt`` (one file, replaced each time), written at the end of
    every epoch and every ``every_n_train_steps`` optimizer steps or, when that is not set, every
    ``every_n_minutes`` of training.

    It also carries what an exact mid-epoch resume needs beyond Lightning's own state, in every checkpoint of
    the run (the epoch-end ``last.ckpt`` too): the random-number generators (torch, CUDA, Python, NumPy) as they
    stood at the save, restored when training resumes, and the number of batches of the current epoch the
    training loop finished, which the ``BucketBatchSampler`` records. No save falls just before a validation
    run or at an epoch's last batch: the checkpoint written after that validation (``last.ckpt``) follows at once.
    """

    def __init__(
        self,
        every_n_train_steps: int | None = None,
        every_n_minutes: float | None = 5.0,
        filename: str = "resume",
        dirpath: str | None = None,
    ) -> None:
        triggers: dict[str, Any] = {"every_n_epochs": 0}
        if every_n_train_steps:
            triggers["every_n_train_steps"] = every_n_train_steps
        elif every_n_minutes:
            triggers["train_time_interval"] = timedelta(minutes=every_n_minutes)
        else:
            triggers["every_n_train_steps"] = 0  # periodic saves off; the RNG and sampler state still travel
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, save_last=False, enable_version_counter=False, **triggers
        )
        self.every_n_minutes = every_n_minutes
        self._pending: dict[str, Any] | None = None
        self._trainer: Trainer | None = None

    @property
    def state_key(self) -> str:
        # one per run whatever its interval, so that a resume with another interval still finds the RNG state
        return "MeritslResumeCheckpoint"

    def state_dict(self) -> dict[str, Any]:
        samplers = [sampler.state_dict() for sampler in _train_batch_samplers(self._trainer)] if self._trainer else []
        return {**super().state_dict(), "rng": capture_rng(), "samplers": samplers}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self._pending = {"rng": state.pop("rng", None), "samplers": state.pop("samplers", [])}
        super().load_state_dict(state)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Continue exactly where the checkpoint left off: the generators as they stood at the save, and a train
        iterator that replays the interrupted epoch past its finished batches (or begins the next epoch).

        Lightning may have built the train iterator before the checkpoint's loop state was loaded (e.g. when the
        learning-rate schedule asks for ``estimated_stepping_batches``), from the wrong generator state and
        without the sampler's position, so it is built again here, the last moment before the first batch.
        """
        pending, self._pending = self._pending, None
        if not pending or pending["rng"] is None:
            return
        restore_rng(pending["rng"])
        samplers = _train_batch_samplers(trainer)
        epoch = trainer.fit_loop.epoch_progress.current.processed
        for sampler, state in zip(samplers, pending["samplers"], strict=False):
            sampler.load_state_dict(state)
        for sampler in samplers:
            if not sampler.resuming_mid_epoch and hasattr(sampler.sampler, "set_epoch"):
                sampler.sampler.set_epoch(epoch)
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if fetcher is None:
            return
        if any(s.resuming_mid_epoch for s in samplers):
            # the interrupted run built this epoch's iterator long before the save: building it again (it draws a
            # worker seed from the global generator) must not shift what training draws next
            with torch.random.fork_rng(devices=[]):
                iter(fetcher)
        else:
            iter(fetcher)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        for sampler in _train_batch_samplers(trainer):
            sampler.consumed = batch_idx + 1
        if _validation_or_epoch_end_follows(trainer):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # at every epoch end, after its validation: Lightning 2.6 writes last.ckpt only when the best one changes
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # no monitored saves: this callback writes on its own triggers only

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir
        if trainer.is_global_zero and log_dir and not trainer.interrupted:
            Path(log_dir, FINISHED_MARKER).write_text(f"global_step {trainer.global_step}\n")


def _validation_or_epoch_end_follows(trainer: Trainer) -> bool:
    epoch_loop = trainer.fit_loop.epoch_loop
    if epoch_loop.batch_progress.is_last_batch:
        return True
    try:  # the exact test the epoch loop applies right after this hook
        return bool(epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except (AttributeError, TypeError):
        return False


def _train_batch_samplers(trainer: Trainer) -> list[BucketBatchSampler]:
    loaders = trainer.train_dataloader
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    elif not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    return [dl.batch_sampler for dl in loaders if isinstance(getattr(dl, "batch_sampler", None), BucketBatchSampler)]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- random-number state ---------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """The torch, CUDA, Python and NumPy generator states, in types a ``weights_only`` load accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


# -- finding the run to resume ----------------------------------------------------------------------------------
@dataclass
class ResumePoint:
    """The run folder a resumed fit writes into and the checkpoint it continues from (None: start it afresh)."""

    run_dir: Path
    version: str
    checkpoint: Path | None
    finished: bool
    step: int | None = None  # the global step ``checkpoint`` records


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint records, or None when the file is not a readable training checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["global_step"]) if "loops" in ckpt else None
    except Exception as e:  # a torn or foreign file is not a resume point
        log.warning("not resuming from %s: it is not a readable training checkpoint (%s)", path, e)
        return None


def newest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint of ``folder`` that records the most training (global step, then the newest file)."""
    newest = _newest_with_step(folder)
    return newest[1] if newest else None


def _newest_with_step(folder: Path) -> tuple[int, Path] | None:
    found = []
    for path in folder.glob("*.ckpt"):
        if path.is_file() and not path.is_symlink() and (step := checkpoint_step(path)) is not None:
            found.append((step, path.stat().st_mtime_ns, path))
    if not found:
        return None
    step, _, path = max(found)
    return step, path


def resume_point(save_dir: str | os.PathLike, name: str | None, version: int | str | None) -> ResumePoint:
    """The run to continue under ``<save_dir>/<name>``: the folder ``version`` names, else the newest ``version_N``.

    A folder without a checkpoint yet (killed before its first save) is started again in place.
    """
    base = Path(save_dir) / (name or "")
    if version is None:
        numbered = [(int(m.group(1)), p) for p in base.glob("version_*") if p.is_dir() and (m := _VERSION.search(p.name))]
        if not numbered:
            return ResumePoint(base / "version_0", "version_0", None, False)
        run_dir = max(numbered)[1]
    else:
        run_dir = base / (version if isinstance(version, str) else f"version_{version}")
    ckpt_dir = run_dir / "checkpoints"
    newest = _newest_with_step(ckpt_dir) if ckpt_dir.is_dir() else None
    step, checkpoint = newest or (None, None)
    return ResumePoint(run_dir, run_dir.name, checkpoint, (run_dir / FINISHED_MARKER).is_file(), step)


def keep_metrics_before(metrics_csv: Path, global_step: int) -> list[dict[str, str]]:
    """Rows of a run's ``metrics.csv`` logged before ``global_step`` (later ones are logged again on resume)."""
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r.get("step", "") == "" or int(float(r["step"])) < global_step]
