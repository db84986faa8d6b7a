"""The IEMOCAP data module: splits, protocols, manifests, batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_modules import IEMOCAPDataModule
from data_modules.manifest import ManifestError, read_manifest, write_manifest
from meritsl_lightning.commands.prepare import main as prepare
from tests.fixtures.iemocap_layout import EXPECTED_SPLITS, write_iemocap


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.mark.parametrize("protocol", ["iemocap4", "iemocap6"])
def test_session_splits_and_label_sets(corpus: Path, protocol: str) -> None:
    dm = IEMOCAPDataModule(root=str(corpus), protocol=protocol)
    sizes = {s: len(dm.split_data(s).rows) for s in dm.split_names()}
    assert sizes == EXPECTED_SPLITS[protocol]
    assert dm.num_classes == (4 if protocol == "iemocap4" else 6)
    test = dm.split_data("test")
    assert {u.dialogue_id[:5] for u in test.rows} == {"Ses05"}
    assert all(0 <= label < dm.num_classes for label in test.labels.tolist())


def test_dialogue_held_out_validation_is_seeded_and_disjoint(corpus: Path) -> None:
    def validation_dialogues(seed: int) -> set[str]:
        dm = IEMOCAPDataModule(root=str(corpus), validation="dialogues", validation_fraction=0.3, split_seed=seed)
        train = {u.dialogue_id for u in dm.split_data("train").rows}
        val = {u.dialogue_id for u in dm.split_data("validation").rows}
        assert not train & val and all(d[:5] != "Ses05" for d in train | val)
        assert len(train | val) == 6  # every Session 1-4 dialogue of the fixture
        return val

    assert validation_dialogues(0) == validation_dialogues(0)
    assert len(validation_dialogues(0)) == 2  # round(0.3 * 6)


def test_conversation_batches_follow_turn_order(corpus: Path) -> None:
    dm = IEMOCAPDataModule(root=str(corpus), batch_size=2)
    dm.use_batch_level("conversation")
    batch = next(iter(dm.test_dataloader()))
    assert batch["index"].shape == batch["mask"].shape == batch["labels"].shape
    rows = dm.split_data("test").rows
    for b, ids in enumerate(batch["utt_ids"]):
        positions = batch["index"][b, : len(ids)].tolist()
        assert [rows[p].utt_id for p in positions] == ids
        assert [rows[p].utt_index for p in positions] == list(range(len(ids)))


def test_prepared_manifest_gives_the_same_data(corpus: Path, tmp_path: Path) -> None:
    assert prepare(["iemocap", "--root", str(corpus), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert {s: v["utterances"] for s, v in report["splits"].items()} == EXPECTED_SPLITS["iemocap4"]
    from_root = IEMOCAPDataModule(root=str(corpus))
    from_manifest = IEMOCAPDataModule(manifest=str(tmp_path / "manifest.jsonl"))
    for split in ("train", "validation", "test"):
        assert from_root.split_data(split).rows == from_manifest.split_data(split).rows


def test_label_outside_the_protocol_is_named(corpus: Path, tmp_path: Path) -> None:
    assert prepare(["iemocap", "--root", str(corpus), "--out", str(tmp_path)]) == 0
    rows = read_manifest(tmp_path / "manifest.jsonl")
    rows[3].label = "fru"
    write_manifest(rows, tmp_path / "bad.jsonl")
    with pytest.raises(ManifestError, match=f"utterance {rows[3].utt_id}: label 'fru' is not in the iemocap4 label set"):
        IEMOCAPDataModule(manifest=str(tmp_path / "bad.jsonl")).setup()


def test_malformed_manifest_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"dataset": "iemocap"}\nnot json\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:1: bad manifest row"):
        IEMOCAPDataModule(manifest=str(path)).setup()


def test_needs_a_root_or_a_manifest() -> None:
    with pytest.raises(ValueError, match="needs root"):
        IEMOCAPDataModule()
