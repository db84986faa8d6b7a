"""Weights & Biases logging beside the configured logger, switched on by ``experiments/logging/wandb.yaml``.

The stage configs set a CSVLogger that owns the run folder (``config.yaml``, ``metrics.csv``, checkpoints,
``test_metrics.json``); a config overlay replacing ``trainer.logger`` would lose it. So W&B comes from a
callback (the ``wandb`` option group of the CLI) that appends a ``WandbLogger`` to the trainer's loggers:
the CSV logger stays first and keeps the folder, W&B gets every metric as well, and its files land in
``<run folder>/wandb/`` (``WANDB_MODE=offline`` works without a server; ``wandb sync`` uploads later).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
REDACTED = "***"


class WandbLogging(Callback):
    """Logs the run to W&B: the resolved config, every metric, test metrics and the test confusion matrix.

    Args:
        enabled: off by default; the overlay ``experiments/logging/wandb.yaml`` switches it on.
        project: the W&B project.
        entity: the W&B team or user (default: the account's default).
        name: run name (default ``<corpus>/<stage>/seed<seed>``).
        group: run group (default ``<corpus>/<stage>``, so the seeds of one stage group together).
        tags: extra tags (corpus, stage, seed, protocol and model class are always added).
        log_model: upload checkpoints as W&B artifacts (``False``: they stay in the run folder only).
        save_dir: folder for W&B's files (default: the run folder, i.e. ``<run folder>/wandb/``).
    """

    def __init__(
        self,
        enabled: bool = False,
        project: str = "meritsl",
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        log_model: bool = False,
        save_dir: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.project = project
        self.entity = entity
        self.name = name
        self.group = group
        self.tags = list(tags or [])
        self.log_model = log_model
        self.save_dir = save_dir
        self.logger: WandbLogger | None = None
        self.run_dir: Path | None = None
        self._config_logged = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.enabled or self.logger is not None:  # fit's test reuses the same W&B run
            return
        # trainer.log_dir is a collective under DDP: asked here, where every rank passes, never on rank 0 alone
        run_dir = trainer.log_dir
        self.run_dir = Path(run_dir or ".")
        ids = run_identity(trainer, pl_module)
        tags = [ids["corpus"], ids["stage"], f"seed{ids['seed']}", type(pl_module).__name__]
        if ids.get("protocol"):
            tags.append(ids["protocol"])
        self.logger = WandbLogger(
            project=self.project,
            entity=self.entity,
            name=self.name or f"{ids['corpus']}/{ids['stage']}/seed{ids['seed']}",
            group=self.group or f"{ids['corpus']}/{ids['stage']}",
            tags=list(dict.fromkeys([*tags, *self.tags])),
            log_model=self.log_model,
            save_dir=self.save_dir or run_dir or ".",
            job_type=stage,
        )
        trainer.loggers = [*trainer.loggers, self.logger]

    def _log_config(self, trainer: Trainer) -> None:
        """The resolved config (as the run folder's ``config.yaml`` holds it), flat dotted keys like the
        sweep parameters (``model.init_args.lr``), with secrets masked."""
        if self._config_logged or self.logger is None or self.run_dir is None or not trainer.is_global_zero:
            return
        self._config_logged = True
        path = self.run_dir / "config.yaml"
        if path.is_file():
            config = flatten(yaml.safe_load(path.read_text()) or {})
            self.logger.experiment.config.update(redact(config), allow_val_change=True)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_config(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_config(trainer)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_config(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.logger is None or self.run_dir is None or not trainer.is_global_zero:
            return
        experiment = self.logger.experiment
        test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        experiment.summary.update(test)
        path = self.run_dir / "test_confusion_matrix.json"
        if path.is_file():
            log_confusion(experiment, json.loads(path.read_text()), "test")


def log_confusion(experiment: Any, confusion: dict, prefix: str) -> None:
    """A counts matrix (rows true, columns predicted) as W&B's confusion-matrix plot and as a table."""
    import wandb

    labels, counts = confusion["labels"], confusion["rows_true_cols_pred"]
    y_true = [i for i, row in enumerate(counts) for j, n in enumerate(row) for _ in range(int(n))]
    preds = [j for row in counts for j, n in enumerate(row) for _ in range(int(n))]
    table = wandb.Table(columns=["true", *labels], data=[[labels[i], *map(int, row)] for i, row in enumerate(counts)])
    experiment.log(
        {
            f"{prefix}/confusion_matrix": wandb.plot.confusion_matrix(y_true=y_true, preds=preds, class_names=labels),
            f"{prefix}/confusion_matrix_counts": table,
        }
    )


def run_identity(trainer: Trainer, pl_module: LightningModule) -> dict[str, str]:
    """Corpus (the data module's file: ``iemocap``, ``meld``, ``cmu_mosi``, ``silver``, ...), stage (the
    CSV logger's name: ``stage1_text`` ... ``stage3``, ``text_pretrain``), seed and protocol of a run."""
    datamodule = trainer.datamodule
    corpus = type(datamodule).__module__.rsplit(".", 1)[-1] if datamodule is not None else "nodata"
    stage = trainer.loggers[0].name if trainer.loggers and trainer.loggers[0].name else type(pl_module).__name__
    protocol = getattr(datamodule, "protocol", None)
    return {
        "corpus": corpus,
        "stage": str(stage),
        "seed": os.environ.get("PL_GLOBAL_SEED", "none"),
        "protocol": protocol if isinstance(protocol, str) else "",
    }


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"init_args": {"lr": 1}}}`` -> ``{"model.init_args.lr": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables whose name says they hold a secret (``*_API_KEY``, tokens, ...)."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 8]


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """Masks values under secret-looking keys and any value containing a secret from the environment."""
    secrets = secret_values()

    def clean(key: str, value: Any) -> Any:
        if SECRET_NAME.search(key.rsplit(".", 1)[-1]) and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, REDACTED)
        elif isinstance(value, list):
            return [clean("", v) for v in value]
        return value

    return {k: clean(k, v) for k, v in config.items()}


def finish_wandb(trainer: Trainer | None, exit_code: int = 0) -> None:
    """Closes this command's W&B run, so the next command in the same process (``meritsl demo``, tests)
    starts its own instead of appending to this one."""
    if trainer is None or not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger._experiment.finish(exit_code=exit_code)
