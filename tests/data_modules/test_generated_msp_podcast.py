"""The generated MSP-Podcast release: real layout and formats, determinism, ground truth, parse and prepare."""

from __future__ import annotations

import csv
import json
import re
import shutil
import string
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from data_modules import MSPPodcastDataModule
from data_modules.generated.content import emotion_keywords
from data_modules.generated.msp_podcast import CORPUS_FOLDER, generate_msp_podcast
from data_modules.manifest import read_manifest
from data_modules.msp_podcast_parser import UNASSIGNED, parse_msp_podcast
from meritsl_lightning.commands.generate import GENERATORS, SIZE_OPTIONS
from meritsl_lightning.commands.generate import main as generate
from meritsl_lightning.commands.prepare import main as prepare

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
JSON_KEYS = ["EmoClass", "EmoAct", "EmoDom", "EmoVal", "SpkrID", "Gender", "Split_Set"]
WAV_NAME = re.compile(r"^MSP-PODCAST_\d{4}_\d{4}\.wav$")
SUMMARY = re.compile(r"^(\S+\.wav); ([ASHUFDCNOX]); A:(\d\.\d{6}); V:(\d\.\d{6}); D:(\d\.\d{6});$")
WORKER = re.compile(r"^WORKER\d{8}; (\w+(?:-\w+)?); ([\w,-]+); A:(\d)\.0{6}; V:(\d)\.0{6}; D:(\d)\.0{6};$")
PRIMARY_CODES = {"Angry": "A", "Sad": "S", "Happy": "H", "Surprise": "U", "Fear": "F", "Disgust": "D",
                 "Contempt": "C", "Neutral": "N"}  # fmt: skip
SIZE = {"podcasts": 4, "unlabelled_podcasts": 1, "min_turns": 6, "max_turns": 8}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_msp_podcast(tmp_path_factory.mktemp("generated"), seed=0, **SIZE)


@pytest.fixture(scope="module")
def stats(release: Path) -> dict:
    return json.loads((release / "generated.json").read_text())["statistics"]


@pytest.fixture(scope="module")
def truth(release: Path) -> list[dict]:
    return [json.loads(line) for line in (release / "generated_turns.jsonl").read_text().splitlines()]


def _consensus(release: Path) -> dict[str, dict[str, str]]:
    with open(release / "Labels" / "labels_consensus.csv", newline="") as f:
        return {row["FileName"]: row for row in csv.DictReader(f)}


def test_layout_and_file_formats(release: Path, stats: dict) -> None:
    assert release.name == CORPUS_FOLDER
    assert {p.name for p in release.iterdir()} == {
        "Audios", "Labels", "Transcripts", "README.txt", "generated.json", "generated_turns.jsonl",
    }  # fmt: skip
    assert {p.name for p in (release / "Labels").iterdir()} == {
        "labels_consensus.csv", "labels_consensus.json", "labels_detailed.csv", "labels.txt",
    }  # fmt: skip
    wavs = sorted(p.name for p in (release / "Audios").iterdir() if not p.name.startswith("._"))
    assert len(wavs) == stats["segments"] and all(WAV_NAME.match(n) for n in wavs)
    assert len([p for p in (release / "Audios").iterdir() if p.name.startswith("._")]) == 1
    lines = (release / "Labels" / "labels_consensus.csv").read_text().splitlines()
    assert lines[0] == HEADER and lines[1:] == sorted(lines[1:]) and len(lines) == stats["labelled"] + 1
    obj = json.loads((release / "Labels" / "labels_consensus.json").read_text())
    assert list(obj) == [line.split(",")[0] for line in lines[1:]]
    assert all(list(entry) == JSON_KEYS for entry in obj.values())
    assert all(isinstance(entry[k], float) for entry in obj.values() for k in ("EmoAct", "EmoDom", "EmoVal"))
    info = sf.info(str(release / "Audios" / wavs[0]))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert "NOT the real MSP-Podcast" in (release / "README.txt").read_text()


def test_parses_cleanly_with_every_segment(release: Path, stats: dict) -> None:
    result = parse_msp_podcast(release.parent, deep=True)  # on_error="fail"
    assert result.defects == []
    assert len(result.utterances) == stats["segments"]
    assert result.info["labels_source"]["json_comparison"]["differences"] == 0
    assert result.info["unlabelled_audio"]["count"] == stats["unlabelled"] > 0
    assert result.info["release_transcripts"]["with_text"] == stats["transcripts"]
    assert result.info["audio_formats"] == {"16000 Hz x 1 ch": stats["segments"]}
    assert result.info["ignored_audio_entries"] == 1  # the AppleDouble file
    names = {"Train": "train", "Development": "validation", "Test1": "test1", "Test2": "test2", "(no labels row)": UNASSIGNED}
    assert dict(Counter(u.split for u in result.utterances)) == {names[k]: v for k, v in stats["splits"].items()}
    assert set(stats["splits"]) == set(names)  # every split, even at this size
    assert Counter(u.label_raw for u in result.utterances if u.label_raw) == stats["codes"]
    by_podcast = defaultdict(list)
    for u in result.utterances:
        by_podcast[u.dialogue_id].append(u)
    assert len(by_podcast) == stats["podcasts"]
    for rows in by_podcast.values():
        assert [u.utt_index for u in rows] == list(range(len(rows)))
        assert len({u.split for u in rows}) == 1  # splits by podcast, so speakers never cross splits


