"""Fig. 4: Stages II and III trained jointly (over frozen Stage I, or with the text encoder fine-tuned too)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from meritsl_lightning.models import JointContextFusionModule, JointTextFinetuneModule
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.stage_runner import StageChain

SMALL = [
    "--model.init_args.hidden_size=8",
    "--model.init_args.context_heads=2",
    "--model.init_args.dim=8",
    "--model.init_args.num_heads=2",
    "--model.init_args.fusion_layers=1",
    "--model.init_args.modality_loss_weight=0.5",
]


def _fit(chain: StageChain, name: str, model: list[str]) -> MeritslCLI:
    return MeritslCLI(args=["fit", *chain.common_args(name), *model, *SMALL, f"--model.init_args.cache_dir={chain.cache_dir}"])


def test_joint_stages_two_and_three_train_from_frozen_stage1_and_test(chain: StageChain) -> None:
    cli = _fit(
        chain,
        "joint",
        [
            "--model.class_path=meritsl_lightning.models.JointContextFusionModule",
            f"--model.init_args.stage1_text_checkpoint={chain.checkpoints['stage1_text']}",
            f"--model.init_args.stage1_audio_checkpoint={chain.checkpoints['stage1_audio']}",
        ],
    )
    model = cli.model
    assert isinstance(model, JointContextFusionModule)
    assert "test/weighted_f1" in cli.test_results[0]
    assert "train/modality_loss_epoch" in (Path(cli.trainer.log_dir) / "metrics.csv").read_text().splitlines()[0]
    state = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)["state_dict"]
    prefixes = {k.split(".")[0] for k in state if not k.startswith(("metrics", "per_class_f1", "confusion"))}
    assert prefixes == {"text_context", "audio_context", "fusion", "text_head", "audio_head"}  # Stage I stays frozen, unsaved
    record = json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text())
    assert set(record["encoders"]) == {"text", "speech"}
    # the per-modality losses reach their heads (deep supervision), the fused loss the whole network
    model.train()
    dm = cli.datamodule
    batch = next(iter(dm.train_dataloader()))
    model.log = lambda *a, **k: None
    loss = model.training_step(batch, 0)
    loss.backward()
    assert model.text_head.weight.grad is not None and model.text_context.gru.weight_ih_l0.grad.abs().sum() > 0


def test_joint_text_finetuning_trains_the_transformer_with_stages_two_and_three(chain: StageChain) -> None:
    start = JointTextFinetuneModule(
        chain.checkpoints["stage1_audio"], text_encoder=str(chain.roberta), hidden_size=8, context_heads=2, dim=8, num_heads=2,
        label_names=["hap", "sad", "neu", "ang"],
    )  # fmt: skip
    before = {k: v.clone() for k, v in start.encoder.state_dict().items()}
    cli = _fit(
        chain,
        "joint_text",
        [
            "--model.class_path=meritsl_lightning.models.JointTextFinetuneModule",
            f"--model.init_args.stage1_audio_checkpoint={chain.checkpoints['stage1_audio']}",
            f"--model.init_args.text_encoder={chain.roberta}",
            "--model.init_args.text_lr=1e-3",
        ],
    )
    model = cli.model
    assert "test/weighted_f1" in cli.test_results[0]
    after = model.encoder.state_dict()
    changed = [k for k, v in before.items() if "embeddings.word_embeddings" in k and not torch.equal(v, after[k].cpu())]
    assert changed  # the transformer was fine-tuned through the conversation-level loss
    groups = cli.trainer.optimizers[0].param_groups
    text = {id(p) for p in model.encoder.parameters()}
    assert {g["initial_lr"] for g in groups if id(g["params"][0]) in text} == {1e-3}  # text_lr
    assert {g["initial_lr"] for g in groups if id(g["params"][0]) not in text} == {1e-4}  # lr
    record = json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text())
    assert record["encoders"]["text"]["path"] == str(chain.roberta.resolve())
