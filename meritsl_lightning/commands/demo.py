"""``meritsl demo``: the whole MERITS-L hierarchy on a generated IEMOCAP-layout corpus, offline, on CPU.

Generates the corpus, builds a tiny RoBERTa whose tokenizer is trained on the training transcripts, trains
and tests the five stage models in order (each stage frozen for the next), then pre-trains a tiny CARE on a
generated MSP-Podcast corpus and runs the speech stages and the fusion again on its features
(``stage1_audio_care``, ``stage2_audio_care``, ``stage3_care``). Prints the test table and writes
``<out>/summary.json``; then exports the summary's Stage III bundle (``<out>/bundle``) and runs
``meritsl analyze`` on one generated test conversation's audio (``<out>/analyze/output``: the per-turn table
and timeline.png; ``--no-analyze`` skips this).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import string
import sys
import time
from pathlib import Path

from meritsl_lightning.commands.generate import GENERATORS
from meritsl_lightning.errors import InvalidInput

STAGES = (
    "stage1_text", "stage1_audio", "stage2_text", "stage2_audio", "stage3",
    "care_pretrain", "stage1_audio_care", "stage2_audio_care", "stage3_care",
)  # fmt: skip
# stage -> its config <corpus>_<name>.yaml (the stage's own name unless listed)
CONFIGS = {"stage1_audio_care": "stage1_audio", "stage2_audio_care": "stage2_audio", "stage3_care": "stage3"}
# corpus-independent pre-training: config <stage>.yaml, no test split (recorded with the best validation loss)
PRETRAINING = ("care_pretrain",)
# init argument -> value pattern over earlier stages' checkpoints
UPSTREAM_ARGS = {
    "stage2_text": {"stage1_checkpoint": "{stage1_text}"},
    "stage2_audio": {"stage1_checkpoint": "{stage1_audio}"},
    "stage3": {"stage2_text_checkpoint": "{stage2_text}", "stage2_audio_checkpoint": "{stage2_audio}"},
    "stage1_audio_care": {"speech_encoder": "care:{care_pretrain}"},
    "stage2_audio_care": {"stage1_checkpoint": "{stage1_audio_care}"},
    "stage3_care": {"stage2_text_checkpoint": "{stage2_text}", "stage2_audio_checkpoint": "{stage2_audio_care}"},
}
# the claims the demo corpus is built to show: context helps each modality, fusion helps both
MARGIN = 0.03
CLAIMS = (
    ("stage2_text", "stage1_text"),
    ("stage2_audio", "stage1_audio"),
    ("stage3", "stage2_text"),
    ("stage3", "stage2_audio"),
)
TINY_WIDTH = 64  # the tiny RoBERTa and the tiny CARE WavLM share it (CARE needs one width)
CARE_STAGES = ("care_pretrain", "stage1_audio_care", "stage2_audio_care", "stage3_care")
CARE_COMPARISONS = (("stage1_audio_care", "stage1_audio"), ("stage3_care", "stage3"))
DEFAULT_CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meritsl demo", description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--corpus", default="iemocap", choices=sorted(GENERATORS), help="which generated corpus layout")
    p.add_argument("--out", default=None, help="folder for the corpus, models, logs and summary.json (default runs/demo, or runs/demo-<corpus>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated corpus")
    p.add_argument("--size", type=int, default=None, help="corpus size (default: the generator's)")
    p.add_argument("--configs", default=str(DEFAULT_CONFIGS), help="folder with the <corpus>_<stage>.yaml demo configs")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES, help="stages to run (in order)")
    p.add_argument("--strict", action="store_true", help=f"exit 1 unless every claim holds by >= {MARGIN}")
    p.add_argument("--no-analyze", action="store_true", help="skip the closing export + `meritsl analyze` of one test conversation")
    p.add_argument("overrides", nargs="*", help="extra CLI overrides for every stage, e.g. --trainer.accelerator=cuda")
    return p


def check_overrides(overrides: list[str]) -> None:
    """Refuse a mistyped option before minutes of work: stage overrides are LightningCLI keys with a dot."""
    for arg in overrides:
        if arg.startswith("-") and "." not in arg.split("=", 1)[0]:
            raise InvalidInput(
                f"unrecognized argument {arg!r} (options are listed by --help; stage overrides look like "
                "--trainer.accelerator=cuda)"
            )


def check_stage_order(stages: list[str], recorded: set[str]) -> None:
    """Every stage's upstream checkpoints come from an earlier stage of this run or a recorded earlier run."""
    available = set(recorded)
    for stage in stages:
        needed = {name for v in UPSTREAM_ARGS.get(stage, {}).values() for _, name, _, _ in string.Formatter().parse(v) if name}
        missing = sorted(needed - available)
        if missing:
            raise InvalidInput(
                f"--stages: {stage} needs {', '.join(missing)}, which neither runs before it nor is recorded in an "
                "earlier run's summary.json in --out"
            )
        available.add(stage)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [*args.overrides, *extra]
    check_overrides(overrides)
    out = Path(args.out or ("runs/demo" if args.corpus == "iemocap" else f"runs/demo-{args.corpus}")).resolve()
    recorded = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    check_stage_order(args.stages, {stage for stage, entry in recorded.items() if entry.get("checkpoint")})
    os.environ["MERITSL_DEMO_DIR"] = str(out)  # the demo configs interpolate it
    started = time.perf_counter()

    corpus = prepare_inputs(args.corpus, out, args.seed, args.size, care=any(s in CARE_STAGES for s in args.stages))
    print(f"[demo] corpus {corpus} ready ({time.perf_counter() - started:.0f} s)", flush=True)

    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    checkpoints = {stage: entry.get("checkpoint") for stage, entry in summary.items()}
    for stage in args.stages:
        t0 = time.perf_counter()
        stage_args = [f"--model.init_args.{k}={v.format(**checkpoints)}" for k, v in UPSTREAM_ARGS.get(stage, {}).items()]
        stage_args.append(f"--trainer.logger.init_args.name={stage}")
        config = Path(args.configs) / (f"{stage}.yaml" if stage in PRETRAINING else f"{args.corpus}_{CONFIGS.get(stage, stage)}.yaml")
        if stage in PRETRAINING:
            score, best = fit_only(config, [*stage_args, *overrides])
            summary[stage] = {"validation": {"loss": score}}
        else:
            test, best = fit_and_test(config, [*stage_args, *overrides])
            summary[stage] = {"test": {"weighted_f1": test["test/weighted_f1"], "accuracy": test["test/accuracy"]}}
        checkpoints[stage] = best
        summary[stage].update(checkpoint=best, seconds=round(time.perf_counter() - t0, 1))
        summary_path.write_text(json.dumps(summary, indent=1))
    print(format_table(summary))
    print(f"[demo] total {time.perf_counter() - started:.0f} s; summary written to {summary_path}")
    failed = [c for c in check_claims(summary) if not c[2]]
    for better, worse, ok, margin in check_claims(summary):
        print(f"[demo] {better} - {worse} = {margin:+.3f} ({'ok' if ok else f'below the {MARGIN} target'})")
    for care, plain in CARE_COMPARISONS:
        if care in summary and plain in summary and "test" in summary[care] and "test" in summary[plain]:
            diff = summary[care]["test"]["weighted_f1"] - summary[plain]["test"]["weighted_f1"]
            print(f"[demo] {care} - {plain} = {diff:+.3f} (information: tiny CARE vs the filterbank encoder)")
    if checkpoints.get("stage3") and not args.no_analyze:
        analyze_one_conversation(args.corpus, corpus, out, checkpoints["stage3"])
    return 1 if args.strict and failed else 0


