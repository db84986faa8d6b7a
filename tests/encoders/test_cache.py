"""The embedding cache: invalid entries are misses that get replaced, concurrent writers leave one valid entry,
keys carry device and precision, and a Stage I speech model refuses a speech encoder changed under it."""

from __future__ import annotations

import logging
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch

from meritsl_lightning.checkpoints import CheckpointMismatch
from meritsl_lightning.encoders.cache import EmbeddingCache, producer
from meritsl_lightning.models import FusionModule, SpeechUtteranceModule
from tests.stage_runner import StageChain

KEY = {"kind": "test", "model": "m", "split": "train"}


def _fill(cache: EmbeddingCache, value: torch.Tensor) -> torch.Tensor:
    return cache.get_or_compute(KEY, lambda: value)


def test_round_trip_and_hit(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    value = torch.randn(5, 3)
    _fill(cache, value)
    again = EmbeddingCache(tmp_path)
    assert torch.equal(_fill(again, torch.zeros(1)), value)
    assert (again.hits, again.misses) == (1, 0)
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file is left behind


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "flip_a_byte", "empty", "other_key", "bare_tensor"],
)
def test_an_invalid_entry_is_a_logged_miss_recomputed_and_replaced(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache(tmp_path)
    stale = torch.arange(4000, dtype=torch.float32)
    path = cache.put(KEY, stale)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 300)
    elif damage == "flip_a_byte":  # inside the tensor's data: torch.load alone would read it without complaint
        raw = bytearray(data)
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other_key":  # a file of another key under this name (e.g. copied by hand)
        shutil.copy(EmbeddingCache(tmp_path / "other").put({"kind": "other"}, stale), path)
    else:  # an entry written by the previous cache format: a bare tensor
        torch.save(stale, path)
    fresh = torch.ones(3)
    with caplog.at_level(logging.WARNING, logger="meritsl_lightning.encoders.cache"):
        got = EmbeddingCache(tmp_path).get_or_compute(KEY, lambda: fresh)
    assert torch.equal(got, fresh)  # recomputed, never the damaged tensor
    assert any("invalid" in r.getMessage() and path.name in r.getMessage() for r in caplog.records)
    reread = EmbeddingCache(tmp_path)
    assert torch.equal(_fill(reread, torch.zeros(1)), fresh) and reread.hits == 1  # replaced by a valid entry


def _racer(root: str, value: float, barrier: multiprocessing.synchronize.Barrier) -> None:
    cache = EmbeddingCache(root)
    barrier.wait()
    for _ in range(20):  # many overlapping writes of the same entry
        cache.put(KEY, torch.full((20000,), value))


def test_two_processes_filling_one_entry_leave_one_valid_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_racer, args=(str(tmp_path), v, barrier)) for v in (1.0, 2.0)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    value = EmbeddingCache(tmp_path).read(KEY)  # raises unless complete and of this key
    assert value.shape == (20000,) and value.unique().numel() == 1 and float(value[0]) in (1.0, 2.0)
    assert not list(tmp_path.rglob("*.tmp"))  # each writer renamed or removed its own temporary file


def test_keys_carry_device_type_and_precision() -> None:
    assert producer("cpu") == {"device": "cpu", "precision": "float32"}
    assert producer(torch.device("cuda", 1)) == {"device": "cuda", "precision": "bf16-autocast"}
    assert EmbeddingCache.key_hash({**KEY, **producer("cpu")}) != EmbeddingCache.key_hash({**KEY, **producer("cuda")})


def test_stage1_speech_refuses_a_speech_encoder_changed_under_it(chain: StageChain, tmp_path: Path) -> None:
    """A local Hugging Face speech model changes (re-trained or replaced) between Stage I and Stage II."""
    from meritsl_lightning.tiny_models import build_tiny_wavlm
    from meritsl_lightning.trainer_cli import MeritslCLI

    encoder = build_tiny_wavlm(tmp_path / "wavlm", hidden_size=16, num_layers=2, stable_layer_norm=False)
    stage1 = chain.fit("stage1_audio", f"--model.init_args.speech_encoder={encoder}", name="stage1_audio_stale")
    stage1_ckpt = stage1.trainer.checkpoint_callback.best_model_path
    stage2_args = [a for a in chain.model_args("stage2_audio") if "stage1_checkpoint" not in a]
    base = ["fit", *chain.common_args("stage2_audio_stale"), *stage2_args, f"--model.init_args.stage1_checkpoint={stage1_ckpt}"]
    stage2 = MeritslCLI(args=base)  # unchanged: Stage II trains
    stage2_ckpt = stage2.trainer.checkpoint_callback.best_model_path

    weights = next(p for p in Path(encoder).iterdir() if p.suffix == ".safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, weights)  # same path, new weights
    stale = r"stage1_checkpoint: .*best.ckpt was trained on features of the speech encoder .*which has changed since"
    with pytest.raises(ValueError, match=stale):  # Stage II, through the command line
        MeritslCLI(args=base)
    with pytest.raises(CheckpointMismatch, match="stage2_audio_checkpoint -> " + stale):  # Stage III, one stage further
        FusionModule(stage2_text_checkpoint=chain.checkpoints["stage2_text"], stage2_audio_checkpoint=stage2_ckpt, label_names=["hap", "sad", "neu", "ang"])
    with pytest.raises(CheckpointMismatch, match="trained on features of the speech encoder .* which has changed since"):
        SpeechUtteranceModule.load_from_checkpoint(stage1_ckpt)  # Stage I itself (validate, test, predict, frozen use)
