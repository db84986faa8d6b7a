"""``meritsl export --stage3 CKPT --out BUNDLE_DIR``: a trained chain as one self-contained, verified folder.

The bundle holds the checkpoint and the frozen earlier-stage checkpoints it was trained on, the text encoder
folder and speech-encoder reference, the label set, the runs' resolved configs and test metrics, a model card
and ``bundle.json`` (format version, sha256 of every file). ``--stage2 CKPT`` exports a single-modality
Stage II model alone (e.g. a text-only bundle). ``meritsl analyze --bundle`` reads it.
"""

from __future__ import annotations

import argparse
import sys

from meritsl_lightning.checkpoints import CheckpointMismatch
from meritsl_lightning.inference.bundle import BundleError, export_bundle


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meritsl export", description=__doc__.splitlines()[0].split(": ", 1)[1])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--stage3", metavar="CKPT", help="a Stage III (FusionModule) checkpoint")
    which.add_argument("--stage2", metavar="CKPT", help="a Stage II (ContextModule) checkpoint, exported alone")
    p.add_argument("--out", required=True, help="the bundle folder to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint, argument = (args.stage3, "--stage3") if args.stage3 else (args.stage2, "--stage2")
    try:
        meta = export_bundle(checkpoint, args.out, force=args.force, argument=argument)
    except (BundleError, CheckpointMismatch, FileNotFoundError) as e:
        print(f"meritsl export: error: {e}", file=sys.stderr)
        return 2
    roles = ", ".join(meta["checkpoints"])
    print(f"bundle {args.out}: {meta['top']} ({' + '.join(meta['modalities'])}), {len(meta['files'])} files, checkpoints {roles}")
    return 0
