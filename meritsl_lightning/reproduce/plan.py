"""From a table spec and the user's inputs to the steps the engine runs.

Table runs are ``meritsl fit --config <the stage's config> --seed_everything=S``, with the corpus folder, the
Stage I encoders and each seed's own earlier checkpoints given as overrides, and the run folder set through
the config's CSV logger (``<out>/runs/<corpus>/<stage>/seed<S>/run-<key>``). In generated mode, one step per
corpus first writes the generated corpus and the demo's tiny models. The pre-training chain (prepare ->
transcribe -> pseudo-label -> text pre-training -> CARE pre-training) is a list of steps too, whose
checkpoints the Stage I runs then start from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meritsl_lightning.reproduce.engine import Step
from meritsl_lightning.reproduce.spec import EXPERIMENTS, TableSpec

MERITSL = ["-m", "meritsl_lightning"]
QUIET = "--trainer.enable_progress_bar=false"


@dataclass
class Encoder:
    """An encoder switch: the value passed to Stage I (may name a step's product) and how rows describe it."""

    value: str | None  # None: the config's own value
    label: str
    deps: dict[str, str] = field(default_factory=dict)


@dataclass
class Inputs:
    """Everything a table reproduction depends on besides the spec."""

    out: Path
    seeds: list[int]
    roots: dict[str, str]  # corpus -> folder, or a ``{name[field]}`` template naming a generated step's product
    text: Encoder
    speech: Encoder
    generated: bool = False
    extra_configs: list[str] = field(default_factory=list)  # after each stage config, not keyed (logging)
    overrides: list[str] = field(default_factory=list)  # for every run
    corpus_deps: dict[str, dict[str, str]] = field(default_factory=dict)  # corpus -> deps of all its runs
    corpus_env: dict[str, dict[str, str]] = field(default_factory=dict)


def _json_product(name: str, **paths: str):
    def product(run_dir: Path) -> dict[str, Any]:
        if name:
            return json.loads((run_dir / name).read_text())
        return {k: str(run_dir / v) for k, v in paths.items()}

    return product


def generated_step(out: Path, corpus: str, size: int | None, pretraining: bool = False) -> Step:
    """The generated corpus and tiny models of one corpus (product: the fields of its ``generated.json``)."""
    argv = [*["-m", "meritsl_lightning.reproduce.generated"], corpus, "--out", "{run_dir}", "--seed", "0"]
    if size is not None:
        argv += ["--size", str(size)]
    if pretraining:
        argv.append("--pretraining")
    return Step(
        id=f"generated/{corpus}",
        argv=argv,
        parent=out / "generated",
        prefix=corpus,
        done_files=("generated.json",),
        product=_json_product("generated.json"),
        fresh=False,
    )


def table_steps(table: TableSpec, inputs: Inputs, stages: list[str] | None = None) -> list[Step]:
    """Every (corpus, stage, seed) run of the table, each seed's chain wired to its own earlier checkpoints."""
    steps = []
    for corpus, root in inputs.roots.items():
        spec = table.corpus(corpus)
        for seed in inputs.seeds:
            for stage in table.stages:
                if stages is not None and stage.name not in stages:
                    continue
                config = table.config(corpus, stage.name, inputs.generated)
                run_parent = inputs.out / "runs" / corpus / stage.name
                deps = dict(inputs.corpus_deps.get(corpus, {}))
                for upstream in stage.upstream.values():
                    name = upstream.split("[")[0]
                    deps[name] = f"{corpus}/{name}/seed{seed}"
                if stage.kind == "oof":
                    full = stage.upstream["full"]
                    argv = [*MERITSL, "oof", "--config", str(config), "--full", f"{{{full}[checkpoint]}}",
                            "--out", "{run_dir}/oof.json", "--name", "folds", f"--seed_everything={seed}", QUIET,
                            "--trainer.default_root_dir={run_dir}", "--trainer.logger.init_args.save_dir={run_dir}"]  # fmt: skip
                else:
                    argv = [*MERITSL, "fit", "--config", str(config)]
                    for extra in inputs.extra_configs:
                        argv += ["--config", extra]
                    argv += [
                        f"--seed_everything={seed}",
                        QUIET,
                        "--trainer.default_root_dir={run_dir}",
                        f"--trainer.logger.init_args.save_dir={run_parent}",
                        f"--trainer.logger.init_args.name=seed{seed}",
                        "--trainer.logger.init_args.version={run_name}",
                    ]
                argv += [f"--data.init_args.root={root}", f"--data.init_args.protocol={spec.protocol}"]
                encoder = {"text": inputs.text, "speech": inputs.speech}.get(stage.encoder or "")
                if encoder is not None and encoder.value is not None:
                    argv.append(f"--model.init_args.{stage.init_arg_of_encoder()}={encoder.value}")
                    deps.update(encoder.deps)
                if stage.kind == "fit":
                    for arg, upstream in stage.upstream.items():
                        field_ = upstream if "[" in upstream else f"{upstream}[checkpoint]"
                        argv.append(f"--model.init_args.{arg}={{{field_}}}")
                argv += list(stage.overrides)
                if inputs.generated:
                    argv += list(table.generated_overrides.get(stage.name, ()))
                argv += inputs.overrides
                meta = {
                    "corpus": corpus,
                    "protocol": spec.protocol,
                    "stage": stage.name,
                    "seed": seed,
                    "text_encoder": inputs.text.label,
                    "speech_encoder": inputs.speech.label,
                }
                steps.append(
                    Step(
                        id=f"{corpus}/{stage.name}/seed{seed}",
                        argv=argv,
                        # one folder per seed: runs of other seeds in parallel never share the best.ckpt pointer
                        parent=run_parent / f"seed{seed}",
                        prefix="run",
                        deps=deps,
                        env=dict(inputs.corpus_env.get(corpus, {})),
                        unkeyed=tuple(inputs.extra_configs),
                        # an oof step is an input of table rows, not a row (no "table" in its marker)
                        meta=meta if stage.kind == "oof" else {"table": table.name, **meta},
                        **(_OOF_STEP if stage.kind == "oof" else {}),
                    )
                )
    return steps


# `meritsl oof` resumes its folds by itself (<out>.progress.json), so its folder is never cleared
_OOF_STEP: dict[str, Any] = dict(done_files=("oof.json",), product=_json_product("", oof="oof.json"), fresh=False)


@dataclass
class Pretraining:
    """The inputs of the pre-training chain."""

    msp_root: str  # a folder or a ``{name[field]}`` template naming a generated step's product
    whisper: str
    llm: list[str]  # pseudo-label back-end options: --backend ... --model ... [--base-url ... --api-key-env ...]
    transcribe_options: list[str] = field(default_factory=list)
    text_overrides: list[str] = field(default_factory=list)
    care_overrides: list[str] = field(default_factory=list)
    care_config: Path = EXPERIMENTS / "pretrain_care_msp_podcast.yaml"
    care_data: str = "transcripts"  # what CARE reads: the transcripts, or the prepared manifest (release transcripts)
    deps: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def pretraining_steps(out: Path, p: Pretraining) -> list[Step]:
    """prepare msp_podcast -> transcribe -> pseudo-label -> text pre-training -> CARE pre-training.

    Products: ``pretrain/text``'s and ``pretrain/care``'s ``checkpoint``. The data steps resume by themselves
    (append-only outputs), so their folders are never cleared.
    """
    parent = out / "pretrain"
    data = dict(fresh=False, parent=parent, env=dict(p.env))

    def fit_logger(name: str) -> list[str]:
        return [
            "--seed_everything=0", QUIET, "--trainer.default_root_dir={run_dir}",
            "--trainer.logger.class_path=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={parent}", f"--trainer.logger.init_args.name={name}",
            "--trainer.logger.init_args.version={run_name}",
        ]  # fmt: skip

    best = _json_product("", checkpoint="checkpoints/best.ckpt")
    return [
        Step(
            "pretrain/prepare", [*MERITSL, "prepare", "msp_podcast", "--root", p.msp_root, "--out", "{run_dir}"],
            prefix="prepare", deps=dict(p.deps), done_files=("manifest.jsonl",),
            product=_json_product("", manifest="manifest.jsonl"), **data,
        ),
        Step(
            "pretrain/transcribe",
            [*MERITSL, "transcribe", "--input", "{manifest[manifest]}", "--out", "{run_dir}/transcripts.jsonl",
             "--model", p.whisper, "--no-progress", *p.transcribe_options],
            prefix="transcribe", deps={"manifest": "pretrain/prepare", **p.deps}, done_files=("transcripts.jsonl",),
            product=_json_product("", transcripts="transcripts.jsonl"), **data,
        ),
        Step(
            "pretrain/pseudo_label",
            [*MERITSL, "pseudo-label", "--input", "{transcripts[transcripts]}", "--out", "{run_dir}/silver.jsonl", *p.llm],
            prefix="pseudo_label", deps={"transcripts": "pretrain/transcribe", **p.deps}, done_files=("silver.jsonl",),
            product=_json_product("", silver="silver.jsonl"), **data,
        ),
        Step(
            "pretrain/text",
            [*MERITSL, "fit", "--config", str(EXPERIMENTS / "pretrain_msp_podcast.yaml"), *fit_logger("text_pretrain"),
             "--data.init_args.path={silver[silver]}", *p.text_overrides],
            parent=parent / "text_pretrain", prefix="text_pretrain", deps={"silver": "pretrain/pseudo_label", **p.deps}, env=dict(p.env),
            done_files=("checkpoints/best.ckpt",), product=best,
        ),
        Step(
            "pretrain/care",
            [*MERITSL, "fit", "--config", str(p.care_config), *fit_logger("care_pretrain"),
             f"--data.init_args.path={{{p.care_data}[{p.care_data}]}}", *p.care_overrides],
            parent=parent / "care_pretrain", prefix="care_pretrain", env=dict(p.env),
            deps={p.care_data: "pretrain/transcribe" if p.care_data == "transcripts" else "pretrain/prepare", **p.deps},
            done_files=("checkpoints/best.ckpt",), product=best,
        ),
    ]  # fmt: skip
