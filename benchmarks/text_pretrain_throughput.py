"""Text pre-training throughput: the project's LightningModule against a minimal plain-PyTorch loop.

Same encoder, same batches (the data module's length-bucketed loader), same precision. Prints utterances/s,
real (non-pad) tokens/s and the estimated model FLOP utilisation (6 x parameters x tokens per step against
the card's dense bf16 peak). Target on a GPU: the LightningModule within 80 % of the plain loop.

    python benchmarks/text_pretrain_throughput.py                       # CUDA, RoBERTa-large-shaped
    python benchmarks/text_pretrain_throughput.py --device cpu --small  # the code path, tiny, on a CPU
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from data_modules import SilverDataModule
from meritsl_lightning.models import TextPretrainModule
from meritsl_lightning.tiny_models import build_tiny_roberta

MELD_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "meld" / "train_sent_emo.csv"
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
WARMUP = 5
TARGET = 0.8


def texts_for_benchmark(n: int) -> list[str]:
    """MELD utterances when the real CSV is beside the checkout (real lengths), else generated sentences."""
    if MELD_CSV.is_file():
        with open(MELD_CSV, encoding="utf-8") as f:
            texts = [row["Utterance"] for row in csv.DictReader(f)]
    else:
        from data_modules.generated import emotional_sentence, neutral_sentence

        rng = random.Random(0)
        texts = [neutral_sentence(rng) if i % 2 else emotional_sentence(rng, "hap") for i in range(n)]
    return texts[:n]


class Throughput(Callback):
    """Utterances, real tokens and wall time of the training steps after a warm-up.

    The clock stops at the end of the last timed step, not when ``fit`` returns: Lightning's teardown (the
    model moved back to the CPU, loaders closed) is not training throughput.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.start, self.utterances, self.tokens, self.steps = tokenizer, 0.0, 0, 0, 0
        self.end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == WARMUP:
            sync()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= WARMUP:
            self.add(batch["texts"])
        if batch_idx == trainer.num_training_batches - 1:
            self.stop()

    def stop(self) -> None:
        sync()
        self.end = time.perf_counter()

    def add(self, texts: list[str]) -> None:
        self.utterances += len(texts)
        self.tokens += sum(len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=128)["input_ids"])
        self.steps += 1

    def result(self) -> dict[str, float]:
        if self.end is None:
            self.stop()
        seconds = self.end - self.start
        return {"utt_s": self.utterances / seconds, "tok_s": self.tokens / seconds, "ms_step": 1000 * seconds / max(1, self.steps)}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def lightning_run(model: TextPretrainModule, dm: SilverDataModule, accelerator: str, precision: str, steps: int) -> dict[str, float]:
    meter = Throughput(model.encoder.tokenizer)
    trainer = Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_epochs=1, limit_train_batches=WARMUP + steps,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[meter],
    )
    trainer.fit(model, datamodule=dm)
    return meter.result()


def plain_run(model: TextPretrainModule, dm: SilverDataModule, device: torch.device, steps: int) -> dict[str, float]:
    """The reference: the same network, batches and optimiser in a bare loop."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device.type == "cuda")
    meter = Throughput(model.encoder.tokenizer)
    for i, batch in enumerate(dm.train_dataloader()):
        if i == WARMUP + steps:
            break
        if i == WARMUP:
            sync()
            meter.start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model.classifier(model.dropout(model.embed_texts(batch["texts"])))
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= WARMUP:
            meter.add(batch["texts"])
        if i == WARMUP + steps - 1:
            meter.stop()
    return meter.result()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-text-pretrain")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="a tiny encoder (to check this script)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu --small")
        return 2
    out = Path(args.out).resolve()
    texts = texts_for_benchmark(args.batch_size * (WARMUP + args.steps) * 2)
    size = dict(hidden_size=64, num_layers=2, heads=2) if args.small else dict(hidden_size=1024, num_layers=24, heads=16)
    encoder_dir = build_tiny_roberta(out / ("tiny" if args.small else "roberta-large-shaped"), texts, **size)
    silver = out / "silver.jsonl"
    rng = random.Random(0)
    silver.parent.mkdir(parents=True, exist_ok=True)
    silver.write_text("".join(json.dumps({"id": str(i), "text": t, "label": rng.choice(["positive", "negative", "neutral"])}) + "\n" for i, t in enumerate(texts)))
    dm = SilverDataModule(str(silver), batch_size=args.batch_size)
    accelerator, precision = ("gpu", "bf16-mixed") if args.device == "cuda" else ("cpu", "32-true")

    torch.manual_seed(0)
    model = TextPretrainModule(str(encoder_dir), label_names=dm.label_names, cache_dir=str(out / "cache"))
    params = sum(p.numel() for p in model.parameters())
    results = {"lightning": lightning_run(model, dm, accelerator, precision, args.steps)}
    torch.manual_seed(0)
    model = TextPretrainModule(str(encoder_dir), label_names=dm.label_names, cache_dir=str(out / "cache"))
    dm.use_batch_level("utterance")
    results["plain"] = plain_run(model, dm, torch.device(args.device), args.steps)

    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    print(f"text pre-training step, {params / 1e6:.0f} M parameters, batch {args.batch_size}, {precision}, {name}")
    for label, r in results.items():
        mfu = f"{6 * params * r['tok_s'] / peak:.1%}" if peak else "n/a"
        print(f"  {label:<10} {r['utt_s']:8.1f} utt/s {r['tok_s']:10.0f} tokens/s {r['ms_step']:8.1f} ms/step  MFU {mfu}")
    ratio = results["lightning"]["utt_s"] / results["plain"]["utt_s"]
    print(f"  LightningModule / plain loop = {ratio:.2f} (target >= {TARGET})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
