"""The fast text training step against the eager one, on the tiny RoBERTa on a CPU.

What a CPU can check: bucketing, the prepared additive mask (every pad token masked, gradients through it),
the same loss curve as the eager step, checkpoints that resume in the eager step, and the switch. The
compiled variant's numerics are in the slow test at the end; CUDA graphs need a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn

from data_modules import SilverDataModule
from data_modules.batching import IGNORE_INDEX
from meritsl_lightning.encoders.text import TextEncoder
from meritsl_lightning.models import TextPretrainModule, TextUtteranceModule
from meritsl_lightning.tiny_models import build_tiny_roberta

TEXTS = [
    "yes",
    "I can't believe you did that to me, after everything we went through together last summer",
    "well okay then",
    "what are you talking about",
    "this is the best day of my whole life and nothing will ever spoil it",
    "no",
    "maybe we should go home now",
    "I am so tired of all this",
]
LOSS_TOLERANCE = 1e-5  # absolute, per step, fp32 on a CPU (measured: see test_fast_step_matches_eager_losses)


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_roberta(tmp_path_factory.mktemp("models") / "roberta", TEXTS * 4, hidden_size=32, num_layers=2)


@pytest.fixture(scope="module")
def silver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("silver") / "silver.jsonl"
    labels = ["positive", "negative", "neutral"]
    rows = [{"id": f"u{i}", "text": f"{TEXTS[i % 8]} {TEXTS[(3 * i) % 8]}"[: 20 + 7 * i], "label": labels[i % 3]} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def no_dropout(model: nn.Module) -> nn.Module:
    # dropout draws differ with the padded shape; the curves are compared without it
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


# ---- bucketing and the mask ---------------------------------------------------------------------------


def test_bucketing_gives_only_configured_lengths_and_masks_every_pad(roberta: Path) -> None:
    encoder = TextEncoder(str(roberta), max_length=40)
    assert encoder.length_buckets([16, 8, 64]) == [8, 16, 40]
    seen, expected = set(), set()
    for k in range(1, len(TEXTS) + 1):
        texts = TEXTS[:k]
        enc = encoder.tokenize_bucketed(texts, [8, 16], rows=10)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        seen.add(ids.shape[1])
        assert ids.shape[0] == 10 and ids.shape[1] in (8, 16, 40)
        plain = encoder.tokenizer(texts, truncation=True, max_length=40)["input_ids"]
        for row, tokens in enumerate(plain):
            assert ids[row, : len(tokens)].tolist() == tokens and mask[row, : len(tokens)].all()
            assert not mask[row, len(tokens) :].any()  # every pad position masked
            assert (ids[row, len(tokens) :] == encoder.tokenizer.pad_token_id).all()
        assert mask[k:, 0].all() and not mask[k:, 1:].any()  # pad rows: one attended position, no label
        expected.add(next(b for b in (8, 16, 40) if b >= max(map(len, plain))))
    assert seen == expected and len(seen) >= 2


def test_additive_mask_gives_the_eager_outputs_and_ignores_pad_tokens(roberta: Path) -> None:
    encoder = TextEncoder(str(roberta), pooling="mean").eval()
    with torch.no_grad():
        eager = encoder(**encoder.tokenize(TEXTS))
        enc = encoder.tokenize_bucketed(TEXTS, [64], rows=8)
        fast = encoder(enc["input_ids"], enc["attention_mask"], additive_mask=True)
        scrambled = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, 7)  # other tokens where the pads are
        fast_scrambled = encoder(scrambled, enc["attention_mask"], additive_mask=True)
    assert enc["input_ids"].shape[1] == 64
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_scrambled, fast, atol=1e-5, rtol=1e-5)


def test_gradients_flow_through_the_mask_and_not_into_pads(roberta: Path, silver: Path) -> None:
    dm = SilverDataModule(str(silver))
    model = TextPretrainModule(str(roberta), label_names=dm.label_names, fast_step="on")
    enc = model.encoder.tokenize_bucketed(TEXTS[:5], [64], rows=8)
    labels = torch.tensor([0, 1, 2, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX])
    loss, _ = model.fast_loss(enc["input_ids"], enc["attention_mask"], labels, None)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []
    words = model.encoder.transformer.get_input_embeddings().weight.grad
    assert not words[model.encoder.tokenizer.pad_token_id].any()  # pad tokens (cls pooling) feed nothing
    assert words[enc["input_ids"][0, 1]].any()


def test_regression_loss_matches_the_eager_criterion(roberta: Path, silver: Path) -> None:
    model = TextUtteranceModule(str(roberta), label_names=["negative", "positive"], task="regression").eval()
    enc = model.encoder.tokenize_bucketed(TEXTS[:4], [16], rows=6)
    scores = torch.tensor([0.5, float("nan"), -1.2, 2.0, float("nan"), float("nan")])
    loss, outputs = model.fast_loss(enc["input_ids"], enc["attention_mask"], torch.zeros(6, dtype=torch.long), scores)
    keep = ~torch.isnan(scores)
    torch.testing.assert_close(loss, nn.functional.l1_loss(outputs[keep, 0], scores[keep]))


# ---- training -----------------------------------------------------------------------------------------


class Losses(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def train(roberta: Path, silver: Path, root: Path, fast_step: str, steps: int, ckpt: str | None = None, **kw) -> tuple:
    torch.manual_seed(0)
    dm = SilverDataModule(str(silver), batch_size=8)
    model = no_dropout(TextPretrainModule(str(roberta), label_names=dm.label_names, fast_step=fast_step, lr=1e-3, **kw))
    losses = Losses()
    trainer = Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, callbacks=[losses], num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    return model, trainer, losses.values


def test_fast_step_matches_eager_losses(roberta: Path, silver: Path, tmp_path: Path) -> None:
    eager, eager_trainer, eager_losses = train(roberta, silver, tmp_path / "eager", "off", 20)
    fast, fast_trainer, fast_losses = train(roberta, silver, tmp_path / "fast", "on", 20)
    assert fast.fast_step_active() and not eager.fast_step_active()
    assert len(fast_losses) == len(eager_losses) == 20
    diff = max(abs(a - b) for a, b in zip(fast_losses, eager_losses, strict=True))
    assert diff < LOSS_TOLERANCE, (diff, fast_losses, eager_losses)
    assert fast_losses[-1] < fast_losses[0]
    # the epoch metrics were fed the same predictions (accumulated on the device, no sync per step)
    for key in ("train/weighted_f1", "train/accuracy"):
        assert float(fast_trainer.callback_metrics[key]) == pytest.approx(float(eager_trainer.callback_metrics[key]))
    for (name, a), b in zip(fast.state_dict().items(), eager.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)


def test_fast_checkpoint_resumes_in_the_eager_step(roberta: Path, silver: Path, tmp_path: Path) -> None:
    _, first, _ = train(roberta, silver, tmp_path / "first", "on", 4)
    ckpt = tmp_path / "fast.ckpt"
    first.save_checkpoint(ckpt)
    eager, trainer, eager_losses = train(roberta, silver, tmp_path / "eager", "off", 8, ckpt=str(ckpt))
    fast, _, fast_losses = train(roberta, silver, tmp_path / "fast", "on", 8, ckpt=str(ckpt))
    assert trainer.global_step == 8 and not eager.fast_step_active()
    assert len(eager_losses) == 4
    assert max(abs(a - b) for a, b in zip(eager_losses, fast_losses, strict=True)) < LOSS_TOLERANCE
    for (name, a), b in zip(eager.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)


def test_switch(roberta: Path) -> None:
    labels = ["negative", "neutral", "positive"]
    assert not TextPretrainModule(str(roberta), label_names=labels).fast_step_active()  # auto: eager on a CPU
    assert TextPretrainModule(str(roberta), label_names=labels, fast_step="on").fast_step_active()
    with pytest.raises(ValueError, match="fast_step must be auto, on or off"):
        TextPretrainModule(str(roberta), label_names=labels, fast_step="yes").fast_step_active()


@pytest.mark.slow
def test_compiled_fast_step_matches_eager_losses(roberta: Path, silver: Path, tmp_path: Path) -> None:
    _, _, eager_losses = train(roberta, silver, tmp_path / "eager", "off", 6)
    compiled, _, losses = train(roberta, silver, tmp_path / "compiled", "on", 6, compile_step="on")
    assert compiled.fast_compile_seconds  # it did compile (a failure would have fallen back to eager)
    assert max(abs(a - b) for a, b in zip(losses, eager_losses, strict=True)) < 1e-4


def test_fast_step_trains_stage1_text_with_two_process_ddp(chain, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.test_cli import clean_env

    cmd = [
        sys.executable, "-m", "meritsl_lightning", "fit", *chain.common_args("fast_ddp"), *chain.model_args("stage1_text"),
        "--model.init_args.fast_step=on", "--trainer.strategy=ddp", "--trainer.devices=2",
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stderr
    summary = json.loads((tmp_path / "fast_ddp" / "version_0" / "test_metrics.json").read_text())
    assert 0.0 <= summary["test"]["test/weighted_f1"] <= 1.0
