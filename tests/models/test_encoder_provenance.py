"""The text-encoder switch (TEXT_ENCODER) and the encoders every run records in test_metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meritsl_lightning.encoders.cache import file_identity
from meritsl_lightning.encoders.provenance import WITHOUT_PRETRAINING, TextEncoderError, text_encoder_kind
from meritsl_lightning.models import TextUtteranceModule
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.stage_runner import StageChain

REPO = Path(__file__).resolve().parents[2]
LABELS = ["hap", "sad", "neu", "ang"]


def _record(chain: StageChain, stage: str) -> dict:
    return json.loads((Path(chain.clis[stage].trainer.log_dir) / "test_metrics.json").read_text())


def test_every_stage_records_its_encoders_and_stage3_inherits_them(chain: StageChain) -> None:
    text = {"source": "folder", "path": str(chain.roberta.resolve()), "llm_pretrained": False}
    stage1_text = _record(chain, "stage1_text")
    assert stage1_text["encoders"]["text"].items() >= text.items() and len(stage1_text["encoders"]["text"]["sha256"]) == 64
    assert stage1_text["recipe"] == WITHOUT_PRETRAINING
    speech = _record(chain, "stage1_audio")["encoders"]["speech"]
    assert speech["spec"] == "filterbank" and speech["identity"].startswith("filterbank")
    assert _record(chain, "stage2_text")["encoders"] == stage1_text["encoders"]
    assert _record(chain, "stage2_audio")["encoders"] == {"speech": speech}
    stage3 = _record(chain, "stage3")
    assert stage3["encoders"] == {"text": stage1_text["encoders"]["text"], "speech": speech}
    assert stage3["recipe"] == WITHOUT_PRETRAINING


def test_a_pretraining_checkpoint_is_recorded_by_path_and_hash(chain: StageChain, tmp_path: Path) -> None:
    from tests.models.test_text_pretrain import write_silver

    pretrain = MeritslCLI(
        args=["fit", *chain.text_pretrain_args("pretrain_provenance", write_silver(tmp_path / "silver.jsonl"))]
    )
    ckpt = pretrain.trainer.checkpoint_callback.best_model_path
    model = TextUtteranceModule(model_name_or_path=ckpt, label_names=LABELS)
    record = model.encoder_records()["text"]
    assert record == {
        "source": "checkpoint",
        "path": str(Path(ckpt).resolve()),
        "sha256": file_identity(ckpt),
        "llm_pretrained": True,
        "base": str(chain.roberta),
    }


def test_bad_text_encoders_say_which_and_why(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "notes.txt"): "a file, but neither a text pre-training checkpoint",
        str(tmp_path / "empty"): "no config.json",
        str(tmp_path / "missing.ckpt"): "no such checkpoint file",
        "./runs/nowhere/model": "no such file or folder, and not a Hugging Face model id",
    }
    for source, reason in cases.items():
        with pytest.raises(TextEncoderError, match=reason):
            TextUtteranceModule(model_name_or_path=source, label_names=LABELS)
    assert text_encoder_kind("roberta-large") == text_encoder_kind("FacebookAI/roberta-large") == "hub"


@pytest.mark.parametrize("corpus", ["iemocap", "meld", "cmu_mosi"])
def test_text_encoder_switch_and_paper_preset(corpus: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    config = str(REPO / f"experiments/{corpus}_stage1_text.yaml")
    preset = str(REPO / "experiments/presets/stage1_text_paper.yaml")

    def resolved(*configs: str) -> dict:
        with pytest.raises(SystemExit):
            MeritslCLI(args=["fit", *[a for c in configs for a in ("--config", c)], "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    monkeypatch.delenv("TEXT_ENCODER", raising=False)
    default = resolved(config)
    assert default["model"]["init_args"]["model_name_or_path"] == "roberta-large"
    assert (default["model"]["init_args"]["lr"], default["trainer"]["precision"]) == (2e-5, "bf16-mixed")
    monkeypatch.setenv("TEXT_ENCODER", "runs/pretrain/text_pretrain/best.ckpt")
    paper = resolved(config, preset)
    assert paper["model"]["init_args"]["model_name_or_path"] == "runs/pretrain/text_pretrain/best.ckpt"
    assert (paper["model"]["init_args"]["lr"], paper["model"]["init_args"]["warmup_ratio"]) == (1e-4, 0.0)
    assert paper["trainer"]["precision"] == "32-true"
    assert paper["trainer"]["logger"]["init_args"]["name"] == "stage1_text_paper"
    assert paper["trainer"]["logger"]["init_args"]["save_dir"] == default["trainer"]["logger"]["init_args"]["save_dir"]
