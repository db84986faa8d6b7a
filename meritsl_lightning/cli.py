"""The one command line: LightningCLI (fit/validate/test/predict) plus the pipeline subcommands.

``meritsl``, ``lightning`` and ``python -m meritsl_lightning`` are the same program.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from meritsl_lightning.errors import DEBUG_ENV, debug_enabled, user_error_message

# Nothing heavy at module level: the pipeline commands and --help must start without torch or Lightning
# (tests/test_startup.py). The training commands import meritsl_lightning.trainer_cli when they run.
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
EXIT_USER_ERROR = 2
# name -> (module:function taking argv and returning an exit status, one-line help); imported on use
PIPELINE_COMMANDS = {
    "prepare": ("meritsl_lightning.commands.prepare:main", "validate a corpus folder; write manifest.jsonl and report.json"),
    "generate": ("meritsl_lightning.commands.generate:main", "write a generated corpus in a real corpus layout"),
    "demo": ("meritsl_lightning.commands.demo:main", "generate a corpus, train and test all five stage models, print the table"),
    "tabulate": ("meritsl_lightning.commands.tabulate:main", "test metrics of runs as a table (mean, std, best over versions)"),
    "demo-pretrain": ("meritsl_lightning.commands.demo_pretrain:main", "the pre-training chain: transcribe, pseudo-label, pre-train, Stage I text"),
    "transcribe": ("meritsl_lightning.pseudo_labels.transcribe:main", "speech (manifest or audio folder) -> transcripts.jsonl with faster-whisper; resumable, shardable"),
    "oof": ("meritsl_lightning.commands.oof:main", "K Stage I models on K-1 folds of the training conversations -> oof.json (out-of-fold Stage II inputs)"),
    "sweep": ("meritsl_lightning.commands.sweep:main", "run a W&B sweep file here, without the W&B service: propose runs, run `meritsl fit`, rank them"),
    "pseudo-label": ("meritsl_lightning.pseudo_labels.pseudo_label:main", "label transcripts positive/negative/neutral with an LLM -> silver.jsonl + report"),
    "export": ("meritsl_lightning.commands.export:main", "a trained Stage III (or Stage II) chain as one verified bundle folder"),
    "analyze": ("meritsl_lightning.commands.analyze:main", "per-turn emotions of new conversations (turn files, a long recording, a manifest; --stream)"),
    "reproduce": ("meritsl_lightning.commands.reproduce:main", "reproduce a paper table over corpora x stages x seeds (make reproduce-table1)"),
}


def _run_pipeline(name: str, argv: list[str]) -> int:
    target, _ = PIPELINE_COMMANDS[name]
    module_name, _, func = target.partition(":")
    return int(getattr(importlib.import_module(module_name), func)(argv) or 0)


def _pipeline_help() -> str:
    lines = ["meritsl pipeline commands (each has --help):"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in PIPELINE_COMMANDS.items()]
    lines.append(f"training commands (LightningCLI): {', '.join(TRAINER_COMMANDS)} --config CONFIG.yaml")
    lines.append("  (`meritsl fit --help` lists a training command's options)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``meritsl`` and ``python -m meritsl_lightning``.

    A user error (see ``meritsl_lightning.errors``) ends with one line on stderr and exit status 2;
    ``--debug`` or ``MERITSL_DEBUG=1`` shows its traceback instead. Programming errors keep theirs.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # inherited by DDP workers, which re-run sys.argv
        if argv is None:
            sys.argv[1:] = args
    command = args[0] if args and not args[0].startswith("-") else ""
    if not args or args[0] in ("-h", "--help"):
        print(_pipeline_help())
        sys.exit(0 if args else 2)
    try:
        if command in PIPELINE_COMMANDS:
            status = _run_pipeline(command, args[1:])
        else:
            _one_line_errors_cli()(args=None if argv is None else args)
            status = 0
    except Exception as e:
        message = None if debug_enabled() else user_error_message(e)
        if message is None:
            raise
        print(f"meritsl{' ' + command if command else ''}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(status)


def _one_line_errors_cli() -> type:
    """MeritslCLI as ``main`` runs it: argument errors raise (``main`` prints them as one line) instead of
    jsonargparse printing the whole usage before them."""
    from meritsl_lightning.trainer_cli import MeritslCLI

    class OneLineErrorsCLI(MeritslCLI):
        def init_parser(self, **kwargs: Any) -> Any:
            return super().init_parser(**{"exit_on_error": debug_enabled(), **kwargs})

    return OneLineErrorsCLI


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

