"""ASR transcripts in place of the gold text of chosen splits (``transcripts`` / ``transcripts_splits``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_modules import IEMOCAPDataModule
from data_modules.transcripts import TranscriptsError
from tests.stage_runner import StageChain


def _dm(chain: StageChain, **kwargs) -> IEMOCAPDataModule:
    return IEMOCAPDataModule(root=str(chain.corpus), batch_size=4, **kwargs)


def _asr(text: str) -> str:
    return "heard " + text.lower()


def write_transcripts(path: Path, chain: StageChain, drop: tuple[str, ...] = (), failed: tuple[str, ...] = ()) -> Path:
    gold = _dm(chain)
    with open(path, "w") as f:
        for split in gold.split_names():
            for u in gold.split_data(split).rows:
                if u.utt_id in drop:
                    continue
                bad = u.utt_id in failed
                row = {"id": u.utt_id, "audio_path": u.audio_path, "text": None if bad else _asr(u.text), "model": "tiny.en", "error": "decode error" if bad else None}
                f.write(json.dumps(row) + "\n")
    return path


def _batch_texts(dm: IEMOCAPDataModule, loader) -> list[str]:
    dm.use_batch_level("utterance")
    return [t for batch in loader() for t in batch["texts"]]


def test_asr_text_reaches_the_batches_of_the_chosen_splits_only(chain: StageChain, tmp_path: Path) -> None:
    path = write_transcripts(tmp_path / "transcripts.jsonl", chain)
    gold, asr = _dm(chain), _dm(chain, transcripts=str(path), transcripts_splits=["test"])
    gold_test = sorted(_asr(u.text) for u in gold.split_data("test").rows)
    assert sorted(_batch_texts(asr, asr.test_dataloader)) == gold_test
    assert sorted(_batch_texts(asr, asr.train_dataloader)) == sorted(u.text for u in gold.split_data("train").rows)
    assert not any(t.startswith("heard ") for t in _batch_texts(asr, asr.val_dataloader))
    # the embedding caches key on the text: a different key for the ASR split, the same for the others
    assert asr.split_data("test").cache_key() != gold.split_data("test").cache_key()
    assert asr.split_data("train").cache_key() == gold.split_data("train").cache_key()
    sources = asr.text_sources()
    assert sources["splits"] == {"train": "gold", "validation": "gold", "test": "asr"}
    assert sources["transcripts"]["replaced"] == len(gold_test) and sources["transcripts"]["models"] == ["tiny.en"]
    assert gold.text_sources() == {"splits": {"train": "gold", "validation": "gold", "test": "gold"}}


def test_a_missing_or_failed_transcript_is_named_or_reported_under_skip(chain: StageChain, tmp_path: Path) -> None:
    test_ids = [u.utt_id for u in _dm(chain).split_data("test").rows]
    path = write_transcripts(tmp_path / "t.jsonl", chain, drop=(test_ids[0],), failed=(test_ids[1],))
    with pytest.raises(TranscriptsError, match=rf"no transcript for utterance {test_ids[0]} \(iemocap test\).*on_error: skip"):
        _dm(chain, transcripts=str(path)).setup()
    only_failed = write_transcripts(tmp_path / "f.jsonl", chain, failed=(test_ids[1],))
    with pytest.raises(TranscriptsError, match=rf"transcription failed \(decode error\) for utterance {test_ids[1]}"):
        _dm(chain, transcripts=str(only_failed)).setup()
    dm = _dm(chain, transcripts=str(path), on_error="skip")
    rows = {u.utt_id: u.text for u in dm.split_data("test").rows}
    gold = {u.utt_id: u.text for u in _dm(chain).split_data("test").rows}
    assert rows[test_ids[0]] == gold[test_ids[0]] and rows[test_ids[1]] == gold[test_ids[1]]
    assert rows[test_ids[2]] == _asr(gold[test_ids[2]])
    report = dm.text_sources()["transcripts"]
    assert report["fallback_to_gold"] == 2 and set(report["fallback_ids"]) == set(test_ids[:2])


def test_a_transcripts_file_of_another_corpus_or_split_is_refused(chain: StageChain, tmp_path: Path) -> None:
    other = tmp_path / "meld.jsonl"
    other.write_text(json.dumps({"id": "dia0_utt0", "text": "hi", "error": None}) + "\n")
    with pytest.raises(TranscriptsError, match="shares no utterance id with the iemocap corpus.*another corpus"):
        _dm(chain, transcripts=str(other)).setup()
    path = write_transcripts(tmp_path / "t.jsonl", chain)
    with pytest.raises(TranscriptsError, match=r"transcripts_splits \['dev'\] are not splits of iemocap"):
        _dm(chain, transcripts=str(path), transcripts_splits=["dev"]).setup()
    (tmp_path / "torn.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": \n')
    with pytest.raises(TranscriptsError, match=r"torn.jsonl:2: not valid JSON"):
        _dm(chain, transcripts=str(tmp_path / "torn.jsonl")).setup()


def test_stage2_tests_on_asr_text_and_says_so(chain: StageChain, tmp_path: Path) -> None:
    path = write_transcripts(tmp_path / "transcripts.jsonl", chain)
    cli = chain.fit("stage2_text", f"--data.init_args.transcripts={path}", name="stage2_text_asr")
    record = json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text())
    assert record["text"]["splits"]["test"] == "asr" and record["text"]["splits"]["train"] == "gold"
    assert record["text"]["transcripts"]["path"] == str(path.resolve())
    # the frozen Stage I ran on the ASR text of the test split (a new cache entry), not on the gold one
    assert cli.model.cache.misses == 1 and cli.model.cache.hits == 2


def test_meritsl_test_on_asr_text_writes_its_record(chain: StageChain, tmp_path: Path) -> None:
    from meritsl_lightning.trainer_cli import MeritslCLI

    path = write_transcripts(tmp_path / "transcripts.jsonl", chain)
    args = [*chain.common_args("stage1_text_asr_test"), *chain.model_args("stage1_text")]
    cli = MeritslCLI(args=["test", *args, f"--ckpt_path={chain.checkpoints['stage1_text']}", f"--data.init_args.transcripts={path}"])
    record = json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text())
    assert record["checkpoint"] == chain.checkpoints["stage1_text"]
    assert record["text"]["splits"]["test"] == "asr" and record["encoders"]["text"]["source"] == "folder"
    assert 0.0 <= record["test"]["test/weighted_f1"] <= 1.0