def analyze_one_conversation(corpus: str, root: Path, out: Path, stage3: str) -> None:
    """Export the Stage III bundle and run ``meritsl analyze`` on the audio of the first test conversation
    (its turn files linked in conversation order, with the corpus transcripts), as a user would."""
    from meritsl_lightning.commands import analyze, export
    from meritsl_lightning.commands.prepare import CORPORA

    bundle = out / "bundle"
    if export.main(["--stage3", stage3, "--out", str(bundle), "--force"]) != 0:
        raise RuntimeError(f"[demo] exporting {stage3} failed")
    rows = [u for u in CORPORA[corpus].parse(root, protocol=CORPORA[corpus].default_protocol).utterances if u.split == "test"]
    dialogue = min(u.dialogue_id for u in rows)
    turns = sorted((u for u in rows if u.dialogue_id == dialogue), key=lambda u: u.utt_index)
    folder = out / "analyze" / "input" / dialogue.replace("/", "_")  # MELD ids carry their split: "test/dia0"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    lines = []
    for k, u in enumerate(turns):
        name = f"{k:03d}_{u.utt_id.replace('/', '_')}{Path(u.audio_path).suffix}"
        (folder / name).symlink_to(Path(u.audio_path).resolve())
        lines.append(json.dumps({"file": name, "text": u.text}))
    (folder / "transcripts.jsonl").write_text("\n".join(lines) + "\n")
    result = out / "analyze" / "output"
    print(f"\n[demo] meritsl analyze {folder} --bundle {bundle} --out {result}", flush=True)
    if analyze.main([str(folder), "--bundle", str(bundle), "--out", str(result), "--device", "cpu"]) != 0:
        raise RuntimeError(f"[demo] analysing {folder} failed")
    predicted = [json.loads(line)["label"] for line in (result / "turns.jsonl").read_text().splitlines()]
    agree = sum(p == u.label for p, u in zip(predicted, turns, strict=True))
    print(f"[demo] {agree} of {len(turns)} turns agree with the corpus labels; timeline: {result / 'timeline.png'}")


