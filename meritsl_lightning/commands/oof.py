"""``meritsl oof``: K Stage I models on K-1 folds of the training conversations -> ``oof.json`` for Stage II.

    meritsl oof --config experiments/iemocap_stage1_text.yaml --folds 5 --out runs/iemocap/stage1_text_oof/oof.json \\
        --full runs/iemocap/stage1_text/best.ckpt [--seed 0] [fit overrides, e.g. --seed_everything=1]

Each fold model is the config's Stage I, trained (and selected on validation) like the full one but with one
fold of the training conversations left out of its batches; it logs to ``<save_dir>/<name>_oof/fold<i>of<K>``.
Without ``--full`` the full-data model is trained first (``<name>_oof/full``). A rerun skips the folds whose
checkpoints are already recorded in ``<out>.progress.json``. Then give Stage II
``--model.init_args.stage1_oof=<out>`` with the same ``stage1_checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meritsl oof", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    p.add_argument("--config", action="append", default=[], help="the Stage I config (repeat for overlays)")
    p.add_argument("--folds", type=int, default=5, help="K, the number of folds of the training conversations (>= 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the conversation-to-fold assignment")
    p.add_argument("--out", required=True, help="where to write oof.json")
    p.add_argument("--full", default=None, help="the Stage I checkpoint trained on all the training data (else trained here)")
    p.add_argument("--name", default=None, help="logger name prefix of the fold runs (default: the config's, + '_oof')")
    return p


def main(argv: list[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    if args.folds < 2:
        print(f"meritsl oof: --folds must be at least 2 (K Stage I models, each trained on K-1 folds), got {args.folds}", file=sys.stderr)
        return 2
    from meritsl_lightning.models.oof import write_oof_manifest

    out = Path(args.out)
    progress_path = out.with_name(out.name + ".progress.json")
    progress: dict[str, Any] = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    if progress and (progress.get("folds") != args.folds or progress.get("seed") != args.seed):
        print(f"meritsl oof: {progress_path} records K={progress.get('folds')}, seed={progress.get('seed')}; "
              f"this run asks K={args.folds}, seed={args.seed} (use another --out)", file=sys.stderr)  # fmt: skip
        return 2
    progress.update(folds=args.folds, seed=args.seed)
    progress.setdefault("done", {})
    configs = [a for c in args.config for a in ("--config", c)]

    def save() -> None:
        progress_path.parent.mkdir(parents=True, exist_ok=True)
        progress_path.write_text(json.dumps(progress, indent=1))

    full = args.full or progress.get("full")
    if full is None:
        cli = _fit(configs, overrides, args.name, "full", None)
        full = progress["full"] = cli.trainer.checkpoint_callback.best_model_path
        save()
    for fold in range(args.folds):
        entry = progress["done"].get(str(fold))
        if entry and Path(entry["checkpoint"]).is_file():
            print(f"[oof] fold {fold}/{args.folds}: done ({entry['checkpoint']})", flush=True)
            continue
        cli = _fit(configs, overrides, args.name, f"fold{fold}of{args.folds}", (fold, args.folds, args.seed))
        progress["done"][str(fold)] = {
            "checkpoint": cli.trainer.checkpoint_callback.best_model_path,
            "held_out": cli.datamodule.held_out_dialogues(),
        }
        save()
    folds = [(progress["done"][str(i)]["checkpoint"], progress["done"][str(i)]["held_out"]) for i in range(args.folds)]
    write_oof_manifest(out, full_checkpoint=full, folds=folds, num_folds=args.folds, seed=args.seed)
    print(f"[oof] {args.folds} fold models; wrote {out} (give Stage II --model.init_args.stage1_oof={out})", flush=True)
    return 0


def _fit(configs: list[str], overrides: list[str], name: str | None, run: str, fold: tuple[int, int, int] | None) -> Any:
    """Fit one Stage I model from the config (no test: the fold models are only read for their embeddings)."""
    from meritsl_lightning.trainer_cli import MeritslCLI

    argv, sys.argv = sys.argv, sys.argv[:1]  # the CLI parses `args`, not this command's own argv
    try:
        prefix = name or f"{_config_logger_name(configs) or 'stage1'}_oof"
        cli = MeritslCLI(args=[*configs, *overrides, f"--trainer.logger.init_args.name={prefix}/{run}"], run=False)
    finally:
        sys.argv = argv
    if getattr(cli.model, "stage", None) != "stage1":
        raise SystemExit(f"meritsl oof: the config trains {type(cli.model).__name__}, not a Stage I model")
    logger = cli.trainer.logger
    if fold is not None:
        cli.datamodule.set_training_folds(*fold)
    print(f"[oof] training {run} -> {logger.log_dir if logger is not None else '?'}", flush=True)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def _config_logger_name(configs: list[str]) -> str | None:
    """The logger name the (last) config gives, read without instantiating anything."""
    import yaml

    name = None
    for path in configs[1::2]:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
        logger = (cfg.get("trainer") or {}).get("logger")
        if isinstance(logger, dict):
            name = (logger.get("init_args") or {}).get("name", name)
    return name
