"""CARE pre-training through the CLI, its checkpoint as a speech encoder, and Stages I-III on its features."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from data_modules.care_pretrain import CAREPretrainDataModule
from data_modules.iemocap_parser import parse_iemocap
from data_modules.manifest import CorpusProblem
from meritsl_lightning.checkpoints import CheckpointMismatch, load_care_model, read_stage_checkpoint
from meritsl_lightning.encoders.cache import file_identity
from meritsl_lightning.encoders.care_speech import CAREEncoder
from meritsl_lightning.encoders.speech import build_speech_encoder
from meritsl_lightning.models.care import CAREPretrainModule
from meritsl_lightning.tiny_models import build_tiny_roberta, build_tiny_wavlm
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.metric_checks import assert_metrics_match_confusion
from tests.models.test_text_pretrain import write_silver
from tests.stage_runner import StageChain
from tests.test_cli import clean_env


def write_transcripts(chain: StageChain, path: Path) -> Path:
    """The chain corpus' audio as `meritsl transcribe` output (id, audio_path, text, error)."""
    rows = [u for u in parse_iemocap(chain.corpus).utterances if u.audio_path]
    with open(path, "w") as f:
        for u in rows:
            f.write(json.dumps({"id": u.utt_id, "audio_path": u.audio_path, "text": u.text, "error": None}) + "\n")
    return path


def care_args(root: Path, wavlm: Path, chain: StageChain, transcripts: Path, epochs: int, name: str = "care") -> list[str]:
    return [
        "--seed_everything=0",
        f"--trainer.max_epochs={epochs}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger.class_path=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.logger.init_args.name={name}",
        "--checkpoint.monitor=val/loss",
        "--checkpoint.mode=min",
        "--model.class_path=meritsl_lightning.models.CAREPretrainModule",
        f"--model.init_args.speech_model={wavlm}",
        f"--model.init_args.text_model={chain.roberta}",
        f"--model.init_args.teacher_model={chain.roberta}",
        "--model.init_args.shared_layers=2",
        "--model.init_args.lr=3e-3",
        f"--model.init_args.cache_dir={root / 'cache'}",
        "--data.class_path=data_modules.CAREPretrainDataModule",
        f"--data.init_args.path={transcripts}",
        "--data.init_args.validation_fraction=0.25",
        "--data.init_args.crop_seconds=1.0",
        "--data.init_args.batch_size=4",
    ]


@dataclass
class CARERun:
    root: Path
    wavlm: Path
    transcripts: Path
    cli: MeritslCLI
    best: Path


@pytest.fixture(scope="module")
def care_run(chain: StageChain, tmp_path_factory: pytest.TempPathFactory) -> CARERun:
    root = tmp_path_factory.mktemp("care")
    wavlm = build_tiny_wavlm(root / "wavlm", hidden_size=16, num_layers=4, stable_layer_norm=False)
    transcripts = write_transcripts(chain, root / "transcripts.jsonl")
    cli = MeritslCLI(args=["fit", *care_args(root, wavlm, chain, transcripts, epochs=6)])
    return CARERun(root, wavlm, transcripts, cli, Path(cli.trainer.checkpoint_callback.best_model_path))


def _epoch_means(cli: MeritslCLI, key: str) -> list[float]:
    rows = list(csv.DictReader(open(Path(cli.trainer.log_dir) / "metrics.csv")))
    return [float(r[key]) for r in rows if r.get(key)]


def test_both_losses_fall(care_run: CARERun) -> None:
    cli, best = care_run.cli, care_run.best
    assert cli.trainer.global_step >= 30  # a few dozen optimiser steps
    for loss in ("train/semantic_loss_epoch", "train/acoustic_loss_epoch"):
        values = _epoch_means(cli, loss)
        assert len(values) == 6
        assert values[-1] < 0.9 * values[0], (loss, values)
    assert best.is_file() and best.name == "best.ckpt"


def test_checkpoint_round_trips_as_a_speech_encoder(care_run: CARERun) -> None:
    best = care_run.best
    encoder = build_speech_encoder(f"care:{best}")
    assert isinstance(encoder, CAREEncoder)
    assert (encoder.num_layers, encoder.feature_dim, encoder.pooled_dim) == (5, 32, 16)
    trained = CAREPretrainModule.load_from_checkpoint(best, map_location="cpu").care.eval()
    torch.manual_seed(0)
    waves = [torch.randn(8000) * 0.1, torch.randn(12000) * 0.1]
    expected = torch.cat([trained.layer_features(w[None], torch.tensor([w.numel()])) for w in waves]).detach()
    torch.testing.assert_close(encoder(waves), expected, atol=1e-4, rtol=1e-4)
    # the encoder's identity follows the checkpoint's bytes
    assert encoder.identity().startswith("care-v1:sha256=")


