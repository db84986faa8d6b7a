"""`pseudo-label` and `transcribe` read their own transcripts (rows keyed ``id``) and `meritsl prepare`
manifests (rows keyed ``utt_id``); an input without one usable row stops with the reason, and malformed rows
are counted in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_modules.manifest import Utterance, write_manifest
from meritsl_lightning.pseudo_labels.pseudo_label import main
from meritsl_lightning.pseudo_labels.transcribe import AudioItem, TranscribeError, collect_items
from tests.pseudo_labels.test_pseudo_label import KEY, KEY_ENV, ScriptedServer, read_rows, server_args


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def manifest_rows() -> list[Utterance]:
    words = {"hap": "great", "sad": "awful", "neu": "okay"}
    return [
        Utterance("iemocap", "train", "Ses01F_impro01", i, f"Ses01F_impro01_F00{i}", f"turn {i} was {words[label]}", label,
                  audio_path=f"wav/{i}.wav")
        for i, label in enumerate(["hap", "sad", "neu", "hap"])
    ]  # fmt: skip


def test_pseudo_label_reads_a_prepare_manifest(tmp_path: Path, key_env: None) -> None:
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest_rows(), manifest)
    out = tmp_path / "silver.jsonl"
    with ScriptedServer() as server:
        assert main(server_args(server, manifest, out)) == 0
    rows = {r["id"]: r for r in read_rows(out)}
    assert sorted(rows) == [u.utt_id for u in manifest_rows()]
    assert [rows[u.utt_id]["label"] for u in manifest_rows()] == ["positive", "negative", "neutral", "positive"]
    report = json.loads((tmp_path / "silver.report.json").read_text())
    assert report["rows"] == 4 and report["skipped"]["malformed"] == 0 and report["malformed_rows"] == []


def test_malformed_rows_are_counted_and_listed(tmp_path: Path, key_env: None) -> None:
    transcripts = tmp_path / "t.jsonl"
    lines = [
        json.dumps({"id": "a", "text": "a great day"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"name": "no id", "text": "x"}),
        json.dumps({"utt_id": "b", "text": "an awful day"}),
        json.dumps({"id": "c", "text": 42}),
    ]
    transcripts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "silver.jsonl"
    with ScriptedServer() as server:
        assert main(server_args(server, transcripts, out)) == 0
    assert sorted(r["id"] for r in read_rows(out)) == ["a", "b"]
    report = json.loads((tmp_path / "silver.report.json").read_text())
    assert report["skipped"]["malformed"] == 4
    assert report["malformed_rows"] == [
        {"line": 2, "problem": "not valid JSON (Expecting property name enclosed in double quotes)"},
        {"line": 3, "problem": "not a JSON object (a list)"},
        {"line": 4, "problem": "no `id` or `utt_id` field"},
        {"line": 6, "problem": "text is a int, expected a string"},
    ]


NO_ROW = {
    "no ids": ([{"name": "x", "text": "a great day"}, {"file": "y.wav", "text": "okay"}],
               "no row has an `id` or `utt_id` field (2 rows; line 1 has the fields name, text); expected "
               "`meritsl transcribe` output or a `meritsl prepare` manifest"),
    "no JSON": (["garbage", "more garbage"], "no usable row in 2 lines (line 1: not valid JSON (Expecting value))"),
    "empty file": ([], "the file has no rows"),
    "nothing to label": ([{"id": "a", "text": "", "error": "unreadable audio"}, {"id": "b", "text": "  "}],
                         "no row has text to label (2 rows: 1 with a transcription error, 1 with empty text)"),
}  # fmt: skip


@pytest.mark.parametrize("case", NO_ROW)
def test_an_input_without_a_usable_row_stops_with_the_reason(
    tmp_path: Path, key_env: None, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, reason = NO_ROW[case]
    transcripts = tmp_path / "t.jsonl"
    transcripts.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in content))
    with ScriptedServer() as server:
        assert main(server_args(server, transcripts, tmp_path / "s.jsonl")) == 2
        assert server.total == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"meritsl pseudo-label: error: --input {transcripts}: {reason}"


def test_transcribe_reads_its_own_transcripts_and_manifests(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest_rows(), manifest)
    from_manifest = collect_items(manifest)
    assert [i.id for i in from_manifest] == [u.utt_id for u in manifest_rows()]
    assert from_manifest[0].path == str((tmp_path / "wav" / "0.wav").resolve())
    transcripts = tmp_path / "sub" / "transcripts.jsonl"
    transcripts.parent.mkdir()
    transcripts.write_text(
        json.dumps({"id": "b", "audio_path": "../wav/1.wav", "text": "old", "model": "tiny"}) + "\n"
        + json.dumps({"id": "a", "audio_path": str(tmp_path / "wav" / "0.wav"), "text": "old"}) + "\n"
        + json.dumps({"id": "c", "audio_path": None, "error": "no audio"}) + "\n"
    )  # fmt: skip
    assert collect_items(transcripts) == [
        AudioItem("a", str(tmp_path / "wav" / "0.wav")),
        AudioItem("b", str((tmp_path / "wav" / "1.wav").resolve())),
        AudioItem("c", None),
    ]


def test_transcribe_input_without_ids_stops_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"file": "a.wav"}) + "\n")
    with pytest.raises(TranscribeError, match=r"no row has an `id` or `utt_id` field \(1 rows; line 1 has the fields file\)"):
        collect_items(path)
    path.write_text(json.dumps({"id": "a", "audio_path": "x.wav"}) + "\n" + json.dumps({"id": "a", "audio_path": "y.wav"}) + "\n")
    with pytest.raises(TranscribeError, match="utterance id 'a' appears more than once"):
        collect_items(path)
