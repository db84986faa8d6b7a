"""GPU check: every stage for a few steps on CUDA in bf16 (the demo chain, CARE included), then throughput figures.

    python benchmarks/gpu_check.py                # on a CUDA machine (what `make gpu-check` runs)
    python benchmarks/gpu_check.py --device cpu --small   # the same code path, tiny, on a CPU

Throughput rows (random weights):
- text pre-training / Stage I text step, RoBERTa-large-shaped, batch 32: LightningModule vs plain loop
  (benchmarks/text_pretrain_throughput.py);
- frozen speech-encoder feature extraction, WavLM-base-shaped: audio seconds per second;
- Stage II epoch with the embedding cache vs recomputing Stage I (benchmarks/stage2_cache.py);
- CARE pre-training steps at base size (batch 128 of 5 s crops): seconds/step, peak memory, projected
  GPU-hours of the paper's 200 k steps, and CARE feature extraction speed (benchmarks/care_throughput.py).
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

from data_modules.iemocap_parser import parse_iemocap
from meritsl_lightning.encoders.speech import HFSpeechEncoder, extract_features
from meritsl_lightning.tiny_models import build_tiny_wavlm


def run_demo_chain(out: Path, accelerator: str, precision: str, size: int | None = None) -> dict:
    cmd = [
        sys.executable, "-m", "meritsl_lightning", "demo", "--out", str(out), *(["--size", str(size)] if size else []),
        f"--trainer.accelerator={accelerator}", f"--trainer.precision={precision}",
        "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
    ]
    subprocess.run(cmd, check=True)
    return json.loads((out / "summary.json").read_text())


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
    p.add_argument("--demo-size", type=int, default=None, help="dialogues per session of the demo corpus (default: the demo's)")
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
    summary = run_demo_chain(out / "demo", accelerator, precision, args.demo_size)
    rows = [
        f"{stage:<18} " + (f"test wF1 {v['test']['weighted_f1']:.4f}" if "test" in v else f"val loss {v['validation']['loss']:.4f}")
        + f"  ({v['seconds']:.0f} s)"
        for stage, v in summary.items()
    ]
    print("\n".join(["every stage on", *rows, f"chain: {time.perf_counter() - t0:.0f} s"]))

    corpus = out / "demo" / "data" / "IEMOCAP_full_release"
    bench = Path(__file__).resolve().parent
    small = ["--small"] if args.small else []
    # Stage I text / pre-training step: the LightningModule against a plain loop
    subprocess.run([sys.executable, str(bench / "text_pretrain_throughput.py"), "--device", args.device, "--out", str(out / "text"), *small])
    subprocess.run([sys.executable, str(bench / "stage2_cache.py"), "--demo-dir", str(out / "demo")])
    subprocess.run([sys.executable, str(bench / "care_throughput.py"), "--device", args.device, "--out", str(out / "care"), *small])
    audio_s = speech_throughput(out, corpus, args.device, args.small)
    print(f"speech features ({'tiny' if args.small else 'WavLM-base-shaped'}): {audio_s:.0f} audio-s/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