def prepare_inputs(corpus: str, out: Path, seed: int, size: int | None, care: bool = True) -> Path:
    """Generate the corpus and the tiny RoBERTa (idempotent); with ``care``, also the generated MSP-Podcast
    corpus (manifest ``data/msp_podcast_manifest.jsonl``) and a tiny post-layer-norm WavLM for CARE.
    Returns the corpus folder."""
    from data_modules.manifest import write_manifest
    from meritsl_lightning.commands.generate import SIZE_OPTIONS, generator
    from meritsl_lightning.commands.prepare import CORPORA
    from meritsl_lightning.tiny_models import build_tiny_roberta, build_tiny_wavlm

    options: dict = {"seed": seed}
    if size is not None:
        options[SIZE_OPTIONS[corpus]] = size
    root = Path(generator(corpus)(out / "data", **options))
    rows = CORPORA[corpus].parse(root, protocol=CORPORA[corpus].default_protocol, text_only=True).utterances
    build_tiny_roberta(out / "models" / "roberta", [u.text for u in rows if u.split == "train"], hidden_size=TINY_WIDTH)
    if care:
        msp = Path(generator("msp_podcast")(out / "data", seed=seed))
        entry = CORPORA["msp_podcast"]
        write_manifest(entry.parse(msp, protocol=entry.default_protocol).utterances, out / "data" / "msp_podcast_manifest.jsonl")
        build_tiny_wavlm(out / "models" / "care-wavlm", hidden_size=TINY_WIDTH, num_layers=4, stable_layer_norm=False)
    return root


def fit_only(config: Path, overrides: list[str]) -> tuple[float, str]:
    """``meritsl fit --config config`` for a pre-training module: (best monitored score, best checkpoint)."""
    from meritsl_lightning.trainer_cli import MeritslCLI

    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = MeritslCLI(args=["fit", "--config", str(config), *overrides])
    finally:
        sys.argv = argv
    callback = cli.trainer.checkpoint_callback
    return float(callback.best_model_score), callback.best_model_path


def fit_and_test(config: Path, overrides: list[str]) -> tuple[dict[str, float], str]:
    """``meritsl fit --config config`` (which tests the best-validation checkpoint); its test metrics."""
    from meritsl_lightning.trainer_cli import MeritslCLI

    argv, sys.argv = sys.argv, sys.argv[:1]  # the CLI parses `args`, not this command's own argv
    try:
        cli = MeritslCLI(args=["fit", "--config", str(config), *overrides])
    finally:
        sys.argv = argv
    if not cli.test_results:
        raise RuntimeError(f"{config}: the fit produced no test metrics")
    return cli.test_results[0], cli.trainer.checkpoint_callback.best_model_path


def check_claims(summary: dict) -> list[tuple[str, str, bool, float]]:
    rows = []
    for better, worse in CLAIMS:
        if better in summary and worse in summary:
            margin = summary[better]["test"]["weighted_f1"] - summary[worse]["test"]["weighted_f1"]
            rows.append((better, worse, margin >= MARGIN, margin))
    return rows


def format_table(summary: dict) -> str:
    lines = ["", f"{'stage':<18} {'test weighted F1':>17} {'test accuracy':>14} {'seconds':>8}"]
    for stage in STAGES:
        if stage in summary and stage in PRETRAINING:
            loss = summary[stage]["validation"]["loss"]
            lines.append(f"{stage:<18} {'(val loss ' + format(loss, '.4f') + ')':>32} {summary[stage].get('seconds', 0):>8.0f}")
        elif stage in summary:
            t = summary[stage]["test"]
            lines.append(f"{stage:<18} {t['weighted_f1']:>17.4f} {t['accuracy']:>14.4f} {summary[stage].get('seconds', 0):>8.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
