"""``meritsl reproduce table1|fig4|oof``: the paper's stage-wise table, every available corpus x stage x seed,
through the same ``experiments/`` configs a user runs by hand (``make reproduce-table1``); ``fig4`` adds the
end-to-end variants, ``oof`` the chain on out-of-fold Stage I embeddings (``make reproduce-fig4`` / ``-oof``).

Each run is a ``meritsl fit`` subprocess in its own keyed folder under ``OUT/runs/``; a killed reproduction
started again skips every finished run and redoes only the others. Writes ``OUT/<table>.{md,csv,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from meritsl_lightning.reproduce.spec import EXPERIMENTS, TableSpec
from meritsl_lightning.reproduce.tables import TABLES

DEFAULT_SEEDS = [0, 1, 2, 3, 4]
WANDB_CONFIG = EXPERIMENTS / "logging" / "wandb.yaml"
PAPER_TEXT_ENCODER = "roberta-large"
PAPER_SPEECH_ENCODER = "microsoft/wavlm-base"
WITHOUT_PRETRAINING = "without LLM pre-training"
EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A variable or option that names something unusable: reported in one line, before any training."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meritsl reproduce", description=__doc__.splitlines()[0])
    p.add_argument("table", choices=sorted(TABLES), help="which table")
    p.add_argument("--generated", action="store_true", help="generated IEMOCAP, MELD and CMU-MOSI corpora with the demo's tiny models, on CPU")
    p.add_argument("--seeds", nargs="+", type=int, default=DEFAULT_SEEDS, help="training seeds (default: 0 1 2 3 4)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<table>)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once, each on its own GPU (CUDA_VISIBLE_DEVICES); default 1")
    p.add_argument("--devices", default=None, help="GPU ids for the parallel slots (default: $CUDA_VISIBLE_DEVICES, else 0..N-1)")
    corpora = p.add_argument_group("corpora (a corpus without its folder is skipped and named in the output)")
    corpora.add_argument("--iemocap-root", default=os.environ.get("IEMOCAP_ROOT"), help="IEMOCAP_full_release folder (default: $IEMOCAP_ROOT)")
    corpora.add_argument("--meld-root", default=os.environ.get("MELD_ROOT"), help="MELD.Raw folder (default: $MELD_ROOT)")
    corpora.add_argument("--mosi-root", default=os.environ.get("MOSI_ROOT") or os.environ.get("CMU_MOSI_ROOT"), help="CMU-MOSI folder holding Raw/ (default: $MOSI_ROOT)")
    corpora.add_argument("--corpora", nargs="+", default=None, help="only these corpora (iemocap, meld, cmu_mosi)")
    corpora.add_argument("--stages", nargs="+", default=None, help="only these stages (later stages need their earlier ones)")
    corpora.add_argument("--generated-size", type=int, default=None, help="--generated: corpus size option of the generators (default: theirs)")
    enc = p.add_argument_group("encoders")
    enc.add_argument("--text-encoder", default=os.environ.get("TEXT_ENCODER"), help=f"Stage I text start: the LLM pre-trained checkpoint (default: $TEXT_ENCODER, else {PAPER_TEXT_ENCODER}, '{WITHOUT_PRETRAINING}')")
    enc.add_argument("--speech-encoder", default=os.environ.get("SPEECH_ENCODER"), help=f"Stage I speech encoder: care:<checkpoint> (default: $SPEECH_ENCODER, else {PAPER_SPEECH_ENCODER})")
    pre = p.add_argument_group("pre-training chain (with MSP_PODCAST_ROOT and an LLM: prepare, transcribe, pseudo-label, text and CARE pre-training first)")
    pre.add_argument("--msp-podcast-root", default=os.environ.get("MSP_PODCAST_ROOT"), help="MSP-PODCAST-Publish-1.xx folder (default: $MSP_PODCAST_ROOT)")
    pre.add_argument("--llm-model", default=os.environ.get("LLM_MODEL"), help="pseudo-label model (default: $LLM_MODEL), e.g. gpt-3.5-turbo")
    pre.add_argument("--llm-backend", choices=("openai", "transformers"), default="openai", help="as `meritsl pseudo-label --backend`")
    pre.add_argument("--llm-base-url", default=os.environ.get("LLM_BASE_URL"), help="OpenAI-compatible server URL (default: $LLM_BASE_URL, else $OPENAI_BASE_URL or OpenAI)")
    pre.add_argument("--llm-api-key-env", default="OPENAI_API_KEY", help="name of the environment variable holding the API key (read by pseudo-label only)")
    pre.add_argument("--llm-concurrency", type=int, default=None, help="requests in flight")
    pre.add_argument("--whisper-model", default="large-v3", help="transcription model (faster-whisper name or folder)")
    pre.add_argument("--pretraining", action="store_true", help="--generated: run the chain on a generated MSP-Podcast corpus with tiny Whisper and LLM")
    p.add_argument("--wandb", action="store_true", help="log every run to W&B (adds --config experiments/logging/wandb.yaml after each stage config)")
    p.add_argument("--dry-run", action="store_true", help="print the planned command lines and exit")
    p.epilog = "Extra `meritsl fit` overrides for every table run go after --, e.g. -- --trainer.precision=32-true"
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = build_parser().parse_args(argv[:cut])
    args.overrides = argv[cut + 1 :]
    table = TABLES[args.table]
    out = (args.out or Path("runs") / table.name).resolve()
    try:
        steps, notes = plan(table, args, out)
    except BadInput as e:
        print(f"meritsl reproduce: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in notes:
        print(f"[reproduce] {note}")
    if args.dry_run:
        for step in steps:
            deps = f"  (after {', '.join(sorted(set(step.deps.values())))})" if step.deps else ""
            print(f"{step.id}:{deps}\n  python {' '.join(step.argv)}")
        return 0
    return run(table, steps, out, args, notes)


def plan(table: TableSpec, args: argparse.Namespace, out: Path) -> tuple[list, list[str]]:
    """Check every input (one message naming the variable and path) and build the steps."""
    from meritsl_lightning.reproduce import plan as planning

    if len(set(args.seeds)) != len(args.seeds):
        raise BadInput(f"SEEDS lists a seed twice: {' '.join(map(str, args.seeds))}")
    if args.parallel < 1:
        raise BadInput(f"PARALLEL must be at least 1, not {args.parallel}")
    wanted = args.corpora or [c.name for c in table.corpora]
    unknown = sorted(set(wanted) - {c.name for c in table.corpora})
    if unknown:
        raise BadInput(f"unknown corpus {unknown[0]!r} (this table has {', '.join(c.name for c in table.corpora)})")
    if args.stages:
        bad = sorted(set(args.stages) - {s.name for s in table.stages})
        if bad:
            raise BadInput(f"unknown stage {bad[0]!r} (this table has {', '.join(s.name for s in table.stages)})")
        for stage in args.stages:
            missing = sorted({u.split("[")[0] for u in table.stage(stage).upstream.values()} - set(args.stages))
            if missing:
                raise BadInput(f"stage {stage} needs {', '.join(missing)} of the same seed: add it to --stages")
    notes: list[str] = []
    extra_configs: list[str] = []
    if args.wandb:
        if WANDB_CONFIG.is_file():
            extra_configs.append(str(WANDB_CONFIG))
            notes.append(f"W&B logging on: --config {WANDB_CONFIG} after each stage config")
        else:
            notes.append(f"W&B logging asked for (WANDB=1), but {WANDB_CONFIG} does not exist in this checkout: runs go without W&B")

    pretraining = bool(args.pretraining if args.generated else (args.msp_podcast_root or args.llm_model))
    if pretraining and (args.text_encoder or args.speech_encoder):
        raise BadInput("TEXT_ENCODER/SPEECH_ENCODER given together with the pre-training chain, whose outputs are the encoders: give one or the other")
    steps: list = []
    roots: dict[str, str] = {}
    corpus_deps: dict[str, dict[str, str]] = {}
    corpus_env: dict[str, dict[str, str]] = {}
    if args.generated:
        given = [c.root_variable for c in table.corpora if _root(args, c.name)]
        if given:
            notes.append(f"--generated: {', '.join(given)} ignored (the generated corpora are used)")
        for corpus in wanted:
            size = args.generated_size or table.corpus(corpus).generated_size
            steps.append(planning.generated_step(out, corpus, size, pretraining and corpus == "iemocap"))
            roots[corpus] = "{gen[root]}"
            corpus_deps[corpus] = {"gen": f"generated/{corpus}"}
            corpus_env[corpus] = {"MERITSL_DEMO_DIR": "{gen[dir]}"}
        notes.append(f"generated corpora ({', '.join(wanted)}) with the demo's tiny models, demo configs in {table.generated_configs}, on CPU")
    else:
        for corpus in wanted:
            spec = table.corpus(corpus)
            root = _root(args, corpus)
            if not root:
                notes.append(f"{corpus}: skipped ({spec.root_variable} not set)")
                continue
            check_corpus(corpus, spec.root_variable, root)
            roots[corpus] = str(Path(root).resolve())
        if not roots:
            raise BadInput("no corpus to run: set IEMOCAP_ROOT, MELD_ROOT or MOSI_ROOT (or GENERATED=1)")

    text, speech = encoders(args, pretraining)
    if pretraining:
        steps += planning.pretraining_steps(out, pretraining_inputs(args, out, steps, table))
    inputs = planning.Inputs(
        out=out, seeds=list(args.seeds), roots=roots, text=text, speech=speech, generated=args.generated,
        extra_configs=extra_configs, overrides=list(args.overrides), corpus_deps=corpus_deps, corpus_env=corpus_env,
    )  # fmt: skip
    steps += planning.table_steps(table, inputs, args.stages)
    notes += [f"text encoder: {text.label}", f"speech encoder: {speech.label}", f"seeds: {' '.join(map(str, args.seeds))}"]
    return steps, notes


def _root(args: argparse.Namespace, corpus: str) -> str | None:
    return {"iemocap": args.iemocap_root, "meld": args.meld_root, "cmu_mosi": args.mosi_root}.get(corpus)


def check_corpus(corpus: str, variable: str, root: str) -> None:
    """The folder must parse as the corpus (transcripts and labels; media are checked by the runs)."""
    from data_modules.manifest import CorpusProblem
    from meritsl_lightning.commands.prepare import CORPORA

    path = Path(root)
    if not path.is_dir():
        raise BadInput(f"{variable}={root}: no such folder")
    entry = CORPORA[corpus]
    try:
        result = entry.parse(path, protocol=entry.default_protocol, text_only=True)
    except (CorpusProblem, OSError, ValueError) as e:
        raise BadInput(f"{variable}={root} is not a {corpus} corpus folder: {e}") from None
    if not result.utterances:
        raise BadInput(f"{variable}={root} is not a {corpus} corpus folder: no utterances found")


def encoders(args: argparse.Namespace, pretraining: bool):
    """The Stage I encoder switches and how every row names them."""
    from meritsl_lightning.encoders.provenance import TextEncoderError, text_encoder_kind
    from meritsl_lightning.reproduce.plan import Encoder

    if pretraining:
        text = Encoder("{text_pretrain[checkpoint]}", "LLM pre-trained by this reproduction (OUT/pretrain/text_pretrain)", {"text_pretrain": "pretrain/text"})
        speech = Encoder("care:{care_pretrain[checkpoint]}", "CARE pre-trained by this reproduction (OUT/pretrain/care_pretrain)", {"care_pretrain": "pretrain/care"})
        return text, speech
    if args.text_encoder:
        try:
            kind = text_encoder_kind(args.text_encoder)
        except TextEncoderError as e:
            raise BadInput(f"TEXT_ENCODER={args.text_encoder}: {str(e).split(': ', 1)[-1]}") from None
        value = str(Path(args.text_encoder).resolve()) if kind != "hub" else args.text_encoder
        text = Encoder(value, f"{args.text_encoder} ({'LLM pre-trained' if kind == 'checkpoint' else WITHOUT_PRETRAINING})")
    elif args.generated:
        text = Encoder("{gen[text_encoder]}", f"the generated corpus' tiny RoBERTa ({WITHOUT_PRETRAINING})")
    else:
        text = Encoder(PAPER_TEXT_ENCODER, f"{PAPER_TEXT_ENCODER} ({WITHOUT_PRETRAINING})")
    if args.speech_encoder:
        spec = args.speech_encoder
        if spec.startswith("care:"):
            path = Path(spec.removeprefix("care:"))
            if not path.is_file():
                raise BadInput(f"SPEECH_ENCODER={spec}: no such CARE checkpoint file {path}")
            speech = Encoder(f"care:{path.resolve()}", f"{spec} (CARE)")
        else:
            looks_local = spec.startswith((".", "/", "~")) or Path(spec).exists()
            if looks_local and not Path(spec).expanduser().is_dir():
                raise BadInput(f"SPEECH_ENCODER={spec}: no such model folder (give care:<checkpoint>, a Hugging Face id or folder, or filterbank)")
            speech = Encoder(str(Path(spec).resolve()) if looks_local else spec, f"{spec} (not CARE)")
    elif args.generated:
        speech = Encoder("filterbank", "filterbank statistics (the demo's; not CARE)")
    else:
        speech = Encoder(PAPER_SPEECH_ENCODER, f"{PAPER_SPEECH_ENCODER} (WavLM-base stand-in; not CARE)")
    return text, speech


def pretraining_inputs(args: argparse.Namespace, out: Path, steps: list, table: TableSpec):
    """The pre-training chain's inputs: the user's MSP-Podcast and LLM, or (generated) tiny stand-ins."""
    from meritsl_lightning.reproduce.plan import Pretraining, generated_step

    if args.generated:
        if not any(s.id == "generated/iemocap" for s in steps):
            steps.append(generated_step(out, "iemocap", args.generated_size or table.corpus("iemocap").generated_size, pretraining=True))
        small_fit = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32-true", "--trainer.max_epochs=2",
                     "--trainer.val_check_interval=1.0", "--data.init_args.num_workers=0"]  # fmt: skip
        return Pretraining(
            msp_root="{gen[msp_podcast_root]}",
            whisper="{gen[whisper]}",
            llm=["--backend", "transformers", "--model", "{gen[llm]}", "--method", "logprob", "--device", "cpu", "--batch-size", "16"],
            transcribe_options=["--device", "cpu", "--beam-size", "1"],
            text_overrides=[*small_fit, "--data.init_args.batch_size=16", "--model.init_args.lr=1e-3", "--model.init_args.model_name_or_path={gen[text_encoder]}"],
            care_overrides=["--trainer.max_epochs=2"],
            care_config=EXPERIMENTS / "demo" / "care_pretrain.yaml",
            care_data="manifest",  # a random tiny Whisper writes no usable transcripts; the release transcripts stand in
            deps={"gen": "generated/iemocap"},
            env={"MERITSL_DEMO_DIR": "{gen[dir]}"},  # the demo CARE config finds the tiny models there
        )
    if not args.msp_podcast_root:
        raise BadInput("an LLM is given (LLM_MODEL) but no MSP_PODCAST_ROOT: the pre-training chain needs both")
    if not args.llm_model:
        raise BadInput(f"MSP_PODCAST_ROOT={args.msp_podcast_root} is given but no LLM (LLM_MODEL): the pre-training chain needs both")
    check_corpus("msp_podcast", "MSP_PODCAST_ROOT", args.msp_podcast_root)
    llm = ["--backend", args.llm_backend, "--model", args.llm_model]
    if args.llm_backend == "openai":
        if args.llm_base_url:
            llm += ["--base-url", args.llm_base_url]
        llm += ["--api-key-env", args.llm_api_key_env]  # the name only; pseudo-label reads the key itself
        if args.llm_concurrency:
            llm += ["--concurrency", str(args.llm_concurrency)]
    return Pretraining(msp_root=str(Path(args.msp_podcast_root).resolve()), whisper=args.whisper_model, llm=llm)


def run(table: TableSpec, steps: list, out: Path, args: argparse.Namespace, notes: list[str]) -> int:
    """Run the steps (skipping finished ones), then aggregate the run folders into the four files."""
    from meritsl_lightning.reproduce.aggregate import RunRecord, build_table, load_runs, select, write_plan
    from meritsl_lightning.reproduce.engine import Engine
    from meritsl_lightning.reproduce.report import write_all

    out.mkdir(parents=True, exist_ok=True)
    devices = args.devices.split(",") if args.devices else None
    engine = Engine(parallel=args.parallel, devices=devices, log_dir=out / "logs")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        outcomes = engine.run(steps)
    except KeyboardInterrupt:
        print(f"[reproduce] interrupted; the same command resumes (finished runs in {out / 'runs'} are kept)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    table_outcomes = [o for o in outcomes.values() if "table" in o.step.meta]
    blocked = [{**o.step.meta, "status": "blocked", "message": o.message} for o in table_outcomes if o.status == "blocked"]
    write_plan(out, table.name, [o.run_dir for o in table_outcomes if o.run_dir is not None], blocked)
    records = select(load_runs(out, table.metric), [str(o.run_dir) for o in table_outcomes if o.run_dir is not None])
    records += [RunRecord(None, b, None) for b in blocked]
    for o in outcomes.values():
        if "table" not in o.step.meta and o.status in ("failed", "blocked"):
            notes.append(f"{o.step.id} failed: {o.message} (log: {o.log})")
    result = build_table(records, table)
    paths = write_all(out, table, result, notes)
    for r in result["rows"]:
        spread = "" if r["std"] is None else f" ± {r['std']:.4f}"
        mean = "—" if r["mean"] is None else f"{r['mean']:.4f}"
        print(f"[reproduce] {r['corpus']:<9} {r['stage']:<13} {mean}{spread} (n={r['n']})")
    print(f"[reproduce] {len(result['failed'])} failed run(s); wrote {', '.join(str(p) for p in paths)}")
    other_failures = [o for o in outcomes.values() if o.status in ("failed", "blocked")]
    return 1 if result["failed"] or other_failures else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
