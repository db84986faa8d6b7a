"""Model bundles: one folder with a trained chain and everything it needs, verified when opened.

A bundle holds the top checkpoint (Stage III, or a Stage II exported alone) and every earlier-stage checkpoint
it was trained on, the text encoder folder and the speech-encoder reference, the label set, the resolved
configs and test metrics of the runs, a model card (``README.md``) and ``bundle.json``: the format version,
what each file is, and each file's sha256. Checkpoints record the absolute paths of their upstreams and
encoders; the loader (:mod:`meritsl_lightning.inference.chain`) remaps them into the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from meritsl_lightning.checkpoints import TEXT_PRETRAIN_STAGE, StageCheckpoint, read_stage_checkpoint
from meritsl_lightning.encoders.provenance import recipe

BUNDLE_FILE = "bundle.json"
FORMAT_NAME = "meritsl-bundle"
FORMAT_VERSION = 1
CARD_FILE = "README.md"
# the init argument of a stage that names an earlier-stage checkpoint: (argument, its stage, its modality or
# None for "the same modality as this checkpoint")
UPSTREAM_ARGS: dict[str, list[tuple[str, str, str | None]]] = {
    "stage3": [("stage2_text_checkpoint", "stage2", "text"), ("stage2_audio_checkpoint", "stage2", "audio")],
    "stage2": [("stage1_checkpoint", "stage1", None)],
    "stage1": [],
}
ROLE_ORDER = ("stage3", "stage2_text", "stage2_audio", "stage1_text", "stage1_audio")


class BundleError(ValueError):
    """A bundle cannot be written or opened; the message names the file and the reason."""


@dataclass
class ChainMember:
    """One checkpoint of the chain: its role in the bundle (``stage2_text``...), file, metadata and init args."""

    role: str
    meta: StageCheckpoint
    hparams: dict[str, Any]

    @property
    def path(self) -> Path:
        return Path(self.meta.path)


def role_of(meta: StageCheckpoint) -> str:
    return "stage3" if meta.stage == "stage3" else f"{meta.stage}_{meta.modality}"


def _member(path: str, argument: str, stages: tuple[str, ...], modality: str | None = None) -> ChainMember:
    meta = read_stage_checkpoint(path, role=argument, stages=stages, modality=modality)
    blob = torch.load(meta.path, map_location="cpu", weights_only=True, mmap=True)
    return ChainMember(role_of(meta), meta, dict(blob.get("hyper_parameters") or {}))


def trace_chain(checkpoint: str, argument: str = "--stage3") -> list[ChainMember]:
    """The checkpoint (of the stage ``argument`` names) and every earlier-stage checkpoint it was trained on
    (read from its init arguments), each checked to be the file it was trained on (sha256 recorded in the
    later checkpoint)."""
    top = _member(checkpoint, argument, (argument.removeprefix("--"),))
    members, queue = [top], [top]
    while queue:
        member = queue.pop(0)
        children = []
        for arg, stage, modality in UPSTREAM_ARGS[member.meta.stage]:
            if not member.hparams.get(arg):
                raise BundleError(f"{member.path} records no {arg}; it cannot be exported with its upstream models")
            children.append(_member(member.hparams[arg], f"{member.path} {arg}", (stage,), modality or member.meta.modality))
        recorded = member.meta.upstream_identity
        identities = [c.meta.identity for c in children]
        if member.meta.stage == "stage2":
            identities += oof_identities(member, children[0].meta)
        if children and recorded is not None and recorded != "|".join(identities):
            raise BundleError(
                f"the earlier-stage checkpoint(s) {', '.join(str(c.path) for c in children)} changed since "
                f"{member.path} was trained on them; restore the original files or retrain"
            )
        members += children
        queue += children
    return sorted(members, key=lambda m: ROLE_ORDER.index(m.role))


def oof_identities(member: ChainMember, stage1: StageCheckpoint) -> list[str]:
    """The fold checkpoints of a Stage II trained on out-of-fold Stage I embeddings (``stage1_oof``): part of
    the identity it records, so they are checked at export. Analysis uses the full Stage I model for every
    turn (as validation and test did), so they are not copied into the bundle."""
    oof = member.hparams.get("stage1_oof")
    if not oof:
        return []
    from meritsl_lightning.models.oof import read_oof

    try:
        folds = read_oof(str(oof), stage1, member.meta.label_names, member.hparams.get("task"))
    except FileNotFoundError as e:
        raise BundleError(f"{member.path} was trained with out-of-fold Stage I models; to check it, {e}") from e
    return [c.identity for c in folds.checkpoints]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------- export


@dataclass
class _Plan:
    """What goes into the bundle: relative path -> source file or folder, and the bundle.json entries."""

    copies: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _local_folder(source: str) -> Path | None:
    path = Path(source).expanduser()
    return path.resolve() if path.is_dir() else None


def _text_encoder_entry(member: ChainMember, plan: _Plan) -> dict[str, Any]:
    source = str(member.hparams.get("model_name_or_path", ""))
    entry: dict[str, Any] = {"source": source}
    if source.endswith(".ckpt"):
        # a text pre-training checkpoint: the Stage I checkpoint already holds every encoder weight, so only
        # the base model it was built from (architecture, tokenizer) is needed
        meta = read_stage_checkpoint(source, role=f"{member.path} model_name_or_path", stages=(TEXT_PRETRAIN_STAGE,))
        base = torch.load(meta.path, map_location="cpu", weights_only=True, mmap=True)["hyper_parameters"]["model_name_or_path"]
        entry["pretrained_from"], source = source, str(base)
    folder = _local_folder(source)
    if folder is not None:
        plan.copies["text_encoder"] = folder
        entry["path"] = "text_encoder"
    else:
        entry["hub_id"] = source  # loading then needs the Hugging Face cache or network
    return entry


def _speech_encoder_entry(member: ChainMember, plan: _Plan) -> dict[str, Any]:
    spec = str(member.hparams.get("speech_encoder", "filterbank"))
    entry: dict[str, Any] = {"source": spec, "options": member.hparams.get("encoder_options") or {}}
    kind, sep, argument = spec.partition(":")
    if spec == "filterbank":
        entry["kind"] = "filterbank"  # weight-free: nothing to copy
    elif sep and kind == "care":
        path = Path(argument).expanduser()
        if not path.is_file():
            raise BundleError(f"{member.path}: its speech encoder checkpoint {argument} does not exist")
        plan.copies["speech_encoder/care.ckpt"] = path.resolve()
        entry.update(kind="care", path="speech_encoder/care.ckpt")
    else:
        source = argument if sep and kind == "hf" else spec
        folder = _local_folder(source)
        entry["kind"] = "hf"
        if folder is not None:
            plan.copies["speech_encoder"] = folder
            entry["path"] = "speech_encoder"
        else:
            entry["hub_id"] = source
    return entry


def run_folder(checkpoint: Path) -> Path | None:
    """``<run>/checkpoints/best.ckpt`` -> ``<run>`` (where the CLI wrote config.yaml and test_metrics.json)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def _test_metrics(member: ChainMember) -> dict[str, Any] | None:
    """The run's recorded test metrics, only if they were measured with this very checkpoint."""
    run = run_folder(member.path)
    path = run / "test_metrics.json" if run else None
    if path is None or not path.is_file():
        return None
    recorded = json.loads(path.read_text())
    tested = Path(str(recorded.get("best_checkpoint", "")))
    if tested.parts[-3:] != member.path.parts[-3:]:
        return None  # measured with another checkpoint of the run (e.g. this is last.ckpt)
    return {k.removeprefix("test/"): v for k, v in (recorded.get("test") or {}).items()}


