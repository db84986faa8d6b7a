"""A reproduction step in ``--generated`` mode: a generated corpus and the demo's tiny models (the demo's
``prepare_inputs``), run as its own process so the reproduction itself never imports torch.

``python -m meritsl_lightning.reproduce.generated CORPUS --out DIR [--seed N] [--size N] [--pretraining]``
writes ``DIR/generated.json``: the corpus folder and the tiny models (with ``--pretraining`` also the generated
MSP-Podcast corpus, a tiny Whisper, a tiny causal LM for pseudo-labels and the tiny CARE WavLM).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meritsl_lightning.reproduce.generated", description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--pretraining", action="store_true", help="also the inputs of the pre-training chain")
    args = p.parse_args(argv)

    from meritsl_lightning.commands.demo import prepare_inputs

    out = args.out.resolve()
    root = prepare_inputs(args.corpus, out, args.seed, args.size, care=args.pretraining)
    record = {"corpus": args.corpus, "root": str(root), "text_encoder": str(out / "models" / "roberta"), "dir": str(out)}
    if args.pretraining:
        from meritsl_lightning.tiny_models import build_tiny_causal_lm
        from meritsl_lightning.tiny_whisper import build_tiny_whisper_ct2

        msp = next((out / "data").glob("MSP-PODCAST-Publish-*"))
        texts = [json.loads(line).get("text") or "" for line in (out / "data" / "msp_podcast_manifest.jsonl").read_text().splitlines()]
        record.update(
            msp_podcast_root=str(msp),
            whisper=str(build_tiny_whisper_ct2(out / "models" / "whisper")),
            llm=str(build_tiny_causal_lm(out / "models" / "llm", [t for t in texts if t] or ["positive negative neutral"])),
            care_wavlm=str(out / "models" / "care-wavlm"),
        )
    tmp = out / ".generated.json.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / "generated.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
