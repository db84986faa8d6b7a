"""Frozen speech-encoder feature extraction: a naive loop, the best plain loop and ours, in one process.

The encoder is WavLM-base-shaped (``WavLMConfig()``'s defaults are WavLM-base's architecture; random weights,
built locally) or a tiny WavLM with ``--small``. Utterance lengths are drawn from MELD's distribution (mean
3.1 s, median 2.5 s). Every row pools all hidden states over each utterance's valid frames
(``HFSpeechEncoder``); batches hold at most ``--batch-seconds`` of audio.

- naive: fp32, random order, each batch padded to its longest utterance;
- plain: bf16 autocast (CUDA), length-sorted, padded to the longest (performance.md's best plain loop);
- ours:  ``extract_features``: length-sorted, lengths rounded up to 0.5 s so batch shapes repeat, bf16 on CUDA,
  the next batch decoded from the WAV files in loader threads while the current one runs.

The plain loops get their waveforms already in memory (no decoding in their time); ours reads the files. Each
variant first runs a short warm-up on other audio, then one timed pass (a real extraction is one pass).
Prints audio-seconds per second, the ratios, peak GPU memory and the largest feature difference to the
naive loop.

    python benchmarks/speech_extraction_throughput.py                       # CUDA, WavLM-base-shaped
    python benchmarks/speech_extraction_throughput.py --device cpu --small  # the code path, tiny, on a CPU
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import soundfile as sf
import torch

from meritsl_lightning.encoders.speech import HFSpeechEncoder, extract_features
from meritsl_lightning.tiny_models import build_tiny_wavlm

SAMPLE_RATE = 16000
MELD_MEDIAN_S, MELD_MEAN_S = 2.5, 3.1
TARGET_AUDIO_S, TARGET_RATIO = 2000.0, 1.5


def meld_like_durations(n: int, seed: int) -> list[float]:
    """Log-normal durations with MELD's median and mean, clipped to [0.3, 30] s."""
    mu = math.log(MELD_MEDIAN_S)
    sigma = math.sqrt(2 * math.log(MELD_MEAN_S / MELD_MEDIAN_S))
    rng = random.Random(seed)
    return [min(max(rng.lognormvariate(mu, sigma), 0.3), 30.0) for _ in range(n)]


def write_corpus(folder: Path, durations: list[float], seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for i, seconds in enumerate(durations):
        path = folder / f"utt{i:05d}.wav"
        if not path.is_file():
            sf.write(path, (0.1 * torch.randn(int(seconds * SAMPLE_RATE), generator=gen)).numpy(), SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def build_encoder(out: Path, small: bool) -> HFSpeechEncoder:
    if small:
        return HFSpeechEncoder(build_tiny_wavlm(out / "wavlm-tiny"))
    folder = out / "wavlm-base-shaped"
    if not (folder / "config.json").is_file():
        from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

        torch.manual_seed(0)
        WavLMModel(WavLMConfig()).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=True).save_pretrained(folder)  # fmt: skip
    return HFSpeechEncoder(folder)


def batches_by_real_seconds(order: list[int], durations: list[float], budget: float) -> list[list[int]]:
    out: list[list[int]] = [[]]
    total = 0.0
    for i in order:
        if out[-1] and total + durations[i] > budget:
            out.append([])
            total = 0.0
        out[-1].append(i)
        total += durations[i]
    return out


def plain_loop(encoder: HFSpeechEncoder, waves: list[torch.Tensor], batches: list[list[int]], device: torch.device, bf16: bool) -> torch.Tensor:
    out = torch.zeros(len(waves), encoder.num_layers, encoder.feature_dim)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in batches:
            out[batch] = encoder([waves[i] for i in batch]).float().cpu()
    return out


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float, float]:
    """(result, seconds, peak GiB) of one call."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return result, seconds, peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="a tiny WavLM (to check this script on a CPU)")
    p.add_argument("--utterances", type=int, default=None, help="default 1000 (CUDA), 40 (CPU)")
    p.add_argument("--batch-seconds", type=float, default=64.0)
    p.add_argument("--workers", type=int, default=4, help="decoding threads of our loop")
    p.add_argument("--out", default="runs/benchmarks/speech-extraction")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu --small")
        return 2
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    out = Path(args.out)
    n = args.utterances or (1000 if cuda else 40)
    durations = meld_like_durations(n, seed=0)
    paths = write_corpus(out / "audio", durations, seed=0)
    warm_paths = write_corpus(out / "warmup", meld_like_durations(8, seed=1), seed=1)
    waves = [torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in paths]
    seconds = sum(w.numel() for w in waves) / SAMPLE_RATE
    encoder = build_encoder(out, args.small).to(device)
    warm = [torch.from_numpy(sf.read(path, dtype="float32")[0]) for path in warm_paths]

    shuffled = list(range(n))
    random.Random(0).shuffle(shuffled)
    sorted_order = sorted(range(n), key=lambda i: durations[i])
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "naive (fp32, random order, padded)": lambda: plain_loop(encoder, waves, batches_by_real_seconds(shuffled, durations, args.batch_seconds), device, False),
        "plain (bf16 autocast, sorted, padded)": lambda: plain_loop(encoder, waves, batches_by_real_seconds(sorted_order, durations, args.batch_seconds), device, cuda),
        "ours (extract_features)": lambda: extract_features(encoder, [(str(path), None, None) for path in paths], device=device,
                                                            max_batch_seconds=args.batch_seconds, progress=False, num_workers=args.workers),
    }  # fmt: skip
    results, features = {}, {}
    for name, fn in variants.items():
        bf16 = cuda and not name.startswith("naive")
        plain_loop(encoder, warm, [list(range(len(warm)))], device, bf16)  # warm-up on other audio
        features[name], wall, peak = timed(fn, device)
        results[name] = {"audio_s_per_s": seconds / wall, "seconds": wall, "peak_gib": peak}
    naive, plain, ours = results.values()
    reference = next(iter(features.values()))
    for name, feats in features.items():
        results[name]["max_abs_diff_to_naive"] = float((feats - reference).abs().max())
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"speech feature extraction, {'tiny WavLM' if args.small else 'WavLM-base-shaped'}, {n} utterances = {seconds:.0f} s of audio, "
          f"batches <= {args.batch_seconds:.0f} s, {name}")  # fmt: skip
    for label, r in results.items():
        peak = f"{r['peak_gib']:.2f} GiB" if cuda else "n/a"
        print(f"  {label:<40} {r['audio_s_per_s']:9.1f} audio-s/s  peak {peak:>10}  max |diff| to naive {r['max_abs_diff_to_naive']:.2e}")
    ratios = {"ours/naive": ours["audio_s_per_s"] / naive["audio_s_per_s"], "ours/plain": ours["audio_s_per_s"] / plain["audio_s_per_s"]}
    print(f"  ours / naive = {ratios['ours/naive']:.2f}   ours / plain = {ratios['ours/plain']:.2f}")
    met = ours["audio_s_per_s"] >= TARGET_AUDIO_S and ratios["ours/plain"] >= TARGET_RATIO
    if cuda and not args.small:
        print(f"  target: >= {TARGET_AUDIO_S:.0f} audio-s/s and >= {TARGET_RATIO}x plain: {'met' if met else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"device": name, "small": args.small, "utterances": n, "audio_seconds": seconds, "rows": results, "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
