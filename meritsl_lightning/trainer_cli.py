"""The training commands (fit/validate/test/predict): LightningCLI over any stage module and data module.

Imported only when a training command runs: Lightning and torch take seconds to import, and the pipeline
commands (``prepare``, ``tabulate``, ...) need neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger

from meritsl_lightning.callbacks import JsonlPredictionWriter
from meritsl_lightning.encoders.provenance import run_record
from meritsl_lightning.loggers import WandbLogging, finish_wandb
from meritsl_lightning.resume import (
    AtomicModelCheckpoint,
    ResumeCheckpoint,
    keep_metrics_before,
    resume_point,
)


class MeritslCLI(LightningCLI):
    """LightningCLI over the stage modules and corpus data modules, picked by ``class_path``.

    Any LightningModule / LightningDataModule is accepted, so that the pre-training modules (text, CARE) run
    from the same command; the label and task links apply only to models that take them.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        parser_kwargs = {"parser_mode": "omegaconf", **{c: {"parser_mode": "omegaconf"} for c in self.subcommands()}}
        self.test_results: list[dict[str, float]] | None = None
        self._resume_step: int | None = None
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            parser_kwargs=parser_kwargs,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the data module publishes the label set; no label list is typed twice
        parser.link_arguments("data.label_names", "model.init_args.label_names", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")
        parser.add_lightning_class_args(AtomicModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/weighted_f1",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(JsonlPredictionWriter, "predictions")
        # W&B beside the configured logger (experiments/logging/wandb.yaml sets wandb.enabled)
        parser.add_lightning_class_args(WandbLogging, "wandb")
        parser.add_lightning_class_args(ResumeCheckpoint, "resume_checkpoint")
        parser.add_argument(
            "--resume",
            type=bool,
            default=False,
            help="fit only: continue the newest run of <save_dir>/<name> (or the logger's version) from its newest "
            "checkpoint; the same as --ckpt_path=last",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: test the best-validation checkpoint once training ends",
        )

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            finish_wandb(self.trainer, exit_code=1)
            raise
        finish_wandb(self.trainer)  # one W&B run per command; fit's test belongs to it
        release_process_group()

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            self._prepare_resume(self.config["fit"])

    def _prepare_resume(self, cfg: Any) -> None:
        """``--resume`` / ``--ckpt_path=last``: write into the run folder being resumed, from its newest checkpoint."""
        explicit = cfg.get("ckpt_path")
        resume = bool(cfg.get("resume")) or explicit == "last"
        if not resume:
            return  # none, or an explicit checkpoint: Lightning's own resume, into a new run folder
        logger = _logger_args(cfg.get("trainer", {}).get("logger"))
        if logger is None:
            raise ValueError(
                "--resume needs trainer.logger with a save_dir and name (e.g. lightning.pytorch.loggers.CSVLogger): "
                "they name the run folder to continue"
            )
        point = resume_point(logger.save_dir, logger.get("name"), logger.get("version"))
        if point.finished:
            print(f"--resume: {point.run_dir} finished its fit already; nothing to resume (run without --resume for a new run)")
            raise SystemExit(0)
        logger.version = point.version
        cfg.ckpt_path = str(point.checkpoint) if point.checkpoint else None
        if point.checkpoint is None:
            print(f"--resume: no checkpoint in {point.run_dir} yet; training it from the start")
            self.save_config_kwargs = {**self.save_config_kwargs, "overwrite": True}
            return
        self._resume_step = point.step
        self.save_config_kwargs = {**self.save_config_kwargs, "overwrite": True}  # the resumed run's own config.yaml
        print(f"--resume: continuing {point.run_dir} from {point.checkpoint.name} (global step {point.step})")

    def before_fit(self) -> None:
        logger = self.trainer.logger
        if self._resume_step is None or not isinstance(logger, CSVLogger) or not self.trainer.is_global_zero:
            return
        # the CSV logger clears an existing metrics.csv: keep the rows logged before the checkpoint
        rows = keep_metrics_before(Path(logger.log_dir) / "metrics.csv", self._resume_step)
        if rows:
            logger.experiment.metrics.extend(rows)
            logger.experiment.save()

    def after_fit(self) -> None:
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank must ask
        if best and self.trainer.is_global_zero and log_dir:
            link_latest_best(Path(best), Path(log_dir).parent / "best.ckpt")
        splits = self.datamodule.split_names() if hasattr(self.datamodule, "split_names") else []
        if not self.config[self.subcommand].get("test_after_fit") or "test" not in splits:
            return
        self.test_results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        if self.trainer.is_global_zero and log_dir:
            summary = {"best_checkpoint": best, **run_record(self.model, self.datamodule)}
            summary["test"] = self.test_results[0] if self.test_results else {}
            Path(log_dir, "test_metrics.json").write_text(json.dumps(summary, indent=1))

    def after_test(self) -> None:
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank must ask
        if self.trainer.is_global_zero and log_dir:
            results = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("test/")}
            summary = {"checkpoint": self.config["test"].get("ckpt_path"), **run_record(self.model, self.datamodule)}
            summary["test"] = results
            Path(log_dir, "test_metrics.json").write_text(json.dumps(summary, indent=1))


def release_process_group() -> None:
    """End a finished DDP run's process group on every rank. Lightning leaves it open, and gloo's threads then
    meet interpreter shutdown, which now and then aborts a run that finished ("terminate called without an
    active exception", exit status 134): a reproduction would count it as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _logger_args(logger: Any) -> Any:
    """The init arguments of a configured logger that names a run folder (save_dir, name, version), else None."""
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    init = logger.get("init_args") if hasattr(logger, "get") else None
    if init is None or not hasattr(init, "get") or not init.get("save_dir") or "version" not in init:
        return None
    return init


def link_latest_best(best: Path, link: Path) -> None:
    """Point ``<logger dir>/best.ckpt`` at this run's best checkpoint, so the next stage's config finds it.

    Earlier runs keep their own versioned folders; only this pointer moves.
    """
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(best.resolve(), link.parent.resolve()))
    os.replace(tmp, link)