def test_stages_one_to_three_run_on_care_features(chain: StageChain, care_run: CARERun) -> None:
    best = care_run.best
    stage1 = chain.fit("stage1_audio", f"--model.init_args.speech_encoder=care:{best}", name="stage1_audio_care")
    assert stage1.model.head.pooled_dim == 16
    assert stage1.model.head.embed[0].in_features == 32 + 16  # layer-weighted sum ++ pooled semantic vector
    ckpt1 = stage1.trainer.checkpoint_callback.best_model_path
    stage2 = fit_with_upstream(chain, "stage2_audio", "stage2_audio_care", stage1_checkpoint=ckpt1)
    ckpt2 = stage2.trainer.checkpoint_callback.best_model_path
    stage3 = fit_with_upstream(chain, "stage3", "stage3_care", stage2_audio_checkpoint=ckpt2)
    assert_metrics_match_confusion(stage3.trainer.log_dir, stage3.test_results[0])
    meta = read_stage_checkpoint(stage3.trainer.checkpoint_callback.best_model_path, role="stage3", stages=("stage3",))
    assert meta.upstream_identity == f"{file_identity(chain.checkpoints['stage2_text'])}|{file_identity(ckpt2)}"


def test_retraining_care_between_stage1_and_stage2_is_caught(chain: StageChain, care_run: CARERun, tmp_path: Path) -> None:
    """``care:<run>/best.ckpt`` is a symlink that a new CARE run re-points: Stage II must not feed the new
    features to the Stage I head trained on the old ones."""
    import shutil

    first, link = tmp_path / "version_0.ckpt", tmp_path / "best.ckpt"
    shutil.copy(care_run.best, first)
    link.symlink_to(first)
    stage1 = chain.fit("stage1_audio", f"--model.init_args.speech_encoder=care:{link}", name="stage1_audio_care_retrain")
    ckpt1 = stage1.trainer.checkpoint_callback.best_model_path
    blob = torch.load(first, map_location="cpu", weights_only=True)
    blob["state_dict"] = {k: v + 0.01 if k.startswith("care.") and v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    torch.save(blob, tmp_path / "version_1.ckpt")  # CARE retrained, and best.ckpt re-pointed at the new run
    link.unlink()
    link.symlink_to(tmp_path / "version_1.ckpt")
    with pytest.raises(ValueError, match=r"stage1_checkpoint: .* trained on features of the speech encoder 'care:.*which has changed since \(recorded care-v1:sha256="):
        fit_with_upstream(chain, "stage2_audio", "stage2_audio_care_retrain", stage1_checkpoint=ckpt1)


def fit_with_upstream(chain: StageChain, stage: str, name: str, **upstream: str) -> MeritslCLI:
    """A chain stage with some of its earlier-stage checkpoints replaced."""
    args = [a for a in chain.model_args(stage) if not any(f".{k}=" in a for k in upstream)]
    args += [f"--model.init_args.{k}={v}" for k, v in upstream.items()]
    return MeritslCLI(args=["fit", *chain.common_args(name), *args])


def test_mismatched_care_checkpoints_are_refused(chain: StageChain, care_run: CARERun, tmp_path: Path) -> None:
    best = care_run.best
    with pytest.raises(CheckpointMismatch, match="5 layers x 32 features, but the config expects num_layers=13"):
        CAREEncoder(best, num_layers=13)
    with pytest.raises(CheckpointMismatch, match="feature_dim=1536"):
        build_speech_encoder(f"care:{best}", feature_dim=1536)
    blob = torch.load(best, map_location="cpu", weights_only=True)
    blob["state_dict"]["care.acoustic_head.weight"] = torch.zeros(64, 32)  # a wider branch than recorded
    tampered = tmp_path / "tampered.ckpt"
    torch.save(blob, tampered)
    with pytest.raises(CheckpointMismatch, match=r"do not fit the CARE architecture it records \(5 layers, width 16\).*acoustic_head"):
        load_care_model(tampered)
    with pytest.raises(CheckpointMismatch, match="but a care_pretrain checkpoint is needed"):
        load_care_model(chain.checkpoints["stage1_audio"])


def test_bad_rows_fail_with_file_and_line_or_are_counted(chain: StageChain, tmp_path: Path) -> None:
    good = write_transcripts(chain, tmp_path / "good.jsonl").read_text().splitlines()
    lines = [
        *good[:6],
        json.dumps({"id": "err", "audio_path": None, "text": None, "error": "cannot decode"}),
        json.dumps({"id": "empty", "audio_path": json.loads(good[0])["audio_path"], "text": " ", "error": None}),
        "{not json",
        json.dumps({"id": "gone", "audio_path": str(tmp_path / "missing.wav"), "text": "hi", "error": None}),
    ]
    path = tmp_path / "transcripts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusProblem, match=rf"{path}:9: malformed transcript row"):
        CAREPretrainDataModule(str(path)).setup()
    dm = CAREPretrainDataModule(str(path), on_error="skip", validation_fraction=0.5)
    dm.setup()
    assert len(dm.split_rows("train")) + len(dm.split_rows("validation")) == 6
    assert dm.skipped == {"transcription_error": 1, "empty_text": 1, "malformed": 1, "missing_audio_file": 1}


def test_a_killed_run_resumes_from_its_last_checkpoint_with_cached_targets(chain: StageChain, care_run: CARERun) -> None:
    steps = care_run.cli.trainer.global_step
    last = care_run.best.parent / "last.ckpt"
    args = care_args(care_run.root, care_run.wavlm, chain, care_run.transcripts, epochs=7)
    resumed = MeritslCLI(args=["fit", *args, f"--ckpt_path={last}"])
    assert resumed.trainer.current_epoch == 7
    assert resumed.trainer.global_step == steps + steps // 6
    assert resumed.model.cache.misses == 0 and resumed.model.cache.hits == 6  # teacher, frames, offsets of both splits
    assert "teacher" not in resumed.model._frozen  # cached targets: the teacher is never loaded


def test_two_process_ddp_fills_the_target_cache_once(chain: StageChain, care_run: CARERun, tmp_path: Path) -> None:
    args = care_args(tmp_path, care_run.wavlm, chain, care_run.transcripts, epochs=1, name="ddp")
    cmd = [sys.executable, "-m", "meritsl_lightning", "fit", *args, "--trainer.strategy=ddp", "--trainer.devices=2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MEMBER: 2/2" in out.stderr
    assert (tmp_path / "ddp" / "version_0" / "checkpoints" / "best.ckpt").is_file()
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 6  # teacher, frames, offsets for each split


def test_llm_supervised_teacher_checkpoint_is_the_switch(chain: StageChain, care_run: CARERun, tmp_path: Path) -> None:
    """A TextPretrainModule checkpoint as teacher; wider than the branch, so a trained map matches widths."""
    wide = build_tiny_roberta(tmp_path / "wide", [t.text for t in parse_iemocap(chain.corpus).utterances], hidden_size=32)
    pretrain = MeritslCLI(
        args=[
            "fit",
            *chain.text_pretrain_args("pretrain", write_silver(tmp_path / "silver.jsonl"), roberta=wide, cache_dir=tmp_path / "cache"),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    teacher_ckpt = pretrain.trainer.checkpoint_callback.best_model_path
    args = [a for a in care_args(tmp_path, care_run.wavlm, chain, care_run.transcripts, epochs=1, name="llm_teacher") if "teacher_model" not in a]
    cli = MeritslCLI(args=["fit", *args, f"--model.init_args.teacher_model={teacher_ckpt}"])
    model = cli.model
    assert model.teacher_dim == 32 and isinstance(model.teacher_projection, torch.nn.Linear)
    assert model.teacher_projection.in_features == 16
    # the targets are the pre-trained model's own utterance vectors (its cls_dense_tanh pooling): within (-1, 1)
    rows = cli.datamodule.split_rows("train")
    targets = model.targets(rows)
    assert targets.teacher.shape == (len(rows), 32) and targets.teacher.abs().max() < 1
    assert "teacher_projection.weight" in torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)["state_dict"]


def test_training_is_the_same_with_a_cold_or_a_warm_target_cache(chain: StageChain, care_run: CARERun, tmp_path: Path) -> None:
    def weights(name: str, cache: Path) -> dict[str, torch.Tensor]:
        args = [a for a in care_args(tmp_path, care_run.wavlm, chain, care_run.transcripts, epochs=1, name=name) if "cache_dir" not in a]
        cli = MeritslCLI(args=["fit", *args, f"--model.init_args.cache_dir={cache}", "--test_after_fit=false"])
        return {k: v.clone() for k, v in cli.model.state_dict().items()}

    cold = weights("cold", tmp_path / "fresh-cache")
    warm = weights("warm", care_run.root / "cache")  # filled by the module's first run
    assert cold.keys() == warm.keys()
    for key in cold:
        torch.testing.assert_close(cold[key], warm[key], rtol=0, atol=0, msg=key)


def test_other_ranks_wait_for_the_first_process_targets_without_computing(
    care_run: CARERun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under DDP a non-first process polls for the cache files instead of blocking in a collective."""
    import threading
    from types import SimpleNamespace

    import meritsl_lightning.models.care as care_module
    from meritsl_lightning.encoders.cache import EmbeddingCache

    monkeypatch.setattr(care_module, "TARGET_POLL_SECONDS", 0.05)
    rows = care_run.cli.datamodule.split_rows("validation")
    first = CAREPretrainModule.load_from_checkpoint(care_run.best, map_location="cpu", cache_dir=str(tmp_path))
    other = CAREPretrainModule.load_from_checkpoint(care_run.best, map_location="cpu", cache_dir=str(tmp_path))
    other._trainer = SimpleNamespace(world_size=2, local_rank=1, global_rank=1, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    worker = threading.Timer(0.5, lambda: first.targets(rows))
    worker.start()
    try:
        waited = other._targets_under_ddp(rows, 0)
    finally:
        worker.join()
    assert first.cache.misses == 3 and other.cache.misses == 0 and other.cache.hits == 3
    torch.testing.assert_close(waited.teacher, EmbeddingCache(tmp_path).get(other.target_keys(rows)["teacher"]))
    monkeypatch.setattr(care_module, "TARGET_WAIT_SECONDS", 0.2)
    with pytest.raises(TimeoutError, match="did not appear"):
        other._targets_under_ddp(care_run.cli.datamodule.split_rows("train")[:2], 0)
