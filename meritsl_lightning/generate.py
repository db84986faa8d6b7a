"""``meritsl generate``: write a generated corpus in a real corpus layout (for tests, demos and debugging)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    from meritsl_lightning.data_modules.generated import generate_iemocap

    p = argparse.ArgumentParser(prog="meritsl generate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="corpus", required=True)
    iemocap = sub.add_parser("iemocap", help="IEMOCAP_full_release layout with espeak-ng speech")
    iemocap.add_argument("--out", required=True, help="folder to write IEMOCAP_full_release into")
    iemocap.add_argument("--seed", type=int, default=0)
    iemocap.add_argument("--dialogues-per-session", type=int, default=None)
    args = p.parse_args(argv)
    options = {"seed": args.seed}
    if args.dialogues_per_session is not None:
        options["dialogues_per_session"] = args.dialogues_per_session
    print(generate_iemocap(args.out, **options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