def export_bundle(checkpoint: str, out: str | os.PathLike, force: bool = False, argument: str = "--stage3") -> dict[str, Any]:
    """Write the bundle of ``checkpoint`` (Stage III, or Stage II alone) to ``out``; return its bundle.json."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BundleError(f"--out {out} exists and is not empty; pass --force to replace it")
    members = trace_chain(checkpoint, argument)
    top = members[0]
    plan = _Plan()
    checkpoints = {}
    for m in members:
        checkpoints[m.role] = f"checkpoints/{m.role}.ckpt"
        plan.copies[checkpoints[m.role]] = m.path
        run = run_folder(m.path)
        if run is not None and (run / "config.yaml").is_file():
            plan.copies[f"configs/{m.role}.yaml"] = run / "config.yaml"
    by_role = {m.role: m for m in members}
    text_encoder = _text_encoder_entry(by_role["stage1_text"], plan) if "stage1_text" in by_role else None
    speech_encoder = _speech_encoder_entry(by_role["stage1_audio"], plan) if "stage1_audio" in by_role else None
    metrics = {m.role: v for m in members if (v := _test_metrics(m)) is not None}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "meritsl_lightning": _package_version(),
        "top": top.role,
        "modalities": [m for m in ("text", "audio") if f"stage1_{m}" in by_role],
        "task": top.hparams.get("task", "classification"),
        "label_names": top.meta.label_names,
        "checkpoints": checkpoints,
        "classes": {m.role: m.meta.class_path for m in members},
        "sources": {m.role: str(m.path) for m in members},
        "text_encoder": text_encoder,
        "speech_encoder": speech_encoder,
        # Stage II models trained on out-of-fold Stage I embeddings: the oof.json they read (not needed to run)
        "stage1_oof": {m.role: str(m.hparams["stage1_oof"]) for m in members if m.hparams.get("stage1_oof")},
        "trained_with": top.meta.encoders,  # the encoder records the training runs kept (sha256, pre-training)
        "test_metrics": metrics,
    }
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, source in plan.copies.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*"))
            else:
                shutil.copy2(source, target)
        if metrics:
            (tmp / "metrics").mkdir(parents=True, exist_ok=True)
            for role, values in metrics.items():
                (tmp / "metrics" / f"{role}.json").write_text(json.dumps(values, indent=1) + "\n")
        (tmp / "labels.json").write_text(json.dumps(meta["label_names"]) + "\n")
        (tmp / CARD_FILE).write_text(model_card(meta, members, tmp))
        meta["files"] = {
            p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _package_version() -> str:
    try:
        return version("meritsl-lightning")
    except PackageNotFoundError:
        return "unknown"


def _data_of(config: Path) -> str:
    """``IEMOCAPDataModule (iemocap4)`` from a run's resolved config, for the model card."""
    import yaml

    try:
        data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
    except (OSError, yaml.YAMLError):
        return "-"
    args = data.get("init_args") or {}
    return f"{str(data.get('class_path', '-')).rpartition('.')[2]} ({args.get('protocol', '-')})"


