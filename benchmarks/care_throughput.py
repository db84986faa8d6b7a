"""CARE pre-training step and feature-extraction throughput at the paper's size (random weights).

A WavLM-base-shaped speech model and a RoBERTa-base-shaped text model (random, built locally) form a
base-sized CARE; one optimiser step is forward (both losses), backward and AdamW on a batch of 5 s crops
in bf16 autocast. Prints steps/s, peak GPU memory, the projected GPU-hours of the paper's recipe
(200 k steps at batch 128) and the frozen-feature extraction speed in audio-seconds per second.

    python benchmarks/care_throughput.py                        # CUDA, base size, batch 128 (64 if it does not fit)
    python benchmarks/care_throughput.py --device cpu --small    # the code path, tiny, on a CPU
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from meritsl_lightning.encoders.care import CAREModel
from meritsl_lightning.tiny_models import build_tiny_roberta, build_tiny_wavlm

PAPER_STEPS, PAPER_BATCH, CROP = 200_000, 128, 80_000


def build(out: Path, small: bool) -> CAREModel:
    if small:
        wavlm = build_tiny_wavlm(out / "wavlm-small", hidden_size=32, num_layers=4, stable_layer_norm=False)
        roberta = build_tiny_roberta(out / "roberta-small", ["some words to train a tokenizer"] * 8, hidden_size=32, num_layers=2)
        return CAREModel.from_pretrained(str(wavlm), str(roberta), shared_layers=2)
    wavlm = build_tiny_wavlm(
        out / "wavlm-base-shaped", hidden_size=768, num_layers=12, heads=12, conv_dim=(512,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), stable_layer_norm=False,
    )  # fmt: skip
    roberta = build_tiny_roberta(
        out / "roberta-base-shaped", ["some words to train a tokenizer"] * 8, hidden_size=768, num_layers=12, heads=12, max_positions=514
    )
    return CAREModel.from_pretrained(str(wavlm), str(roberta), shared_layers=6)


def train_steps(model: CAREModel, batch: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds per optimiser step (after 3 warm-up steps) and peak memory in GiB."""
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.99), eps=1e-6)
    waves = torch.randn(batch, CROP, device=device) * 0.1
    lengths = torch.full((batch,), CROP, device=device)
    teacher = torch.randn(batch, model.width, device=device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 3):
        if i == 3:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = model(waves, lengths)
            target = torch.zeros_like(out.acoustic)
            loss = F.mse_loss(out.semantic.float(), teacher) + F.mse_loss(out.acoustic.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return seconds, peak


@torch.inference_mode()
def extraction_speed(model: CAREModel, device: torch.device, batch: int = 32) -> float:
    """Audio-seconds per second of ``layer_features`` on 5 s clips."""
    model.to(device).eval()
    waves = torch.randn(batch, CROP, device=device) * 0.1
    lengths = torch.full((batch,), CROP, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        model.layer_features(waves, lengths)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            model.layer_features(waves, lengths)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 5 * batch * CROP / 16000 / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true")
    p.add_argument("--batch", type=int, default=None, help=f"default {PAPER_BATCH} on CUDA (halved until it fits), 4 on CPU")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out", default="runs/benchmarks/care")
    args = p.parse_args()
    device = torch.device(args.device)
    out = Path(args.out)
    model = build(out, args.small)
    batch = args.batch or (PAPER_BATCH if device.type == "cuda" else 4)
    steps = args.steps or (20 if device.type == "cuda" else 3)
    while True:
        try:
            seconds, peak = train_steps(model, batch, steps, device)
            break
        except torch.OutOfMemoryError:
            if batch <= 8:
                raise
            batch //= 2
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    per_paper_step = seconds * PAPER_BATCH / batch  # gradient accumulation reaches batch 128 when it does not fit
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "size": "tiny" if args.small else "base (WavLM-base + RoBERTa-base shaped)",
        "batch": batch,
        "seconds_per_step": round(seconds, 4),
        "crops_per_second": round(batch / seconds, 1),
        "peak_memory_gib": round(peak, 1),
        "projected_gpu_hours_200k_steps_batch_128": round(PAPER_STEPS * per_paper_step / 3600, 1),
        "extraction_audio_seconds_per_second": round(extraction_speed(model, device), 0),
    }
    print(json.dumps(result, indent=1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
