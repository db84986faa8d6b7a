"""The one command line: LightningCLI (fit/validate/test/predict) plus the pipeline subcommands.

``meritsl``, ``lightning`` and ``python -m meritsl_lightning`` are the same program.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from meritsl_lightning.callbacks import JsonlPredictionWriter
from meritsl_lightning.encoders.provenance import run_record

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
# name -> (module:function taking argv and returning an exit status, one-line help); imported on use
PIPELINE_COMMANDS = {
    "prepare": ("meritsl_lightning.commands.prepare:main", "validate a corpus folder; write manifest.jsonl and report.json"),
    "generate": ("meritsl_lightning.commands.generate:main", "write a generated corpus in a real corpus layout"),
    "demo": ("meritsl_lightning.commands.demo:main", "generate a corpus, train and test all five stage models, print the table"),
    "tabulate": ("meritsl_lightning.commands.tabulate:main", "test metrics of runs as a table (mean, std, best over versions)"),
    "demo-pretrain": ("meritsl_lightning.commands.demo_pretrain:main", "the pre-training chain: transcribe, pseudo-label, pre-train, Stage I text"),
    "transcribe": ("meritsl_lightning.pseudo_labels.transcribe:main", "speech (manifest or audio folder) -> transcripts.jsonl with faster-whisper; resumable, shardable"),
    "pseudo-label": ("meritsl_lightning.pseudo_labels.pseudo_label:main", "label transcripts positive/negative/neutral with an LLM -> silver.jsonl + report"),
}


class MeritslCLI(LightningCLI):
    """LightningCLI over the stage modules and corpus data modules, picked by ``class_path``.

    Any LightningModule / LightningDataModule is accepted, so that the pre-training modules (text, CARE) run
    from the same command; the label and task links apply only to models that take them.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        parser_kwargs = {"parser_mode": "omegaconf", **{c: {"parser_mode": "omegaconf"} for c in TRAINER_COMMANDS}}
        self.test_results: list[dict[str, float]] | None = None
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
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/weighted_f1",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(JsonlPredictionWriter, "predictions")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="fit only: test the best-validation checkpoint once training ends",
        )

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


def link_latest_best(best: Path, link: Path) -> None:
    """Point ``<logger dir>/best.ckpt`` at this run's best checkpoint, so the next stage's config finds it.

    Earlier runs keep their own versioned folders; only this pointer moves.
    """
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(best.resolve(), link.parent.resolve()))
    os.replace(tmp, link)


def _run_pipeline(name: str, argv: list[str]) -> int:
    target, _ = PIPELINE_COMMANDS[name]
    module_name, _, func = target.partition(":")
    return int(getattr(importlib.import_module(module_name), func)(argv) or 0)


def _pipeline_help() -> str:
    lines = ["meritsl pipeline commands (each has --help):"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in PIPELINE_COMMANDS.items()]
    lines.append("training commands (LightningCLI): fit, validate, test, predict --config CONFIG.yaml")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``meritsl`` and ``python -m meritsl_lightning``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in PIPELINE_COMMANDS:
        sys.exit(_run_pipeline(args[0], args[1:]))
    if not args or args[0] in ("-h", "--help"):
        print(_pipeline_help() + "\n")
    MeritslCLI(args=None if argv is None else args)


def lightning_main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning`` script: the same program, with a pointer for Lightning's own tools."""
    args = sys.argv[1:] if argv is None else list(argv)
    known = (*TRAINER_COMMANDS, *PIPELINE_COMMANDS)
    if args and not args[0].startswith("-") and args[0] not in known:
        print(
            f"lightning: {args[0]!r} is not a command of this `lightning` script, which meritsl-lightning installs "
            f"(the same program as `meritsl`: {', '.join(known)}). For Lightning's own tools use `fabric` "
            "or the lightning-sdk package.",
            file=sys.stderr,
        )
        sys.exit(2)
    main(argv)
