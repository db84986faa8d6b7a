"""Every class of user error ends with one line naming the argument, the file and the reason, exit status 2 and
no traceback; programming errors keep theirs; MERITSL_DEBUG=1 / --debug show the traceback of user errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from meritsl_lightning import cli
from meritsl_lightning.checkpoints import CheckpointMismatch, read_stage_checkpoint
from meritsl_lightning.errors import DEBUG_ENV, user_error_message
from meritsl_lightning.tiny_models import build_tiny_roberta
from tests.fixtures.iemocap_layout import default_dialogues, write_iemocap
from tests.stage_runner import StageChain

REPO = Path(__file__).resolve().parents[1]
PAPER_STAGE3 = str(REPO / "experiments" / "iemocap_stage3.yaml")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``meritsl ARGV`` in this process: (exit status, the last stderr line); fails if a traceback is printed."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    return int(exit_info.value.code or 0), lines[-1] if lines else ""


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny IEMOCAP-layout corpus and a tiny RoBERTa (no training)."""
    root = tmp_path_factory.mktemp("small")
    corpus = write_iemocap(root / "data")
    roberta = build_tiny_roberta(root / "roberta", [t.text for d in default_dialogues() for t in d.turns], hidden_size=16)
    return corpus, roberta


def stage1_text_args(corpus: Path, roberta: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger.class_path=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.default_root_dir={out}",
        "--data.class_path=data_modules.IEMOCAPDataModule",
        f"--data.init_args.root={corpus}",
        "--model.class_path=meritsl_lightning.models.TextUtteranceModule",
        f"--model.init_args.model_name_or_path={roberta}",
        f"--model.init_args.cache_dir={out / 'cache'}",
        *extra,
    ]


# ------------------------------------------------------------------ the examples, end to end


def test_missing_earlier_checkpoint_is_one_line_from_the_real_program(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "meritsl_lightning", "fit", "--config", PAPER_STAGE3],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert output[-1] == (
        "meritsl fit: error: stage2_text_checkpoint: checkpoint file runs/iemocap/stage2_text/best.ckpt does not exist"
    )
    assert len(output) <= 2, output  # the error, and at most Lightning's "Seed set to 0"


def test_debug_flag_and_variable_show_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        cli.main(["fit", "--config", PAPER_STAGE3, "--debug"])
    assert user_error_message(info.value) is not None  # the user error is in the chain, shown with its traceback
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError):
        cli.main(["fit", "--config", PAPER_STAGE3])


