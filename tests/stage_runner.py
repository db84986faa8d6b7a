"""Train the stage chain through the real CLI on a tiny IEMOCAP-layout corpus (used by several tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meritsl_lightning.tiny_models import build_tiny_roberta
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.fixtures.iemocap_layout import default_dialogues, write_iemocap

STAGE_MODELS = {
    "stage1_text": ["--model.class_path=meritsl_lightning.models.TextUtteranceModule"],
    "stage1_audio": [
        "--model.class_path=meritsl_lightning.models.SpeechUtteranceModule",
        "--model.init_args.projection_dim=16",
        "--model.init_args.embedding_dim=16",
    ],
    "stage2_text": ["--model.class_path=meritsl_lightning.models.ContextModule", "--model.init_args.hidden_size=8", "--model.init_args.num_heads=2"],
    "stage2_audio": ["--model.class_path=meritsl_lightning.models.ContextModule", "--model.init_args.hidden_size=8", "--model.init_args.num_heads=2"],
    "stage3": [
        "--model.class_path=meritsl_lightning.models.FusionModule",
        "--model.init_args.dim=8",
        "--model.init_args.num_heads=2",
        "--model.init_args.num_layers=1",
    ],
}


@dataclass
class StageChain:
    root: Path
    corpus: Path
    roberta: Path
    cache_dir: Path
    checkpoints: dict[str, str] = field(default_factory=dict)
    clis: dict[str, Any] = field(default_factory=dict)

    def common_args(self, name: str, protocol: str = "iemocap4") -> list[str]:
        return [
            "--seed_everything=0",
            "--trainer.max_epochs=1",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={self.root / 'runs'}",
            "--trainer.logger.class_path=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={self.root / 'runs'}",
            f"--trainer.logger.init_args.name={name}",
            "--data.class_path=data_modules.IEMOCAPDataModule",
            f"--data.init_args.root={self.corpus}",
            f"--data.init_args.protocol={protocol}",
            "--data.init_args.batch_size=4",
        ]

    def model_args(self, stage: str) -> list[str]:
        """Class path first (init args given before it would be dropped by the class change)."""
        args = [*STAGE_MODELS[stage], f"--model.init_args.cache_dir={self.cache_dir}"]
        if stage == "stage1_text":
            args.append(f"--model.init_args.model_name_or_path={self.roberta}")
        if stage.startswith("stage2"):
            args.append(f"--model.init_args.stage1_checkpoint={self.checkpoints['stage1_' + stage.split('_')[1]]}")
        if stage == "stage3":
            args += [
                f"--model.init_args.stage2_text_checkpoint={self.checkpoints['stage2_text']}",
                f"--model.init_args.stage2_audio_checkpoint={self.checkpoints['stage2_audio']}",
            ]
        return args

    def text_pretrain_args(self, name: str, silver: Path, roberta: Path | None = None, cache_dir: Path | None = None) -> list[str]:
        """Text pre-training on a silver-label file with the chain's trainer settings (its data arguments replaced)."""
        return [
            *[a for a in self.common_args(name) if not a.startswith("--data.")],
            "--data.class_path=data_modules.SilverDataModule",
            f"--data.init_args.path={silver}",
            "--data.init_args.batch_size=8",
            "--model.class_path=meritsl_lightning.models.TextPretrainModule",
            f"--model.init_args.model_name_or_path={roberta or self.roberta}",
            f"--model.init_args.cache_dir={cache_dir or self.cache_dir}",
        ]

    def fit(self, stage: str, *extra: str, name: str | None = None) -> MeritslCLI:
        return MeritslCLI(args=["fit", *self.common_args(name or stage), *self.model_args(stage), *extra])


def train_chain(root: Path) -> StageChain:
    corpus = write_iemocap(root / "data")
    texts = [t.text for d in default_dialogues() for t in d.turns]
    chain = StageChain(root, corpus, build_tiny_roberta(root / "roberta", texts, hidden_size=16), root / "cache")
    for stage in STAGE_MODELS:
        cli = chain.fit(stage)
        chain.clis[stage] = cli
        chain.checkpoints[stage] = cli.trainer.checkpoint_callback.best_model_path
    return chain


def demo_layout(chain: StageChain, root: Path) -> Path:
    """A folder laid out as the demo configs read it (``MERITSL_DEMO_DIR``: ``data/IEMOCAP_full_release``,
    ``logs/stage2_{text,audio}/best.ckpt``), filled from the tiny chain, so Stage III demo configs run on it."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "IEMOCAP_full_release").symlink_to(chain.corpus)
    for stage in ("stage2_text", "stage2_audio"):
        (root / "logs" / stage).mkdir(parents=True)
        (root / "logs" / stage / "best.ckpt").symlink_to(chain.checkpoints[stage])
    return root
