"""GPU check: every stage for a few steps on CUDA in bf16 (the demo chain), then throughput figures.

    python benchmarks/gpu_check.py                # on a CUDA machine (what `make gpu-check` runs)
    python benchmarks/gpu_check.py --device cpu --small   # the same code path, tiny, on a CPU

Throughput rows (random weights, lengths of the demo corpus):
- Stage I text training step through Lightning, RoBERTa-large-shaped encoder, batch 32: utterances/s;
- frozen speech-encoder feature extraction, WavLM-base-shaped: audio seconds per second;
- Stage II and Stage III training steps on cached embeddings: conversations/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from meritsl_lightning.data_modules import IEMOCAPDataModule
from meritsl_lightning.data_modules.iemocap_parser import parse_iemocap
from meritsl_lightning.encoders.speech import HFSpeechEncoder, extract_features
from meritsl_lightning.models import TextUtteranceModule
from meritsl_lightning.tiny_models import build_tiny_roberta, build_tiny_wavlm

WARMUP_STEPS = 5


class StepTimer(Callback):
    """Wall time and utterances of the training steps after a warm-up."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.utterances = 0
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == WARMUP_STEPS:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= WARMUP_STEPS:
            self.utterances += len(batch["texts"])
            self.steps += 1

    def rate(self) -> tuple[float, float]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - (self.start or time.perf_counter())
        return self.utterances / max(seconds, 1e-9), 1000 * seconds / max(self.steps, 1)


def run_demo_chain(out: Path, accelerator: str, precision: str) -> dict:
    cmd = [
        sys.executable, "-m", "meritsl_lightning", "demo", "--out", str(out),
        f"--trainer.accelerator={accelerator}", f"--trainer.precision={precision}",
        "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
    ]
    subprocess.run(cmd, check=True)
    return json.loads((out / "summary.json").read_text())


def text_throughput(out: Path, corpus: Path, accelerator: str, precision: str, small: bool) -> tuple[float, float]:
    texts = [u.text for u in parse_iemocap(corpus).utterances]
    size = dict(hidden_size=64, num_layers=2, heads=2) if small else dict(hidden_size=1024, num_layers=24, heads=16)
    encoder = build_tiny_roberta(out / "roberta-large-shaped", texts, **size)
    dm = IEMOCAPDataModule(root=str(corpus), batch_size=32)
    model = TextUtteranceModule(str(encoder), label_names=dm.label_names, lr=2e-5, cache_dir=str(out / "cache"))
    timer = StepTimer()
    trainer = Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_epochs=1, limit_train_batches=WARMUP_STEPS + 20,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer.rate()


def speech_throughput(out: Path, corpus: Path, device: str, small: bool) -> float:
    size = {} if small else dict(
        hidden_size=768, num_layers=12, heads=12, conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2)
    )
    encoder = HFSpeechEncoder(str(build_tiny_wavlm(out / "wavlm-base-shaped", **size)))
    wavs = [Path(u.audio_path) for u in parse_iemocap(corpus).utterances][:400]
    import soundfile as sf

    seconds = sum(sf.info(str(w)).duration for w in wavs)
    extract_features(encoder, [(str(w), None, None) for w in wavs[:32]], device=device, progress=False)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    extract_features(encoder, [(str(w), None, None) for w in wavs], device=device, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return seconds / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gpu-check")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="tiny encoders (a quick check of this script)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); use --device cpu --small")
        return 2
    out = Path(args.out).resolve()
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    precision = "bf16-mixed" if args.device == "cuda" else "32-true"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"gpu-check on {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}, precision {precision}")

    t0 = time.perf_counter()
    summary = run_demo_chain(out / "demo", accelerator, precision)
    rows = [f"{stage:<14} test wF1 {v['test']['weighted_f1']:.4f}  ({v['seconds']:.0f} s)" for stage, v in summary.items()]
    print("\n".join(["every stage on", *rows, f"chain: {time.perf_counter() - t0:.0f} s"]))

    corpus = out / "demo" / "data" / "IEMOCAP_full_release"
    utt_s, ms_step = text_throughput(out, corpus, accelerator, precision, args.small)
    shape = "tiny" if args.small else "RoBERTa-large-shaped"
    print(f"Stage I text training ({shape}, batch 32, {precision}): {utt_s:.0f} utt/s, {ms_step:.1f} ms/step")
    audio_s = speech_throughput(out, corpus, args.device, args.small)
    print(f"speech features ({'tiny' if args.small else 'WavLM-base-shaped'}): {audio_s:.0f} audio-s/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
