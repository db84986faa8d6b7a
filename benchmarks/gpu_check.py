"""GPU check: every stage for a few steps on CUDA in bf16, then the throughput benchmarks, within 8 minutes.

    python benchmarks/gpu_check.py                        # on a CUDA machine (what `make gpu-check` runs)
    python benchmarks/gpu_check.py --device cpu --small   # the same code path, tiny, on a CPU

Parts, each a child process with its own time limit (the limits add up to 8 minutes; a part that runs over
is stopped and reported, the others still run):
- the demo chain, every stage (CARE included) for two epochs (``meritsl demo``);
- the text training step, RoBERTa-large-shaped, batch 32: naive loop, best plain loop, our eager and fast
  steps (benchmarks/text_pretrain_throughput.py; prints the compile time per shape, paid once per shape);
- speech feature extraction, WavLM-base-shaped: naive loop, best plain loop, ours
  (benchmarks/speech_extraction_throughput.py);
- a Stage II epoch with the embedding cache against recomputing Stage I (benchmarks/stage2_cache.py);
- CARE pre-training steps at base size and CARE feature extraction (benchmarks/care_throughput.py);
- transcription with faster-whisper, batched, ``compute_type`` bfloat16 and int8_float16 (a tiny random
  Whisper: this checks the CUDA path and CTranslate2's CUDA 12 libraries, it is not a throughput figure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# seconds per part on CUDA, 8 minutes in all (transcription: per compute type, two of them); the text part,
# which compiles its step once per shape, gets the most; on a CPU nothing is cut short
BUDGET = {"demo": 60, "text": 270, "speech": 45, "stage2": 20, "care": 45, "transcribe": 20}
CUBLAS_HINT = (
    "CTranslate2 (faster-whisper) needs CUDA 12's cuBLAS, which PyTorch's CUDA 13 wheels do not bring: "
    "pip install nvidia-cublas-cu12 and put its lib folder on LD_LIBRARY_PATH, e.g. "
    'export LD_LIBRARY_PATH="$(python -c "import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__))")/lib:$LD_LIBRARY_PATH"'
)


def run_part(name: str, cmd: list[str], limit: float | None) -> tuple[int | None, str, float]:
    """Run one part, echoing its output; (exit status or None when stopped, output, seconds)."""
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code = None
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        output += (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    seconds = time.perf_counter() - start
    shown = [line for line in output.splitlines() if not line.startswith(("Loading weights", "Writing model", "💡"))]
    print("\n".join(shown[-40:]))
    status = "stopped at its time limit" if code is None else f"exit {code}"
    print(f"--- {name}: {status}, {seconds:.0f} s", flush=True)
    return code, output, seconds


def transcription_parts(out: Path, corpus_wavs: Path, device: str, limit: float | None) -> dict:
    from meritsl_lightning.tiny_whisper import build_tiny_whisper_ct2

    model = build_tiny_whisper_ct2(out / "whisper-tiny-ct2")
    results = {}
    for compute_type in ("bfloat16", "int8_float16") if device == "cuda" else ("int8",):
        cmd = [
            sys.executable, "-m", "meritsl_lightning", "transcribe", "--input", str(corpus_wavs), "--model", str(model),
            "--out", str(out / f"transcripts-{compute_type}.jsonl"), "--device", device, "--compute-type", compute_type,
            "--batch-size", "16", "--beam-size", "1", "--language", "en", "--no-progress", "--retry-errors",
        ]  # fmt: skip
        (out / f"transcripts-{compute_type}.jsonl").unlink(missing_ok=True)
        code, output, seconds = run_part(f"transcription ({compute_type})", cmd, limit)
        if "libcublas" in output or "libcudnn" in output:
            print(f"hint: {CUBLAS_HINT}")
        results[compute_type] = {"exit": code, "seconds": round(seconds, 1), "last_line": output.strip().splitlines()[-1:] or [""]}
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gpu-check")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="tiny encoders (a quick check of this script)")
    p.add_argument("--demo-size", type=int, default=1, help="dialogues per session of the demo corpus")
    p.add_argument("--skip", nargs="*", default=[], choices=sorted(BUDGET), help="parts to leave out")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); use --device cpu --small")
        return 2
    cuda = args.device == "cuda"
    out = Path(args.out).resolve()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    limit = {k: (v if cuda else None) for k, v in BUDGET.items()}
    py, small = sys.executable, ["--small"] if args.small else []
    print(f"gpu-check on {torch.cuda.get_device_name() if cuda else 'cpu'}; time limits (s): {limit}", flush=True)
    t0 = time.perf_counter()
    summary: dict = {}
    if "demo" not in args.skip:
        precision = "bf16-mixed" if cuda else "32-true"
        cmd = [py, "-m", "meritsl_lightning", "demo", "--out", str(out / "demo"), "--size", str(args.demo_size),
               f"--trainer.accelerator={'gpu' if cuda else 'cpu'}", f"--trainer.precision={precision}",
               "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"]  # fmt: skip
        code, _, seconds = run_part("every stage (demo chain, 2 epochs)", cmd, limit["demo"])
        stages = json.loads((out / "demo" / "summary.json").read_text()) if (out / "demo" / "summary.json").is_file() else {}
        summary["demo"] = {"exit": code, "seconds": round(seconds, 1), "stages": sorted(stages)}
    benchmarks = {
        "text": [py, str(BENCH / "text_pretrain_throughput.py"), "--device", args.device, "--out", str(out / "text"), *small],
        "speech": [py, str(BENCH / "speech_extraction_throughput.py"), "--device", args.device, "--out", str(out / "speech"), *small],
        "care": [py, str(BENCH / "care_throughput.py"), "--device", args.device, "--out", str(out / "care"), *small],
    }
    if (out / "demo" / "summary.json").is_file():
        benchmarks["stage2"] = [py, str(BENCH / "stage2_cache.py"), "--demo-dir", str(out / "demo")]
    for name, cmd in benchmarks.items():
        if name in args.skip:
            continue
        if name in ("text", "speech"):
            cmd += ["--json", str(out / f"{name}.json")]
        code, output, seconds = run_part(name, cmd, limit[name])
        # a benchmark's own exit status says whether it met its target; only a traceback is a failure here
        summary[name] = {"exit": code, "seconds": round(seconds, 1), "crashed": "Traceback (most recent call last)" in output}
        if (out / f"{name}.json").is_file() and name in ("text", "speech"):
            summary[name]["result"] = json.loads((out / f"{name}.json").read_text())
    wavs = out / "demo" / "data" / "IEMOCAP_full_release"
    if "transcribe" not in args.skip and wavs.is_dir():
        summary["transcribe"] = transcription_parts(out, wavs, args.device, limit["transcribe"])
    total = time.perf_counter() - t0
    summary["total_seconds"] = round(total, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ngpu-check: {total:.0f} s in all; parts: " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in summary.items() if isinstance(v, dict) and "seconds" in v))
    failed = [k for k, v in summary.items() if isinstance(v, dict) and (v.get("crashed") or (k == "demo" and v["exit"] != 0))]
    if failed:
        print(f"gpu-check: failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
