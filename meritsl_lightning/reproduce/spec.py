"""What a reproducible table is: corpora, stages (config, upstream checkpoints, encoder switch), paper values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus of the table: its name in configs (``iemocap``), protocol, the variable naming its folder."""

    name: str
    protocol: str
    root_variable: str  # e.g. IEMOCAP_ROOT (the Makefile variable / environment variable)
    label: str  # as the paper names it, e.g. IEMOCAP-4
    generated_size: int | None = None  # generator size in --generated mode (None: the generator's default)


@dataclass(frozen=True)
class StageSpec:
    """One column of runs: ``experiments/<corpus>_<config>.yaml`` with earlier stages' checkpoints wired in.

    ``upstream`` maps a model init argument to the stage whose best checkpoint (same corpus, same seed) it
    takes (``stage[field]`` for another field of that stage's product); ``encoder`` says which encoder switch
    the stage starts from (``text`` / ``speech`` / None). A ``kind="oof"`` stage is no table row: it runs
    ``meritsl oof`` on the config's Stage I, with the Stage I run its ``upstream["full"]`` names as the
    full-data model; its product ``oof`` is the ``oof.json`` a Stage II reads.
    """

    name: str
    config: str
    label: str
    upstream: dict[str, str] = field(default_factory=dict)
    encoder: str | None = None
    encoder_arg: str | None = None  # the model init argument the encoder switch sets (default: Stage I's)
    folder: str | None = None  # under experiments/: <corpus>_<config>.yaml there, demo_<corpus>_<config>.yaml generated
    overrides: tuple[str, ...] = ()  # extra `meritsl fit` arguments of this stage's runs (paper and generated)
    kind: str = "fit"  # fit | oof

    def init_arg_of_encoder(self) -> str:
        return self.encoder_arg or {"text": "model_name_or_path", "speech": "speech_encoder"}[self.encoder or ""]


@dataclass(frozen=True)
class TableSpec:
    """A table to reproduce; the engine runs corpora x stages x seeds of it and aggregates by row."""

    name: str
    title: str
    corpora: tuple[CorpusSpec, ...]
    stages: tuple[StageSpec, ...]
    paper: dict[tuple[str, str, str], float]  # (corpus, protocol, stage) -> the paper's value, a fraction
    metric: str = "test/weighted_f1"
    paper_configs: Path = EXPERIMENTS
    generated_configs: Path = EXPERIMENTS / "demo"
    # --generated only: extra overrides per stage (on top of the demo configs) that keep the run short
    generated_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def corpus(self, name: str) -> CorpusSpec:
        return next(c for c in self.corpora if c.name == name)

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)

    def config(self, corpus: str, stage: str, generated: bool) -> Path:
        spec = self.stage(stage)
        if spec.folder is not None:
            return EXPERIMENTS / spec.folder / f"{'demo_' if generated else ''}{corpus}_{spec.config}.yaml"
        folder = self.generated_configs if generated else self.paper_configs
        return folder / f"{corpus}_{spec.config}.yaml"
