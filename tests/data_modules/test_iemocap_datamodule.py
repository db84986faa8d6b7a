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


def test_unlabelled_turns_are_context_only(tmp_path: Path) -> None:
    """Off by default; with unlabelled_context they sit in the conversations, never in a loss or a metric."""

    from data_modules.batching import IGNORE_INDEX
    from tests.fixtures.iemocap_layout import default_dialogues

    dialogues = default_dialogues()
    turn = next(t for d in dialogues if d.name == "Ses05F_impro04" for t in d.turns if t.code == "neu")
    turn.labelled = False
    corpus = write_iemocap(tmp_path / "data", dialogues)
    default = IEMOCAPDataModule(root=str(corpus))
    assert turn.name not in {u.utt_id for u in default.split_data("test").rows}
    assert len(default.split_data("test").rows) == EXPECTED_SPLITS["iemocap4"]["test"] - 1
    dialogue = [u for u in default.split_data("test").rows if u.dialogue_id == "Ses05F_impro04"]
    assert [u.utt_index for u in dialogue] == list(range(len(dialogue)))

    dm = IEMOCAPDataModule(root=str(corpus), unlabelled_context=True, batch_size=2, eval_batch_size=2)
    test = dm.split_data("test")
    position = next(i for i, u in enumerate(test.rows) if u.utt_id == turn.name)
    assert test.labels[position] == IGNORE_INDEX
    dm.use_batch_level("conversation")
    ids = [u for batch in dm.test_dataloader() for conv in batch["utt_ids"] for u in conv]
    assert turn.name in ids  # context for Stages II-III
    dm.use_batch_level("utterance")
    scored = [u for batch in dm.test_dataloader() for u in batch["utt_ids"]]
    assert turn.name not in scored and len(scored) == len(test.rows) - 1
    assert all((batch["labels"] != IGNORE_INDEX).all() for batch in dm.test_dataloader())
    predicted = [u for batch in dm.predict_dataloader() for u in batch["utt_ids"]]
    assert sorted(predicted) == sorted(u.utt_id for u in test.rows)
    assert sorted(predicted) == sorted(ids)


def test_prepare_reports_unlabelled_turns_and_the_manifest_keeps_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures.iemocap_layout import default_dialogues

    dialogues = default_dialogues()
    turn = dialogues[0].turns[0]
    turn.labelled = False
    corpus = write_iemocap(tmp_path / "data", dialogues)
    assert prepare(["iemocap", "--root", str(corpus), "--out", str(tmp_path / "out")]) == 0
    assert "unlabelled turns (context only, not in the labelled counts): 1" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["unlabelled_turns"]["count"] == 1 and report["unlabelled_turns"]["ids"] == [turn.name]
    assert report["defects"] == []
    assert report["splits"]["validation"]["unlabelled"] == 1
    assert sum(report["splits"]["validation"]["labels"].values()) == EXPECTED_SPLITS["iemocap4"]["validation"] - (turn.code in ("neu", "hap", "exc", "sad", "ang"))
    rows = {u.utt_id: u for u in read_manifest(tmp_path / "out" / "manifest.jsonl")}
    assert rows[turn.name].label is None and rows[turn.name].text == turn.text
    dm = IEMOCAPDataModule(manifest=str(tmp_path / "out" / "manifest.jsonl"))
    assert turn.name not in {u.utt_id for u in dm.split_data("validation").rows}