def model_card(meta: dict[str, Any], members: list[ChainMember], folder: Path) -> str:
    """The bundle's README.md: what the model is, how to run it, and the test metrics its runs recorded."""
    labels = ", ".join(meta["label_names"])
    text_recipe = recipe({"text": {}, **(meta["trained_with"] or {})}) if "text" in meta["modalities"] else None
    modalities = " + ".join("speech" if m == "audio" else m for m in meta["modalities"])
    lines = [
        f"# MERITS-L model bundle: {meta['top']} ({modalities})",
        "",
        f"Exported {meta['created']} by meritsl-lightning {meta['meritsl_lightning']} from `{meta['sources'][meta['top']]}`.",
        f"Labels ({meta['task']}): {labels}.",
        *([f"Text recipe: {text_recipe}."] if text_recipe else []),
        "",
        "## Use",
        "",
        "```bash",
        "meritsl analyze TURNS_FOLDER --bundle THIS_FOLDER --out results/      # a folder of turn audio files",
        "meritsl analyze RECORDING.wav --bundle THIS_FOLDER --out results/ --asr-model WHISPER_CT2_FOLDER",
        "```",
        "",
        "## The chain",
        "",
        "| role | class | trained on | checkpoint |",
        "|---|---|---|---|",
    ]
    for m in members:
        config = folder / "configs" / f"{m.role}.yaml"
        data = _data_of(config) if config.is_file() else "-"
        lines.append(f"| {m.role} | `{m.meta.class_path.rpartition('.')[2]}` | {data} | `{meta['checkpoints'][m.role]}` |")
    for role, oof in meta["stage1_oof"].items():
        lines += ["", f"{role} trained on out-of-fold Stage I embeddings (`{oof}`); analysis, like validation and test, "
                  "uses the full Stage I model for every turn, so the fold models are not in the bundle."]
    lines += ["", "## Test metrics (as each training run recorded them, test split, best-validation checkpoint)", ""]
    metrics = meta["test_metrics"]
    if metrics:
        names = [k for k in ("weighted_f1", "accuracy", "macro_f1") if any(k in v for v in metrics.values())]
        lines += ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for role in ROLE_ORDER:
            if role in metrics:
                cells = [f"{metrics[role][k]:.4f}" if isinstance(metrics[role].get(k), float) else "-" for k in names]
                lines.append(f"| {role} | " + " | ".join(cells) + " |")
        missing = [m.role for m in members if m.role not in metrics]
        if missing:
            lines += ["", f"No test metrics recorded for: {', '.join(missing)}."]
    else:
        lines.append("The runs recorded no test metrics for these checkpoints.")
    lines += ["", "## Encoders", ""]
    for name, entry in (("text", meta["text_encoder"]), ("speech", meta["speech_encoder"])):
        if entry is None:
            continue
        if entry.get("kind") == "filterbank":
            where = "weight-free log-mel filterbank statistics (nothing stored)"
        elif entry.get("path"):
            where = f"copied into `{entry['path']}` (from `{entry['source']}`)"
        else:
            where = f"Hugging Face id `{entry['hub_id']}` (needs the Hugging Face cache or network)"
        lines.append(f"- {name}: {where}")
    lines += [
        "",
        "## Integrity",
        "",
        f"`{BUNDLE_FILE}` lists every file with its sha256; a bundle whose files changed, or of another format",
        f"version than the reader's (this one is version {meta['format_version']}), is refused.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- open


@dataclass
class Bundle:
    """An opened, verified bundle folder."""

    root: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, folder: str | os.PathLike, verify: bool = True) -> Bundle:
        root = Path(folder).resolve()
        manifest = root / BUNDLE_FILE
        if not root.is_dir():
            raise BundleError(f"--bundle {folder}: no such folder")
        if not manifest.is_file():
            raise BundleError(f"--bundle {folder}: not a meritsl bundle (no {BUNDLE_FILE}); write one with `meritsl export`")
        try:
            meta = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"{manifest}: not valid JSON ({e.msg}, line {e.lineno})") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise BundleError(f"{manifest}: not a meritsl bundle manifest (format {meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{manifest}: bundle format version {meta.get('format_version')!r}, but this meritsl-lightning reads "
                f"version {FORMAT_VERSION}; re-export it with `meritsl export` of this version"
            )
        bundle = cls(root, meta)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Refuse missing or changed files (sha256 against bundle.json)."""
        files = self.meta.get("files") or {}
        for rel, expected in files.items():
            path = (self.root / rel).resolve()
            if Path(rel).is_absolute() or self.root not in path.parents:
                raise BundleError(f"{self.root / BUNDLE_FILE}: file entry {rel!r} points outside the bundle")
            if not path.is_file():
                raise BundleError(f"{path}: missing from the bundle (listed in {BUNDLE_FILE})")
            if sha256_file(path) != expected:
                raise BundleError(f"{path}: changed since the bundle was exported (sha256 differs from {BUNDLE_FILE}); re-export the bundle")
        for role, rel in self.meta.get("checkpoints", {}).items():
            if rel not in files:
                raise BundleError(f"{self.root / BUNDLE_FILE}: the {role} checkpoint {rel} has no sha256 entry")

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    @property
    def task(self) -> str:
        return str(self.meta.get("task", "classification"))

    @property
    def roles(self) -> list[str]:
        return [r for r in ROLE_ORDER if r in self.meta["checkpoints"]]

    def checkpoint(self, role: str) -> Path:
        return self.root / self.meta["checkpoints"][role]

    def text_encoder_source(self) -> str:
        entry = self.meta["text_encoder"]
        return str(self.root / entry["path"]) if entry.get("path") else str(entry["hub_id"])

    def speech_encoder_spec(self) -> str:
        entry = self.meta["speech_encoder"]
        if entry["kind"] == "filterbank":
            return "filterbank"
        if entry["kind"] == "care":
            return f"care:{self.root / entry['path']}"
        return str(self.root / entry["path"]) if entry.get("path") else str(entry["hub_id"])
