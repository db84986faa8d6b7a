"""``meritsl generate CORPUS --out DIR``: a generated corpus in a real corpus layout (tests, demos, debugging)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

# corpus -> "module:function(out_dir, seed=..., **size) -> Path" and its help line; imported on use
GENERATORS: dict[str, tuple[str, str]] = {
    "iemocap": ("data_modules.generated.iemocap:generate_iemocap", "IEMOCAP_full_release layout"),
    "meld": ("data_modules.generated.meld:generate_meld", "MELD.Raw layout (CSVs + mp4 clips)"),
    "cmu_mosi": ("data_modules.generated.cmu_mosi:generate_cmu_mosi", "CMU-MOSI Raw/ layout"),
    "msp_podcast": ("data_modules.generated.msp_podcast:generate_msp_podcast", "MSP-PODCAST-Publish-1.xx layout (pre-training)"),
}
# corpus -> the size option the generator takes (``--size`` maps onto it)
SIZE_OPTIONS: dict[str, str] = {"iemocap": "dialogues_per_session", "meld": "dialogues_per_split", "cmu_mosi": "videos", "msp_podcast": "podcasts"}


def generator(corpus: str) -> Any:
    target, _ = GENERATORS[corpus]
    module_name, _, func = target.partition(":")
    return getattr(importlib.import_module(module_name), func)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meritsl generate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="corpus", required=True)
    for corpus, (_, help_) in GENERATORS.items():
        one = sub.add_parser(corpus, help=f"{help_} with espeak-ng speech")
        one.add_argument("--out", required=True, help="folder to write the corpus into")
        one.add_argument("--seed", type=int, default=0)
        one.add_argument("--size", type=int, default=None, help=f"corpus size ({SIZE_OPTIONS[corpus]}; default: the generator's)")
    args = p.parse_args(argv)
    options: dict[str, Any] = {"seed": args.seed}
    if args.size is not None:
        options[SIZE_OPTIONS[args.corpus]] = args.size
    print(generator(args.corpus)(args.out, **options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
