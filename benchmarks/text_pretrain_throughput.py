"""Text pre-training / Stage I text training throughput: a naive loop, the best plain loop and ours, in one run.

Same network (RoBERTa-large-shaped + 3-way head, random weights, or a tiny one with ``--small``), the same
texts (MELD's training utterances when the CSV is found, else generated sentences), batch 32, AdamW:

- naive:  plain PyTorch, fp32, every batch padded to 128 tokens;
- plain:  plain PyTorch, bf16 autocast, the data module's length-bucketed batches (padded to multiples of
          16), each encoder layer ``torch.compile``d (CUDA only) - the best plain loop of performance.md;
- eager:  our LightningModule with ``fast_step: off`` (the eager step);
- ours:   our LightningModule with ``fast_step: on`` (models/fast_text_step.py: length buckets, batch rows
          fixed, a prepared additive mask, the forward and loss compiled per shape with CUDA graphs, metrics
          without a sync per step).

Every variant first runs one batch of each padded shape it will meet (compilation is paid there, once per
shape, and reported for ours), then the timed steps. Prints utterances/s, real tokens/s, ms/step, the model
FLOP utilisation (6 x parameters x real tokens against the card's dense bf16 peak), peak GPU memory and the
ratios; ``--json`` writes them.

    python benchmarks/text_pretrain_throughput.py                       # CUDA, RoBERTa-large-shaped
    python benchmarks/text_pretrain_throughput.py --device cpu --small  # the code path, tiny, on a CPU
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer

from data_modules import SilverDataModule
from meritsl_lightning.models import TextPretrainModule
from meritsl_lightning.tiny_models import build_tiny_roberta

MELD_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "meld" / "train_sent_emo.csv"
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}
TARGET_UTT_S, TARGET_RATIO = 2000.0, 3.5
LABELS = ["positive", "negative", "neutral"]  # SilverDataModule's order


def texts_for_benchmark(n: int, meld_csv: Path) -> list[str]:
    """MELD utterances when the real CSV is there (real lengths), else generated sentences."""
    if meld_csv.is_file():
        with open(meld_csv, encoding="utf-8") as f:
            texts = [row["Utterance"] for row in csv.DictReader(f)]
    else:
        from data_modules.generated import emotional_sentence, neutral_sentence

        rng = random.Random(0)
        texts = [neutral_sentence(rng) if i % 2 else emotional_sentence(rng, "hap") for i in range(n)]
    return (texts * (n // max(len(texts), 1) + 1))[:n]


def write_silver(path: Path, texts: list[str]) -> Path:
    rng = random.Random(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": str(i), "text": t, "label": rng.choice(LABELS)}) + "\n" for i, t in enumerate(texts)))
    return path


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Meter:
    """Utterances, real tokens and wall time of the timed steps."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.start, self.end, self.utterances, self.tokens, self.steps = tokenizer, 0.0, 0.0, 0, 0, 0

    def begin(self) -> None:
        sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()

    def add(self, texts: list[str]) -> None:
        self.utterances += len(texts)
        self.tokens += sum(len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=128)["input_ids"])
        self.steps += 1

    def stop(self) -> None:
        sync()
        self.end = time.perf_counter()

    def result(self) -> dict[str, float]:
        seconds = self.end - self.start
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        return {"utt_s": self.utterances / seconds, "tok_s": self.tokens / seconds, "ms_step": 1000 * seconds / max(1, self.steps), "peak_gib": peak}


class LightningMeter(Callback):
    """The meter inside ``Trainer.fit``: the clock stops at the last timed step (teardown is not training)."""

    def __init__(self, meter: Meter, warmup: int) -> None:
        self.meter, self.warmup = meter, warmup

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.meter.begin()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.meter.add(batch["texts"])
        if batch_idx == trainer.num_training_batches - 1:
            self.meter.stop()


def warmup_then_timed(dm: SilverDataModule, warm: SilverDataModule, steps: int) -> Iterator[tuple[bool, dict]]:
    """(timed?, batch): one batch per padded shape from ``warm``, then ``steps`` batches from ``dm``."""
    for batch in warm.train_dataloader():
        yield False, batch
    for i, batch in enumerate(dm.train_dataloader()):
        if i == steps:
            return
        yield True, batch


