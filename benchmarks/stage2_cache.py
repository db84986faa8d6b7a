"""Stage II epoch time with the embedding cache against recomputing the frozen Stage I encoders per batch.

Uses the demo corpus and the demo's Stage I checkpoints (trains them first when missing):
    python benchmarks/stage2_cache.py [--demo-dir runs/demo]
Target: the cached epoch is >= 50x faster than the recomputing one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from data_modules import IEMOCAPDataModule
from meritsl_lightning.encoders.speech import extract_features
from meritsl_lightning.models import ContextModule

TARGET = 50.0


def stage1_checkpoints(demo_dir: Path) -> dict[str, str]:
    summary = demo_dir / "summary.json"
    done = json.loads(summary.read_text()) if summary.is_file() else {}
    if not {"stage1_text", "stage1_audio"} <= set(done):
        cmd = [sys.executable, "-m", "meritsl_lightning", "demo", "--out", str(demo_dir), "--stages", "stage1_text", "stage1_audio"]
        subprocess.run(cmd, check=True)
        done = json.loads(summary.read_text())
    return {m: done[f"stage1_{m}"]["checkpoint"] for m in ("text", "audio")}


def recompute_stage1(model: ContextModule, rows: list) -> torch.Tensor:
    """What Stage II would do per batch without a cache: run the frozen Stage I on the batch's utterances."""
    stage1 = model.frozen(model.upstream)
    with torch.inference_mode():
        if model.modality == "text":
            return stage1.embed_texts([u.text for u in rows]).clone()
        features = extract_features(stage1.speech_encoder, [(u.audio_path, None, None) for u in rows], progress=False)
        return stage1.head.embedding(features).clone()


def epoch(model: ContextModule, dm: IEMOCAPDataModule, cached: bool) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    table = model._inputs["train"]
    rows = dm.split_data("train").rows
    model.train()
    start = time.perf_counter()
    for batch in dm.train_dataloader():
        index, mask = batch["index"], batch["mask"]
        if cached:
            inputs = table[index]
        else:
            flat = index[mask].tolist()
            inputs = torch.zeros(*index.shape, table.shape[1])
            inputs[mask] = recompute_stage1(model, [rows[i] for i in flat])
        logits = model.classifier(model.context(inputs, mask))
        loss = torch.nn.functional.cross_entropy(logits[mask], batch["labels"][mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def paper_sized_text(demo_dir: Path, batch_size: int) -> float:
    """The same comparison with a RoBERTa-large-shaped (random) text encoder in place of the demo's tiny one."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from meritsl_lightning.nn import ContextEncoder

    tokenizer = AutoTokenizer.from_pretrained(demo_dir / "models" / "roberta")
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    encoder = RobertaModel(config).eval()

    @torch.inference_mode()
    def embed(texts: list[str]) -> torch.Tensor:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        return encoder(**enc).last_hidden_state[:, 0].clone()

    dm = IEMOCAPDataModule(root=str(demo_dir / "data" / "IEMOCAP_full_release"), batch_size=batch_size)
    dm.use_batch_level("conversation")
    rows = dm.split_data("train").rows
    t0 = time.perf_counter()
    table = torch.cat([embed([u.text for u in rows[i : i + 64]]) for i in range(0, len(rows), 64)])
    fill = time.perf_counter() - t0
    context = ContextEncoder(1024, hidden_size=32, num_heads=2)
    head = torch.nn.Linear(64, dm.num_classes)
    optimizer = torch.optim.AdamW([*context.parameters(), *head.parameters()], lr=1e-3)

    def run(cached: bool) -> float:
        start = time.perf_counter()
        for batch in dm.train_dataloader():
            index, mask = batch["index"], batch["mask"]
            if cached:
                inputs = table[index]
            else:
                inputs = torch.zeros(*index.shape, 1024)
                inputs[mask] = embed([rows[i].text for i in index[mask].tolist()])
            logits = head(context(inputs, mask))
            loss = torch.nn.functional.cross_entropy(logits[mask], batch["labels"][mask])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    cached = min(run(True) for _ in range(3))
    recomputed = run(False)
    print(
        f"stage2_text, RoBERTa-large-shaped Stage I ({sum(p.numel() for p in encoder.parameters()) / 1e6:.0f} M parameters): "
        f"cache fill {fill:.1f} s once | epoch with cache {cached * 1000:.0f} ms | recomputing Stage I {recomputed:.1f} s | "
        f"{recomputed / cached:.0f}x (target >= {TARGET:.0f}x)"
    )
    return recomputed / cached


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-dir", default="runs/demo")
    p.add_argument("--batch-size", type=int, default=8, help="dialogues per Stage II batch (paper default 8)")
    p.add_argument("--paper-sized-text", action="store_true", help="also time a RoBERTa-large-shaped Stage I text encoder")
    args = p.parse_args()
    demo_dir = Path(args.demo_dir).resolve()
    checkpoints = stage1_checkpoints(demo_dir)
    torch.manual_seed(0)
    ok = True
    for modality, ckpt in checkpoints.items():
        dm = IEMOCAPDataModule(root=str(demo_dir / "data" / "IEMOCAP_full_release"), batch_size=args.batch_size)
        dm.use_batch_level("conversation")
        model = ContextModule(ckpt, hidden_size=32, num_heads=2, label_names=dm.label_names, cache_dir=str(demo_dir / "cache"))
        data = dm.split_data("train")
        t0 = time.perf_counter()
        model._inputs["train"] = model.prepare_split(data, torch.device("cpu"))
        fill = time.perf_counter() - t0
        cached = min(epoch(model, dm, cached=True) for _ in range(3))
        recomputed = epoch(model, dm, cached=False)
        speedup = recomputed / cached
        ok &= speedup >= TARGET
        print(
            f"stage2_{modality}: {len(data.rows)} train utterances in {len(data.conversations)} conversations | "
            f"cache lookup {fill:.2f} s once | epoch with cache {cached * 1000:.0f} ms | "
            f"recomputing Stage I {recomputed:.2f} s | {speedup:.0f}x (target >= {TARGET:.0f}x)"
        )
    if args.paper_sized_text:
        ok = paper_sized_text(demo_dir, args.batch_size) >= TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