def test_model_id_not_available_offline(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, _ = small
    status, line = run_main(capsys, *stage1_text_args(corpus, "meritsl-test/no-such-model", tmp_path))
    assert status == 2
    assert line == (
        "meritsl fit: error: model_name_or_path: 'meritsl-test/no-such-model' is not available offline "
        "(no local folder of that name, no network or cache): give a local folder"
    )


def test_model_folder_that_does_not_exist(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, _ = small
    status, line = run_main(capsys, *stage1_text_args(corpus, "runs/nowhere/roberta", tmp_path))
    assert status == 2
    assert line.startswith("meritsl fit: error: TextUtteranceModule: text encoder 'runs/nowhere/roberta' (model_name_or_path")
    assert "no such file or folder" in line


# ------------------------------------------------------------------ config keys and values


def test_unknown_config_key(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, roberta = small
    status, line = run_main(capsys, *stage1_text_args(corpus, roberta, tmp_path, "--model.init_args.lrr=1"))
    assert status == 2
    assert line == "meritsl fit: error: model: meritsl_lightning.models.TextUtteranceModule: Option 'lrr' is not accepted"


def test_config_value_of_the_wrong_type(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, roberta = small
    status, line = run_main(capsys, *stage1_text_args(corpus, roberta, tmp_path, "--model.init_args.lr=abc"))
    assert status == 2
    assert line.startswith("meritsl fit: error: model: meritsl_lightning.models.TextUtteranceModule: lr: Expected a")
    assert line.endswith("Got value: abc")


def test_config_value_a_class_refuses(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, roberta = small
    args = stage1_text_args(corpus, roberta, tmp_path, "--data.init_args.validation=dialogues", "--data.init_args.validation_fraction=1.5")
    status, line = run_main(capsys, *args)
    assert status == 2
    assert line == "meritsl fit: error: validation_fraction must be in (0, 1), got 1.5"


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, line = run_main(capsys, "fit", "--config", str(tmp_path / "nope.yaml"))
    assert status == 2
    assert line == f"meritsl fit: error: config: File does not exist: '{tmp_path / 'nope.yaml'}'"


def test_trainer_setting_this_machine_cannot_run(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, roberta = small
    status, line = run_main(capsys, *stage1_text_args(corpus, roberta, tmp_path, "--trainer.accelerator=mps"))
    assert status == 2
    assert line.startswith("meritsl fit: error: ") and "MPSAccelerator" in line and "not available" in line


# ------------------------------------------------------------------ corpus and output folders


def test_corpus_folder_that_is_not_the_corpus(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    _, roberta = small
    (tmp_path / "not_iemocap").mkdir()
    status, line = run_main(capsys, *stage1_text_args(tmp_path / "not_iemocap", roberta, tmp_path / "out"))
    assert status == 2
    assert line.startswith(f"meritsl fit: error: IEMOCAP root {tmp_path / 'not_iemocap'}: expected folders Session1..Session5")


def test_prepare_on_a_folder_that_is_not_the_corpus(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, line = run_main(capsys, "prepare", "cmu_mosi", "--root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert status == 2
    assert line.startswith(f"meritsl prepare: error: CMU-MOSI root {tmp_path}")


def test_unwritable_output_folder(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, roberta = small
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    status, line = run_main(capsys, *stage1_text_args(corpus, roberta, blocker / "runs"))
    assert status == 2
    assert line.startswith(f"meritsl fit: error: {blocker}")
    assert line.endswith("Not a directory")


def test_prepare_into_an_unwritable_folder(capsys: pytest.CaptureFixture[str], small: tuple[Path, Path], tmp_path: Path) -> None:
    corpus, _ = small
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    status, line = run_main(capsys, "prepare", "iemocap", "--root", str(corpus), "--out", str(blocker / "out"), "--text-only")
    assert status == 2
    assert line.startswith(f"meritsl prepare: error: cannot write to {blocker / 'out'}")


# ------------------------------------------------------------------ checkpoints of the wrong kind


def stage2_args(chain: StageChain, tmp_path: Path, stage1: str, protocol: str = "iemocap4") -> list[str]:
    return [
        "fit",
        *chain.common_args("errors", protocol=protocol),
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--model.class_path=meritsl_lightning.models.ContextModule",
        f"--model.init_args.stage1_checkpoint={stage1}",
        f"--model.init_args.cache_dir={tmp_path / 'cache'}",
    ]


def test_checkpoint_of_the_wrong_stage(capsys: pytest.CaptureFixture[str], chain: StageChain, tmp_path: Path) -> None:
    status, line = run_main(capsys, *stage2_args(chain, tmp_path, chain.checkpoints["stage3"]))
    assert status == 2
    assert line.startswith(f"meritsl fit: error: stage1_checkpoint: {chain.checkpoints['stage3']} is a stage3")
    assert line.endswith("but a stage1 checkpoint is needed")


def test_checkpoint_of_other_labels(capsys: pytest.CaptureFixture[str], chain: StageChain, tmp_path: Path) -> None:
    status, line = run_main(capsys, *stage2_args(chain, tmp_path, chain.checkpoints["stage1_text"], protocol="iemocap6"))
    assert status == 2
    assert line.startswith("meritsl fit: error: stage1_checkpoint: ")
    assert "was trained on labels ['hap', 'sad', 'neu', 'ang'], but this model has labels" in line


def test_checkpoint_of_the_wrong_modality(capsys: pytest.CaptureFixture[str], chain: StageChain, tmp_path: Path) -> None:
    args = [
        "fit", *chain.common_args("errors"), f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--model.class_path=meritsl_lightning.models.FusionModule",
        f"--model.init_args.stage2_text_checkpoint={chain.checkpoints['stage2_audio']}",
        f"--model.init_args.stage2_audio_checkpoint={chain.checkpoints['stage2_audio']}",
    ]  # fmt: skip
    status, line = run_main(capsys, *args)
    assert status == 2
    assert line.startswith("meritsl fit: error: stage2_text_checkpoint: ")
    assert line.endswith("but a text checkpoint is needed")


def test_unreadable_checkpoint_file(capsys: pytest.CaptureFixture[str], chain: StageChain, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    status, line = run_main(capsys, *stage2_args(chain, tmp_path, str(garbage)))
    assert status == 2
    assert line.startswith(f"meritsl fit: error: stage1_checkpoint: {garbage} is not a readable PyTorch checkpoint (")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(Path(chain.checkpoints["stage1_text"]).read_bytes()[:2000])
    status, line = run_main(capsys, *stage2_args(chain, tmp_path, str(truncated)))
    assert status == 2
    assert f"stage1_checkpoint: {truncated} is not a readable PyTorch checkpoint" in line


def test_classification_checkpoint_for_a_regression_model(chain: StageChain) -> None:
    path = chain.checkpoints["stage1_text"]
    with pytest.raises(CheckpointMismatch) as info:
        read_stage_checkpoint(path, role="stage1_checkpoint", stages=("stage1",), task="regression")
    assert user_error_message(info.value) == (
        f"stage1_checkpoint: {path} was trained for a classification task, but this model is regression"
    )


@pytest.mark.parametrize("changed", ["stage2_text", "stage2_audio"])
def test_stage3_refuses_a_changed_upstream_of_either_input(chain: StageChain, tmp_path: Path, changed: str) -> None:
    import shutil

    from meritsl_lightning.models import FusionModule

    copies = {}
    for which in ("stage2_text", "stage2_audio"):
        copies[which] = tmp_path / f"{which}.ckpt"
        shutil.copy(Path(chain.checkpoints[which]).resolve(), copies[which])
    stage3 = FusionModule(str(copies["stage2_text"]), str(copies["stage2_audio"]), dim=8, num_heads=2, num_layers=1,
                          label_names=["hap", "sad", "neu", "ang"])  # fmt: skip
    ckpt = {"state_dict": stage3.state_dict(), "hyper_parameters": dict(stage3.hparams), "pytorch-lightning_version": "2.6.6"}
    stage3.on_save_checkpoint(ckpt)
    stage3_path = tmp_path / "stage3.ckpt"
    torch.save(ckpt, stage3_path)
    FusionModule.load_from_checkpoint(stage3_path)  # unchanged upstreams: loads
    blob = torch.load(copies[changed], weights_only=True)
    name = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][name] += 1.0
    torch.save(blob, copies[changed])
    with pytest.raises(CheckpointMismatch, match="changed since this stage3 checkpoint was trained") as info:
        FusionModule.load_from_checkpoint(stage3_path)
    assert str(copies[changed].resolve()) in str(info.value)


# ------------------------------------------------------------------ programming errors keep their traceback


def test_programming_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(argv: list[str]) -> int:
        return {}["no such key"]

    monkeypatch.setitem(cli.PIPELINE_COMMANDS, "broken", ("tests.test_errors:_unused", "a broken command"))
    monkeypatch.setattr(cli, "_run_pipeline", lambda name, argv: broken(argv))
    with pytest.raises(KeyError):
        cli.main(["broken"])
    assert user_error_message(ValueError("a plain ValueError from a library")) is None
    assert user_error_message(TypeError("x")) is None