def test_labels_and_transcripts_match_the_ground_truth(release: Path, truth: list[dict]) -> None:
    consensus = _consensus(release)
    for record in truth:
        row = consensus.get(record["file"])
        assert (row is not None) == bool(record["code"])
        if row is not None:
            assert (row["EmoClass"], row["SpkrID"], row["Split_Set"]) == (record["code"], record["speaker"], record["split"])
            expected = {"neu": "N", "ang": "A", "hap": "H", "sad": "S"}.get(record["emotion"])
            assert expected is None or row["EmoClass"] == expected
        transcript = release / "Transcripts" / record["file"].replace(".wav", ".txt")
        assert transcript.is_file() == record["transcript_file"]
        if record["transcript_file"]:
            assert transcript.read_text() == record["text"]


def test_consensus_is_the_plurality_of_the_annotations(release: Path) -> None:
    consensus = _consensus(release)
    blocks = (release / "Labels" / "labels.txt").read_text().strip().split("\n\n")
    assert len(blocks) == len(consensus)
    with open(release / "Labels" / "labels_detailed.csv", newline="") as f:
        detailed = defaultdict(list)
        for row in csv.DictReader(f):
            detailed[row["FileName"]].append(row["EmoDetail"])
    for block in blocks:
        summary, *workers = block.splitlines()
        m = SUMMARY.match(summary)
        assert m, summary
        name, code = m.group(1), m.group(2)
        assert 5 <= len(workers) <= 7 and detailed[name] == workers
        votes = Counter()
        ratings = []
        for line in workers:
            w = WORKER.match(line)
            assert w, line
            votes["O" if w.group(1).startswith("Other-") else PRIMARY_CODES[w.group(1)]] += 1
            ratings.append([int(w.group(i)) for i in (3, 4, 5)])
        top = votes.most_common()
        plurality = top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else "X"
        assert code == plurality == consensus[name]["EmoClass"]
        means = [round(sum(r[i] for r in ratings) / len(ratings), 6) for i in range(3)]
        row = consensus[name]
        assert [float(row["EmoAct"]), float(row["EmoVal"]), float(row["EmoDom"])] == means
        assert [float(m.group(i)) for i in (3, 4, 5)] == means


def test_words_carry_the_sentiment(truth: list[dict]) -> None:
    keywords = {e: emotion_keywords(e) for e in ("hap", "ang", "sad")}

    def words(text: str) -> set[str]:
        return {w.strip(string.punctuation).lower() for w in text.split()}

    counts = Counter(r["text_sentiment"] for r in truth)
    assert set(counts) == {"positive", "negative", "neutral"}
    for r in truth:
        found = {e for e, k in keywords.items() if words(r["text"]) & k}
        expected = {"positive": {"hap"}, "negative": {"ang", "sad"}, "neutral": set()}[r["text_sentiment"]]
        assert found <= expected and bool(found) == bool(expected), r


def test_deterministic_idempotent_and_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert GENERATORS["msp_podcast"][0].endswith(":generate_msp_podcast") and SIZE_OPTIONS["msp_podcast"] == "podcasts"
    tiny = {"unlabelled_podcasts": 0, "min_turns": 2, "max_turns": 3}
    a = generate_msp_podcast(tmp_path / "a", podcasts=1, workers=1, **tiny)
    b = generate_msp_podcast(tmp_path / "b", podcasts=1, **tiny)
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    stamp = (a / "generated.json").stat().st_mtime_ns
    assert generate_msp_podcast(tmp_path / "a", podcasts=1, **tiny) == a
    assert (a / "generated.json").stat().st_mtime_ns == stamp  # same parameters: nothing rewritten
    foreign = tmp_path / "foreign" / CORPUS_FOLDER
    foreign.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_msp_podcast(tmp_path / "foreign", podcasts=1, **tiny)
    with pytest.raises(ValueError, match="podcasts"):
        generate_msp_podcast(tmp_path / "c", podcasts=0)
    with pytest.raises(ValueError, match="transcript_share"):
        generate_msp_podcast(tmp_path / "c", transcript_share=1.5)
    assert generate(["msp_podcast", "--out", str(tmp_path / "cli"), "--size", "1"]) == 0
    cli = Path(capsys.readouterr().out.strip())
    assert cli == (tmp_path / "cli" / CORPUS_FOLDER).resolve()
    assert json.loads((cli / "generated.json").read_text())["parameters"]["podcasts"] == 1


def test_prepare_and_data_module(release: Path, stats: dict, tmp_path: Path) -> None:
    assert prepare(["msp_podcast", "--root", str(release.parent), "--out", str(tmp_path), "--deep"]) == 0
    rows = read_manifest(tmp_path / "manifest.jsonl")
    assert len(rows) == stats["segments"]
    assert sum(bool(u.text) for u in rows) == stats["transcripts"]
    dm = MSPPodcastDataModule(manifest=str(tmp_path / "manifest.jsonl"))
    assert dm.split_names() == ["train", "validation", "test", "test2", UNASSIGNED]
    assert len(dm.split_data("test").rows) == stats["splits"]["Test1"]
