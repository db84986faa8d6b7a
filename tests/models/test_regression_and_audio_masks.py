"""Regression protocols (a real-valued score as the target) and utterances whose audio is unusable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from data_modules import IEMOCAPDataModule
from data_modules.manifest import Utterance
from meritsl_lightning.models import SpeechUtteranceModule
from meritsl_lightning.trainer_cli import MeritslCLI
from tests.stage_runner import StageChain

SIGN = {"hap": 1.5, "neu": 0.0, "sad": -2.0, "ang": -1.0}


class SignedIEMOCAP(IEMOCAPDataModule):
    """The IEMOCAP fixture as a regression corpus: a score per utterance, binarised as negative/positive."""

    protocols = {**IEMOCAPDataModule.protocols, "signed": ["negative", "positive"]}
    regression_protocols = frozenset({"signed"})

    def __init__(self, root: str, batch_size: int = 4) -> None:
        super().__init__(root=root, protocol="signed", batch_size=batch_size)

    def parse(self):  # type: ignore[override]
        from data_modules.iemocap_parser import parse_iemocap

        result = parse_iemocap(self.root, protocol="iemocap4")
        result.utterances = [
            replace(u, score=SIGN[u.label], label="positive" if SIGN[u.label] >= 0 else "negative") for u in result.utterances
        ]
        return result


def test_regression_chain_through_the_cli(chain: StageChain, tmp_path: Path) -> None:
    common = [
        *[a for a in chain.common_args("regression") if not a.startswith("--data.")],
        "--data.class_path=tests.models.test_regression_and_audio_masks.SignedIEMOCAP",
        f"--data.init_args.root={chain.corpus}",
    ]
    stage1 = MeritslCLI(args=["fit", *common, *chain.model_args("stage1_audio")])
    assert stage1.model.task == "regression" and stage1.model.num_outputs == 1
    results = stage1.test_results[0]
    for key in ("test/mae", "test/pearson", "test/weighted_f1", "test/f1_negative", "test/f1_positive"):
        assert key in results
    best = stage1.trainer.checkpoint_callback.best_model_path
    stage2 = MeritslCLI(
        args=["fit", *common, *chain.model_args("stage2_audio"), f"--model.init_args.stage1_checkpoint={best}"]
    )
    assert stage2.model.task == "regression" and "test/mae" in stage2.test_results[0]


def test_unusable_audio_gives_zero_features_and_no_loss(chain: StageChain, tmp_path: Path) -> None:
    dm = IEMOCAPDataModule(root=str(chain.corpus))
    data = dm.split_data("train")
    broken = data.rows[2]
    data.rows[2] = Utterance(**{**broken.__dict__, "audio_ok": False, "audio_path": str(tmp_path / "missing.wav")})
    model = SpeechUtteranceModule(projection_dim=8, embedding_dim=8, label_names=dm.label_names, cache_dir=str(tmp_path))
    features, usable = model.prepare_split(data, torch.device("cpu"))
    assert not usable[2] and usable.sum() == len(data.rows) - 1
    assert features[2].abs().sum() == 0 and features[0].abs().sum() > 0
    model._inputs["train"] = (features, usable)
    batch = {"split": "train", "index": torch.tensor([0, 2, 3]), "labels": data.labels[[0, 2, 3]], "scores": data.scores[[0, 2, 3]]}
    assert model.target_mask(batch).tolist() == [True, False, True]
    embeddings = model.compute_embeddings(data, torch.device("cpu"))
    assert embeddings[2].abs().sum() == 0 and embeddings[0].abs().sum() > 0
