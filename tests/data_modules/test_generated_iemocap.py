"""The generated IEMOCAP corpus: real layout and formats, determinism, audio, and the content model's claims."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import statistics
import string
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from data_modules.generated import content, speech
from data_modules.generated.content import (
    OTHER,
    VOICE_SHIFTS,
    ContentConfig,
    emotion_keywords,
    generate_dialogue,
    make_speaker,
)
from data_modules.generated.iemocap import dialog_names, generate_iemocap

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

# The regexes of notes/datasets.md.
EMO_LINE = re.compile(r"^\[(\d+\.\d+) - (\d+\.\d+)\]\t(\S+)\t(\w+)\t\[(\S+), (\S+), (\S+)\]$")
TRANSCRIPT_LINE = re.compile(r"^(\S+) \[(\d+\.\d+)-(\d+\.\d+)\]: (.*)$")
TURN_NAME = re.compile(r"^Ses0[1-5][MF]_(impro|script)0[1-9][ab]?(_\d[b]?)?_[MF][X\d]{2}\d$")
DIALOG_NAME = re.compile(r"^Ses0[1-5][MF]_(impro|script)0[1-9][ab]?(_\d[b]?)?$")
HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
CODES = {"neu", "hap", "sad", "ang", "exc", "fru", "sur", "fea", "dis", "oth", "xxx"}
DIALOGUES = 2
SMALL = {"dialogues_per_session": DIALOGUES, "min_turns": 6, "max_turns": 10}  # ~80 turns: a few seconds


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("generated")
    return {
        "a": generate_iemocap(base / "a", seed=0, **SMALL),
        "b": generate_iemocap(base / "b", seed=0, workers=1, **SMALL),
        "c": generate_iemocap(base / "c", seed=1, **SMALL),
    }


@pytest.fixture(scope="module")
def corpus(corpora: dict[str, Path]) -> Path:
    return corpora["a"]


@pytest.fixture(scope="module")
def truth(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus / "generated_turns.jsonl").read_text().splitlines()]


def _label_files(root: Path, folder: str) -> list[Path]:
    return sorted(p for p in root.glob(f"Session*/dialog/{folder}/*.txt") if not p.name.startswith("._"))


def _emo_lines(root: Path) -> dict[str, re.Match]:
    return {
        m[3]: m
        for p in _label_files(root, "EmoEvaluation")
        for line in p.read_text().splitlines()
        if (m := EMO_LINE.match(line))
    }


def _transcript_lines(root: Path) -> dict[str, re.Match]:
    return {
        m[1]: m
        for p in _label_files(root, "transcriptions")
        for line in p.read_text().splitlines()
        if (m := TRANSCRIPT_LINE.match(line))
    }


def _digest(root: Path, pattern: str) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
    }


# --- layout and formats ----------------------------------------------------------------------------
def test_layout_has_five_sessions_with_matching_dialogs(corpus: Path) -> None:
    assert corpus.name == "IEMOCAP_full_release"
    for n in range(1, 6):
        emo = {p.stem for p in _label_files(corpus, "EmoEvaluation") if p.parts[-4] == f"Session{n}"}
        tr = {p.stem for p in _label_files(corpus, "transcriptions") if p.parts[-4] == f"Session{n}"}
        assert emo == tr == set(dialog_names(n, DIALOGUES))
        assert all(DIALOG_NAME.match(d) and d.startswith(f"Ses0{n}") for d in emo)
        assert {p.name for p in (corpus / f"Session{n}" / "sentences" / "wav").iterdir()} == emo
    assert (corpus / "README.txt").read_text().startswith("GENERATED CORPUS")
    assert json.loads((corpus / "generated.json").read_text())["parameters"]["seed"] == 0


def test_emo_evaluation_format(corpus: Path) -> None:
    for path in _label_files(corpus, "EmoEvaluation"):
        lines = path.read_text().splitlines()
        assert lines[:2] == [HEADER, ""], path
        blocks = "\n".join(lines[2:]).strip("\n").split("\n\n")
        for block in blocks:
            summary, *annotations = block.split("\n")
            m = EMO_LINE.match(summary)
            assert m, f"{path}: {summary!r}"
            assert TURN_NAME.match(m[3]) and m[3].startswith(path.stem + "_")
            assert m[4] in CODES and all(1.0 <= float(m[i]) <= 5.0 for i in (5, 6, 7))
            assert annotations and all(re.match(r"^[CA]-[EFM]\d:\t.+\t\(.*\)$", a) for a in annotations), (
                block
            )
        assert len(blocks) == sum(line.startswith("[") for line in lines)


def test_transcriptions_format_and_agree_with_labels(corpus: Path) -> None:
    emo, transcripts = _emo_lines(corpus), _transcript_lines(corpus)
    assert transcripts.keys() == emo.keys()
    for turn, m in transcripts.items():
        assert re.match(r"^\d{3}\.\d{4}$", m[2]) and re.match(r"^\d{3}\.\d{4}$", m[3]), m[0]
        assert float(m[2]) == float(emo[turn][1]) and float(m[3]) == float(emo[turn][2])
        assert m[4].strip()
    junk = [
        line
        for p in _label_files(corpus, "transcriptions")
        for line in p.read_text().splitlines()
        if not TRANSCRIPT_LINE.match(line)
    ]
    assert junk, "expected a few non-turn lines (noise markers) in the transcriptions"
    assert any(re.match(r"^[MF]: \[", line) for line in junk) or any("XX0 [" in line for line in junk)


def test_turn_counters_are_per_speaker_in_time_order(corpus: Path) -> None:
    for path in _label_files(corpus, "transcriptions"):
        turns = [m for line in path.read_text().splitlines() if (m := TRANSCRIPT_LINE.match(line))]
        starts = [float(m[2]) for m in turns]
        assert starts == sorted(starts), path
        counters: Counter[str] = Counter()
        for m in turns:
            speaker = [c for c in m[1] if c in "FM"][-1]
            assert m[1].endswith(f"{speaker}{counters[speaker]:03d}"), m[1]
            counters[speaker] += 1
        assert set(counters) == {"F", "M"}, path


def test_every_turn_has_a_16k_mono_pcm16_wav_matching_its_times(corpus: Path) -> None:
    for turn, m in _emo_lines(corpus).items():
        wav = corpus / f"Session{turn[4]}" / "sentences" / "wav" / turn.rsplit("_", 1)[0] / f"{turn}.wav"
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert info.duration >= 1.2, turn
        assert abs(info.duration - (float(m[2]) - float(m[1]))) < 1e-3, turn
        audio, _ = sf.read(str(wav), dtype="float32")
        assert speech.active_level_db(audio) > speech.NOISE_FLOOR_DBFS + 15, f"{turn} holds no speech"


def test_appledouble_junk_is_present_and_not_text(corpus: Path) -> None:
    junk = sorted(corpus.rglob("._*"))
    assert len(junk) >= 3 and {p.parent.name for p in junk} >= {"EmoEvaluation", "transcriptions"}
    for path in junk:
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")


def test_metadata_agrees_with_the_files(corpus: Path, truth: list[dict]) -> None:
    emo, transcripts = _emo_lines(corpus), _transcript_lines(corpus)
    assert {t["turn"] for t in truth} == emo.keys()
    for t in truth:
        assert emo[t["turn"]][4] == t["code"] and transcripts[t["turn"]][4] == t["text"]
        assert (corpus / t["wav"]).is_file()
    stats = json.loads((corpus / "generated.json").read_text())["statistics"]
    assert stats["turns"] == len(truth)


# --- determinism and idempotence -------------------------------------------------------------------
def test_same_seed_gives_identical_files_and_other_seed_differs(corpora: dict[str, Path]) -> None:
    texts = {k: _digest(root, "Session*/dialog/**/*.txt") for k, root in corpora.items()}
    assert texts["a"] == texts["b"]
    assert _digest(corpora["a"], "generated_turns.jsonl") == _digest(corpora["b"], "generated_turns.jsonl")
    assert _digest(corpora["a"], "Session*/sentences/wav/*/*.wav") == _digest(
        corpora["b"], "Session*/sentences/wav/*/*.wav"
    )
    assert texts["a"].keys() == texts["c"].keys() and texts["a"] != texts["c"]


def test_generation_is_idempotent(corpus: Path) -> None:
    marker = corpus / "generated.json"
    before = marker.stat().st_mtime_ns
    assert generate_iemocap(corpus.parent, seed=0, **SMALL) == corpus
    assert marker.stat().st_mtime_ns == before


def test_without_espeak_an_existing_corpus_is_reused_and_a_new_one_refused(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = corpus / "generated.json"
    before = marker.stat().st_mtime_ns
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)  # e.g. a GPU machine without espeak-ng
    assert generate_iemocap(corpus.parent, seed=0, **SMALL) == corpus
    assert marker.stat().st_mtime_ns == before
    with pytest.raises(speech.EspeakNotFoundError, match="apt-get install espeak-ng"):
        generate_iemocap(tmp_path, seed=0, **SMALL)  # nothing to reuse here
    with pytest.raises(speech.EspeakNotFoundError):
        generate_iemocap(corpus.parent, seed=5, **SMALL)  # other parameters need a rebuild
    assert marker.stat().st_mtime_ns == before


def test_other_parameters_regenerate_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    root = generate_iemocap(tmp_path, seed=3, dialogues_per_session=1, min_turns=4, max_turns=4)
    assert len(_emo_lines(root)) == 5 * 4
    root = generate_iemocap(tmp_path, seed=3, dialogues_per_session=1, min_turns=5, max_turns=5)
    assert len(_emo_lines(root)) == 5 * 5
    foreign = tmp_path / "real" / "IEMOCAP_full_release" / "Session1"
    foreign.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a corpus written by"):
        generate_iemocap(tmp_path / "real", dialogues_per_session=1)
    assert foreign.is_dir()


def test_bad_parameters_and_missing_espeak_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="dialogues_per_session"):
        generate_iemocap(tmp_path, dialogues_per_session=33)
    with pytest.raises(ValueError, match="min_turns"):
        generate_iemocap(tmp_path, min_turns=9, max_turns=3)
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(speech.EspeakNotFoundError, match="apt-get install espeak-ng"):
        generate_iemocap(tmp_path)


# --- labels and cues in the generated corpus -------------------------------------------------------
def test_codes_follow_segments(truth: list[dict]) -> None:
    by_segment: dict[tuple[str, int], set[str]] = defaultdict(set)
    for t in truth:
        if t["emotion"] == OTHER:
            assert t["code"] in {"xxx", "fru", "sur", "oth"} and t["cue"] == "none"
        else:
            by_segment[t["dialog"], t["segment"]].add(t["code"])
            assert t["code"] == t["emotion"] or (t["emotion"], t["code"]) == ("hap", "exc")
    assert all(len(codes) == 1 for codes in by_segment.values())
    others = sum(t["emotion"] == OTHER for t in truth) / len(truth)
    assert 0.02 <= others <= 0.2


def test_voice_cue_is_audible_in_the_level(corpus: Path, truth: list[dict]) -> None:
    levels: dict[str, list[float]] = defaultdict(list)
    for t in truth:
        audio, _ = sf.read(str(corpus / t["wav"]), dtype="float32")
        voice = t["emotion"] if t["cue"] in ("voice", "both") else "neu"
        levels[voice].append(speech.active_level_db(audio))
    mean = {k: statistics.mean(v) for k, v in levels.items()}
    assert mean["ang"] > mean["hap"] > mean["neu"] + 2 > mean["sad"] + 6


# --- the content model, on many dialogues (no audio) -----------------------------------------------
@pytest.fixture(scope="module")
def dialogues() -> list[content.Dialogue]:
    rng = random.Random(0)
    speakers = (make_speaker(rng, "F", "en-us+f1"), make_speaker(rng, "M", "en-us+m1"))
    return [generate_dialogue(rng, speakers) for _ in range(1500)]


def _words(text: str) -> set[str]:
    return {w.strip(string.punctuation).lower() for w in text.split()}


def test_segments_have_the_designed_shape(dialogues: list[content.Dialogue]) -> None:
    config = ContentConfig()
    labelled = [t for d in dialogues for t in d.turns if t.emotion != OTHER]
    for d in dialogues:
        assert config.min_turns <= len(d.turns) <= config.max_turns
        segments = [t.segment for t in d.turns if t.emotion != OTHER]
        assert segments == sorted(segments)
        lengths = Counter(segments)
        assert all(config.min_segment <= n <= config.max_segment for n in lengths.values())
        emotions = [next(t.emotion for t in d.turns if t.segment == s) for s in sorted(lengths)]
        assert all(a != b for a, b in zip(emotions, emotions[1:], strict=False))
        for s in lengths:
            cues = {t.cue for t in d.turns if t.segment == s}
            assert cues != {"none"} or emotions[s] == "neu"
    neutral = sum(t.emotion == "neu" for t in labelled) / len(labelled)
    assert 0.30 <= neutral <= 0.37
    others = sum(t.emotion == OTHER for d in dialogues for t in d.turns) / sum(
        len(d.turns) for d in dialogues
    )
    assert 0.08 <= others <= 0.12
    switches = [a.speaker != b.speaker for d in dialogues for a, b in zip(d.turns, d.turns[1:], strict=False)]
    assert 0.8 <= statistics.mean(switches) <= 0.9


def test_cue_shares_match_the_design(dialogues: list[content.Dialogue]) -> None:
    emotional = [t for d in dialogues for t in d.turns if t.emotion in ("ang", "hap", "sad")]
    share = {c: n / len(emotional) for c, n in Counter(t.cue for t in emotional).items()}
    assert share["text"] == pytest.approx(0.35, abs=0.03)
    assert share["voice"] == pytest.approx(0.35, abs=0.03)
    assert share["both"] == pytest.approx(0.10, abs=0.02)
    assert share["none"] == pytest.approx(0.20, abs=0.03)
    assert all(t.cue == "none" for d in dialogues for t in d.turns if t.emotion in ("neu", OTHER))


def test_text_cue_is_exactly_the_keywords(dialogues: list[content.Dialogue]) -> None:
    keywords = {e: emotion_keywords(e) for e in ("ang", "hap", "sad")}
    for t in (t for d in dialogues for t in d.turns):
        found = {e for e, words in keywords.items() if _words(t.text) & words}
        assert found == ({t.emotion} if t.text_cue else set()), (t.emotion, t.cue, t.text)


def test_uncued_turns_leak_nothing(dialogues: list[content.Dialogue]) -> None:
    speakers = {s.name: s for s in dialogues[0].speakers}
    by_label: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t in (t for d in dialogues for t in d.turns):
        if not t.text_cue:
            by_label[t.emotion]["words"].append(len(t.text.split()))
            by_label[t.emotion]["question"].append(t.text.endswith("?"))
        if not t.voice_cue:
            s = speakers[t.speaker]
            by_label[t.emotion]["pitch"].append(t.voice.pitch - s.pitch)
            by_label[t.emotion]["speed"].append(t.voice.speed - s.speed)
            by_label[t.emotion]["level"].append(t.voice.level_db - s.level_db)
            by_label[t.emotion]["gap"].append(t.voice.word_gap)
    tolerance = {"words": 0.3, "question": 0.03, "pitch": 0.4, "speed": 0.8, "level": 0.1, "gap": 0.05}
    for feature, tol in tolerance.items():
        means = {label: statistics.mean(values[feature]) for label, values in by_label.items()}
        assert max(means.values()) - min(means.values()) < tol, (feature, means)


def test_voice_cues_shift_in_the_designed_direction(dialogues: list[content.Dialogue]) -> None:
    speakers = {s.name: s for s in dialogues[0].speakers}
    for emotion in ("ang", "hap", "sad"):
        cued = [t for d in dialogues for t in d.turns if t.emotion == emotion and t.voice_cue]
        shift = VOICE_SHIFTS[emotion]
        pitch = statistics.mean(t.voice.pitch - speakers[t.speaker].pitch for t in cued)
        level = statistics.mean(t.voice.level_db - speakers[t.speaker].level_db for t in cued)
        assert pitch == pytest.approx(shift.pitch, abs=1.0) and level == pytest.approx(
            shift.level_db, abs=0.2
        )
