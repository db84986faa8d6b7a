"""Training survives a kill: atomic checkpoints, a periodic resumable checkpoint, and a run killed with SIGKILL
mid-epoch that, resumed with ``meritsl fit --resume``, ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import RandomSampler

from data_modules.batching import BucketBatchSampler, IndexDataset, ResumableDataLoader
from meritsl_lightning.resume import (
    FINISHED_MARKER,
    AtomicModelCheckpoint,
    capture_rng,
    newest_checkpoint,
    restore_rng,
    resume_point,
)
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.stage_runner import StageChain

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
SAVE_EVERY = 2  # optimizer steps between periodic checkpoints
# batch sizes that give every stage several batches per epoch on the fixture corpus (12 train utterances, 4 dialogues)
BATCH_SIZE = {"stage1_text": 3, "stage1_audio": 3, "stage2_text": 1, "stage2_audio": 1, "stage3": 1}


# -- the sampler and loader state ------------------------------------------------------------------------------
def _sampler(item_seeds: bool = False) -> BucketBatchSampler:
    lengths = [(i * 7) % 13 for i in range(40)]
    return BucketBatchSampler(RandomSampler(IndexDataset(40)), 4, drop_last=False, lengths=lengths, bucket_multiplier=2, item_seeds=item_seeds)


@pytest.mark.parametrize("item_seeds", [False, True])
def test_sampler_resumes_mid_epoch_with_the_same_order_and_leaves_the_global_generator_alone(item_seeds: bool) -> None:
    torch.manual_seed(3)
    sampler = _sampler(item_seeds)
    epoch = list(iter(sampler))
    sampler.consumed = 4
    state = sampler.state_dict()
    after_epoch = torch.get_rng_state()

    torch.manual_seed(99)  # a fresh process: any other generator state
    resumed = _sampler(item_seeds)
    resumed.load_state_dict(state)
    before = torch.get_rng_state()
    assert list(iter(resumed)) == epoch[4:]
    assert torch.equal(torch.get_rng_state(), before)  # the replay drew nothing from the global generator
    assert resumed.consumed == 4
    # the epoch after the resumed one is the uninterrupted run's next epoch when the generator is where it was
    torch.set_rng_state(after_epoch)
    expected_next = list(iter(sampler))
    torch.set_rng_state(after_epoch)
    assert list(iter(resumed)) == expected_next


def test_a_complete_epoch_in_the_state_starts_the_next_one() -> None:
    torch.manual_seed(0)
    sampler = _sampler()
    list(iter(sampler))
    sampler.consumed = len(sampler)
    state = sampler.state_dict()
    rng = torch.get_rng_state()
    fresh = _sampler()
    fresh.load_state_dict(state)
    assert not fresh.resuming_mid_epoch
    torch.set_rng_state(rng)
    nxt = list(iter(fresh))
    torch.set_rng_state(rng)
    assert nxt == list(iter(sampler)) and len(nxt) == len(sampler)


def test_resumable_loader_round_trips_its_sampler_state() -> None:
    torch.manual_seed(1)
    loader = ResumableDataLoader(IndexDataset(40), batch_sampler=_sampler(), collate_fn=lambda b: b)
    batches = list(loader)
    loader.batch_sampler.consumed = 3
    other = ResumableDataLoader(IndexDataset(40), batch_sampler=_sampler(), collate_fn=lambda b: b)
    other.load_state_dict(loader.state_dict())
    before = torch.get_rng_state()
    assert list(other) == batches[3:]
    assert torch.equal(torch.get_rng_state(), before)  # re-creating the iterator drew no worker seed globally


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    torch.save({"rng": capture_rng()}, tmp_path / "r.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    restore_rng(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


# -- atomic saves and the newest checkpoint --------------------------------------------------------------------
class _Boom(RuntimeError):
    pass


def test_a_save_that_dies_half_way_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")

    class Trainer:
        is_global_zero = True
        global_step = 7
        loggers: list = []

        def save_checkpoint(self, path: Path, weights_only: bool = False) -> None:
            Path(path).write_bytes(b"half a chec")
            raise _Boom("killed while writing")

    callback = AtomicModelCheckpoint(dirpath=tmp_path)
    with pytest.raises(_Boom):
        callback._save_checkpoint(Trainer(), str(target))
    assert target.read_bytes() == b"the previous checkpoint"
    assert not list(tmp_path.glob("*.ckpt.*")) or all(p.name.startswith(".") for p in tmp_path.glob("*.partial"))
    assert newest_checkpoint(tmp_path) is None  # neither file is a training checkpoint


def test_newest_checkpoint_is_the_one_with_the_most_training_and_torn_files_are_skipped(tmp_path: Path) -> None:
    torch.save({"loops": {}, "global_step": 6}, tmp_path / "resume.ckpt")
    torch.save({"loops": {}, "global_step": 4}, tmp_path / "last.ckpt")
    torch.save({"loops": {}, "global_step": 4}, tmp_path / "best.ckpt")
    (tmp_path / "resume.ckpt").touch()
    assert newest_checkpoint(tmp_path) == tmp_path / "resume.ckpt"
    data = (tmp_path / "resume.ckpt").read_bytes()
    (tmp_path / "resume.ckpt").write_bytes(data[: len(data) // 2])  # torn
    assert newest_checkpoint(tmp_path).name in ("last.ckpt", "best.ckpt")


def test_resume_point_picks_the_newest_version_folder(tmp_path: Path) -> None:
    for v in (0, 2, 10):
        (tmp_path / "stage" / f"version_{v}" / "checkpoints").mkdir(parents=True)
    torch.save({"loops": {}, "global_step": 3}, tmp_path / "stage" / "version_10" / "checkpoints" / "last.ckpt")
    point = resume_point(tmp_path, "stage", None)
    assert point.version == "version_10" and point.checkpoint.name == "last.ckpt" and not point.finished
    (tmp_path / "stage" / "version_10" / FINISHED_MARKER).write_text("")
    assert resume_point(tmp_path, "stage", None).finished
    assert resume_point(tmp_path, "stage", 2).checkpoint is None
    assert resume_point(tmp_path, "other", None).version == "version_0"


# -- kill and resume through the real command line -------------------------------------------------------------
RESUME_OPTIONS = [
    f"--trainer.max_epochs={EPOCHS}",
    "--trainer.deterministic=true",
    "--trainer.log_every_n_steps=1",
    f"--resume_checkpoint.every_n_train_steps={SAVE_EVERY}",
    "--resume_checkpoint.every_n_minutes=null",
    "--test_after_fit=false",
]
ArgsFor = Callable[[str], list[str]]  # run name -> fit arguments (without the subcommand)


def _stage_args(chain: StageChain, stage: str) -> ArgsFor:
    return lambda name: [
        *chain.common_args(name), *chain.model_args(stage), f"--data.init_args.batch_size={BATCH_SIZE[stage]}", *RESUME_OPTIONS
    ]


def _kill_at(args: list[str], step: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    kill = ["--trainer.callbacks+=tests.kill_at_step.KillAtStep", f"--trainer.callbacks.step={step}"]
    return subprocess.run(
        [sys.executable, "-m", "meritsl_lightning", "fit", *args, *kill], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def _best(cli: MeritslCLI) -> tuple[float, dict[str, torch.Tensor]]:
    callback = cli.trainer.checkpoint_callback
    best = torch.load(callback.best_model_path, map_location="cpu", weights_only=True)
    return float(callback.best_model_score), best["state_dict"]


def _assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), f"{what} differ: {key}"


def assert_kill_and_resume_matches(save_dir: Path, args_for: ArgsFor, name: str, kill_step: int, monitor: str) -> None:
    """Uninterrupted run vs. a run SIGKILLed after ``kill_step`` optimizer steps (mid-epoch) and resumed."""
    reference = MeritslCLI(args=["fit", *args_for(f"{name}_reference")])
    killed = _kill_at(args_for(name), kill_step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = save_dir / name / "version_0"
    periodic = torch.load(run_dir / "checkpoints" / "resume.ckpt", map_location="cpu", weights_only=True)
    batches_per_epoch = reference.trainer.num_training_batches
    assert periodic["global_step"] == kill_step and kill_step % batches_per_epoch != 0  # killed mid-epoch
    assert not (run_dir / FINISHED_MARKER).exists()

    resumed = MeritslCLI(args=["fit", *args_for(name), "--resume=true"])
    assert Path(resumed.trainer.log_dir) == run_dir  # the same run folder, no version_1
    assert resumed.trainer.global_step == reference.trainer.global_step == EPOCHS * batches_per_epoch
    score, best_weights = _best(resumed)
    ref_score, ref_best_weights = _best(reference)
    assert Path(resumed.trainer.checkpoint_callback.best_model_path).parent.parent == run_dir
    assert score == ref_score
    _assert_same_tensors(best_weights, ref_best_weights, "best-checkpoint weights")
    _assert_same_tensors(resumed.model.state_dict(), reference.model.state_dict(), "final weights")
    end = torch.load(run_dir / "checkpoints" / "resume.ckpt", map_location="cpu", weights_only=True)
    assert end["global_step"] == EPOCHS * batches_per_epoch  # the epoch-end checkpoint of the last epoch
    # the history before the checkpoint is kept and every epoch's validation is logged once
    with open(run_dir / "metrics.csv") as f:
        logged = [r[monitor] for r in csv.DictReader(f) if r.get(monitor)]
    with open(Path(reference.trainer.log_dir) / "metrics.csv") as f:
        assert logged == [r[monitor] for r in csv.DictReader(f) if r.get(monitor)] and len(logged) == EPOCHS
    assert (run_dir / FINISHED_MARKER).is_file()
    # a second --resume of the finished run trains nothing
    with pytest.raises(SystemExit) as done:
        MeritslCLI(args=["fit", *args_for(name), "--resume=true"])
    assert done.value.code == 0


def test_stage2_killed_mid_epoch_resumes_to_the_uninterrupted_result(chain: StageChain) -> None:
    assert_kill_and_resume_matches(chain.root / "runs", _stage_args(chain, "stage2_text"), "stage2_text_kill", 6, "val/weighted_f1")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["stage1_text", "stage1_audio", "stage2_audio", "stage3"])
def test_every_stage_killed_mid_epoch_resumes_to_the_uninterrupted_result(chain: StageChain, stage: str) -> None:
    assert_kill_and_resume_matches(chain.root / "runs", _stage_args(chain, stage), f"{stage}_kill", 6, "val/weighted_f1")


@pytest.mark.slow
def test_text_pretraining_killed_mid_epoch_resumes_to_the_uninterrupted_result(chain: StageChain, tmp_path: Path) -> None:
    from tests.models.test_text_pretrain import write_silver

    silver = write_silver(tmp_path / "silver.jsonl")

    def args_for(name: str) -> list[str]:
        return [*chain.text_pretrain_args(name, silver), *RESUME_OPTIONS]

    assert_kill_and_resume_matches(chain.root / "runs", args_for, "text_pretrain_kill", 6, "val/weighted_f1")


@pytest.mark.slow
def test_care_pretraining_killed_mid_epoch_resumes_to_the_uninterrupted_result(chain: StageChain, tmp_path: Path) -> None:
    from meritsl_lightning.tiny_models import build_tiny_wavlm
    from tests.models.test_care_pretrain import care_args, write_transcripts

    wavlm = build_tiny_wavlm(tmp_path / "wavlm", hidden_size=16, num_layers=4, stable_layer_norm=False)
    transcripts = write_transcripts(chain, tmp_path / "transcripts.jsonl")

    def args_for(name: str) -> list[str]:
        return [*care_args(tmp_path, wavlm, chain, transcripts, epochs=EPOCHS, name=name), *RESUME_OPTIONS]

    assert_kill_and_resume_matches(tmp_path, args_for, "care_kill", 6, "val/loss")


@pytest.mark.slow
def test_stage2_under_two_process_ddp_killed_mid_epoch_resumes_to_the_uninterrupted_result(chain: StageChain, tmp_path: Path) -> None:
    """As above with `strategy=ddp` on two CPU processes (gloo): both ranks die at the same step, `--resume`
    restarts both from rank 0's periodic checkpoint, and the run ends where the uninterrupted DDP run ends."""

    def args(name: str) -> list[str]:
        return [*_stage_args(chain, "stage2_text")(name), "--trainer.strategy=ddp", "--trainer.devices=2",
                f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
                "--resume_checkpoint.every_n_train_steps=1"]  # fmt: skip  (each rank sees half the batches)

    def fit(extra: list[str]) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        return subprocess.run([sys.executable, "-m", "meritsl_lightning", "fit", *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)

    reference = fit(args("ddp_reference"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_dir = tmp_path / "ddp_reference" / "version_0"
    total = torch.load(ref_dir / "checkpoints" / "resume.ckpt", map_location="cpu", weights_only=True)["global_step"]
    per_epoch = total // EPOCHS
    assert per_epoch * EPOCHS == total and per_epoch >= 2
    kill_step = per_epoch + 1  # the second step of the second epoch
    killed = _kill_at(args("ddp_kill"), kill_step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = tmp_path / "ddp_kill" / "version_0"
    assert torch.load(run_dir / "checkpoints" / "resume.ckpt", map_location="cpu", weights_only=True)["global_step"] == kill_step
    resumed = fit([*args("ddp_kill"), "--resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "ddp_kill" / "version_1").exists()
    end = torch.load(run_dir / "checkpoints" / "resume.ckpt", map_location="cpu", weights_only=True)
    assert end["global_step"] == total
    best = torch.load((tmp_path / "ddp_kill" / "best.ckpt").resolve(), map_location="cpu", weights_only=True)
    ref_best = torch.load((tmp_path / "ddp_reference" / "best.ckpt").resolve(), map_location="cpu", weights_only=True)
    _assert_same_tensors(best["state_dict"], ref_best["state_dict"], "best-checkpoint weights")
    _assert_same_tensors(end["state_dict"], torch.load(ref_dir / "checkpoints" / "resume.ckpt", map_location="cpu", weights_only=True)["state_dict"], "final weights")
    with open(run_dir / "metrics.csv") as f:
        logged = [r["val/weighted_f1"] for r in csv.DictReader(f) if r.get("val/weighted_f1")]
    with open(ref_dir / "metrics.csv") as f:
        assert logged == [r["val/weighted_f1"] for r in csv.DictReader(f) if r.get("val/weighted_f1")] and len(logged) == EPOCHS