def plain_run(model: TextPretrainModule, dm: SilverDataModule, warm: SilverDataModule, device: torch.device, steps: int,
              bf16: bool, static_length: int | None, compile_layers: bool) -> dict[str, float]:  # fmt: skip
    """A bare loop over the same network, batches and optimiser."""
    model.to(device).train()
    encoder = model.encoder
    if compile_layers:
        for layer in encoder.transformer.encoder.layer:
            layer.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device.type == "cuda")
    meter = Meter(encoder.tokenizer)
    started = False
    for timed, batch in warmup_then_timed(dm, warm, steps):
        if timed and not started:
            meter.begin()
            started = True
        if static_length:
            enc = encoder.tokenizer(batch["texts"], padding="max_length", truncation=True, max_length=static_length, return_tensors="pt")
        else:
            enc = encoder.tokenize(batch["texts"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.classifier(model.dropout(encoder(enc["input_ids"].to(device), enc["attention_mask"].to(device))))
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if timed:
            meter.add(batch["texts"])
    meter.stop()
    return meter.result()


def lightning_run(model: TextPretrainModule, dm: SilverDataModule, warm: SilverDataModule, accelerator: str, precision: str,
                  steps: int) -> dict[str, float]:  # fmt: skip
    def trainer(batches: int, callbacks: list[Callback]) -> Trainer:
        return Trainer(
            accelerator=accelerator, devices=1, precision=precision, max_epochs=1, limit_train_batches=batches,
            limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=callbacks, num_sanity_val_steps=0,
        )  # fmt: skip

    trainer(len(warm.train_dataloader()), []).fit(model, datamodule=warm)  # one batch per shape: compilation
    meter = Meter(model.encoder.tokenizer)
    trainer(steps + 1, [LightningMeter(meter, warmup=1)]).fit(model, datamodule=dm)
    return meter.result()


def warmup_module(out: Path, tokenizer: Any, lengths: list[int], batch_size: int) -> SilverDataModule:
    """A silver file whose length-bucketed batches each hit one padded length (texts of about that many tokens)."""
    word = "hello"
    texts = []
    for length in lengths:
        n = max(1, length - 3)
        while len(tokenizer(" ".join([word] * n), truncation=True, max_length=length + 1)["input_ids"]) > length and n > 1:
            n -= 1
        texts += [" ".join([word] * n)] * batch_size
    dm = SilverDataModule(str(write_silver(out / f"warmup-{'-'.join(map(str, lengths))}.jsonl", texts)), batch_size=batch_size,
                          validation_fraction=0.01)  # fmt: skip
    dm.use_batch_level("utterance")
    return dm


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-text-pretrain")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="a tiny encoder (to check this script)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 40 on CUDA, 4 on a CPU)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--meld-csv", type=Path, default=MELD_CSV)
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu --small")
        return 2
    cuda = args.device == "cuda"
    device = torch.device(args.device)
    steps = args.steps or (40 if cuda else 4)
    out = Path(args.out).resolve()
    texts = texts_for_benchmark(args.batch_size * steps * 4, args.meld_csv)
    size = dict(hidden_size=64, num_layers=2, heads=2) if args.small else dict(hidden_size=1024, num_layers=24, heads=16)
    encoder_dir = build_tiny_roberta(out / ("tiny" if args.small else "roberta-large-shaped"), texts, **size)
    dm = SilverDataModule(str(write_silver(out / "silver.jsonl", texts)), batch_size=args.batch_size, validation_fraction=0.01)
    dm.use_batch_level("utterance")
    accelerator, precision = ("gpu", "bf16-mixed") if cuda else ("cpu", "32-true")

    def model(**kw: Any) -> TextPretrainModule:
        torch.manual_seed(0)
        return TextPretrainModule(str(encoder_dir), label_names=LABELS, cache_dir=str(out / "cache"), **kw)

    probe = model()
    tokenizer, params = probe.encoder.tokenizer, sum(q.numel() for q in probe.parameters())
    buckets = probe.encoder.length_buckets(probe.hparams.length_buckets)
    multiples = list(range(16, probe.encoder.max_length + 1, 16))
    runs: dict[str, Callable[[], dict[str, float]]] = {
        "naive (fp32, static 128)": lambda: plain_run(model(), dm, warmup_module(out, tokenizer, [128], args.batch_size), device,
                                                      steps, bf16=False, static_length=128, compile_layers=False),
        "plain (bf16, bucketed, layers compiled)": lambda: plain_run(model(), dm, warmup_module(out, tokenizer, multiples, args.batch_size),
                                                                     device, steps, bf16=cuda, static_length=None, compile_layers=cuda),
        "LightningModule, eager step": lambda: lightning_run(model(fast_step="off"), dm, warmup_module(out, tokenizer, multiples, args.batch_size),
                                                             accelerator, precision, steps),
    }  # fmt: skip
    fast = model(fast_step="on")
    runs["ours (LightningModule, fast step)"] = lambda: lightning_run(fast, dm, warmup_module(out, tokenizer, buckets, args.batch_size),
                                                                       accelerator, precision, steps)  # fmt: skip
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak_flops = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    print(f"text training step, {params / 1e6:.1f} M parameters, batch {args.batch_size}, {steps} timed steps, {name}")
    if not cuda:
        print("  (on a CPU the plain loop runs fp32 and uncompiled, and ours runs its eager fallback: a check of the code)")
    results = {}
    for label, run in runs.items():  # each row printed when measured: a run stopped early keeps its rows
        r = results[label] = run()
        r["mfu"] = 6 * params * r["tok_s"] / peak_flops if peak_flops else None
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        peak = f"{r['peak_gib']:.1f} GiB" if cuda else "n/a"
        print(f"  {label:<42} {r['utt_s']:8.1f} utt/s {r['tok_s']:9.0f} tok/s {r['ms_step']:8.1f} ms/step  MFU {mfu:>6}  peak {peak}", flush=True)
    ours, naive = results["ours (LightningModule, fast step)"], results["naive (fp32, static 128)"]
    plain = results["plain (bf16, bucketed, layers compiled)"]
    ratios = {"ours/naive": ours["utt_s"] / naive["utt_s"], "ours/plain": ours["utt_s"] / plain["utt_s"]}
    print(f"  ours / naive = {ratios['ours/naive']:.2f}   ours / plain = {ratios['ours/plain']:.2f}")
    compile_s = fast.fast_compile_seconds
    if compile_s:
        print("  ours, first step per shape (compilation, paid once per shape): " + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items()))
    met = ours["utt_s"] >= TARGET_UTT_S and ratios["ours/plain"] >= TARGET_RATIO
    if cuda and not args.small:
        print(f"  target: >= {TARGET_UTT_S:.0f} utt/s and >= {TARGET_RATIO}x plain: {'met' if met else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"device": name, "params": params, "batch": args.batch_size, "rows": results, "ratios": ratios, "compile_seconds": compile_s}
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
