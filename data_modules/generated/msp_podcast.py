"""A generated stand-in for MSP-Podcast, in the real ``MSP-PODCAST-Publish-1.xx`` layout and formats.

MERITS-L uses MSP-Podcast for pre-training (Whisper transcripts -> LLM positive/negative/neutral silver
labels -> RoBERTa pre-training; CARE on the audio). This corpus feeds that chain with content whose
sentiment is known: every podcast is a dialogue of the content model (``content.py``) between two
speakers with their own espeak-ng voices, so about a third of the segments say something happy, angry
or sad in so many words (``generated_turns.jsonl`` records each segment's ``text_sentiment``), and the
voice carries the emotion in others. The layout:

- ``Audios/MSP-PODCAST_<podcast>_<segment>.wav`` (16 kHz mono PCM16); podcast ids are 4-digit numbers,
  segment numbers increase with gaps, as in a release where some segments were filtered out;
- ``Labels/labels_consensus.csv`` (``FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set``,
  rows sorted by file name) and its twin ``labels_consensus.json`` (indent 4, keys EmoClass, EmoAct,
  EmoDom, EmoVal, SpkrID, Gender, Split_Set); ``labels.txt`` and ``labels_detailed.csv`` with the
  simulated worker annotations the consensus was computed from (plurality vote, ``X`` without one;
  SAM means rounded to 6 decimals);
- codes: ``neu``/``ang``/``hap``/``sad`` -> N/A/H/S; the content model's *other* segments get X, O, U,
  C, D or F; about 10 % of segments have ``SpkrID``/``Gender`` ``Unknown``;
- splits by podcast (so speakers never cross splits): Train, Development, Test1, Test2;
- ``Transcripts/<stem>.txt`` for a share of the segments (``transcript_share``);
- ``unlabelled_podcasts`` podcasts whose wavs have no labels row (audio-only; the parser keeps them
  with label None), and one macOS ``._*`` AppleDouble file in ``Audios/``.

``README.txt``, ``generated.json`` (parameters and statistics; it marks a finished corpus) and
``generated_turns.jsonl`` (ground truth per segment) are not part of a real release.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_modules.generated.content import (
    NEUTRAL,
    OTHER,
    ContentConfig,
    Speaker,
    Turn,
    generate_dialogue,
    make_speaker,
)
from data_modules.generated.output import build_corpus
from data_modules.generated.speech import (
    SynthesisJob,
    installed_espeak_version,
    synthesize_many,
)

CORPUS_FOLDER = "MSP-PODCAST-Publish-1.11"
GENERATOR_VERSION = 1
VOICES: tuple[tuple[str, str], ...] = tuple(
    [(f"en-us+f{i}", "Female") for i in range(1, 6)] + [(f"en-us+m{i}", "Male") for i in range(1, 8)]
)
EMOTION_CODES = {"neu": "N", "ang": "A", "hap": "H", "sad": "S"}
OTHER_CODES: tuple[tuple[str, float], ...] = (("X", 0.45), ("O", 0.2), ("U", 0.15), ("C", 0.1), ("D", 0.05), ("F", 0.05))
SENTIMENT = {"hap": "positive", "ang": "negative", "sad": "negative", "neu": "neutral"}
SPLIT_WEIGHTS: tuple[tuple[str, float], ...] = (("Train", 0.6), ("Development", 0.15), ("Test1", 0.15), ("Test2", 0.1))
UNKNOWN_SPEAKER_SHARE = 0.1
# Text-heavy cues: the corpus exists for text pre-training; the voice still carries some emotions (CARE).
CUE_WEIGHTS: tuple[tuple[str, float], ...] = (("text", 0.45), ("voice", 0.2), ("both", 0.2), ("none", 0.15))

_PRIMARY = {"A": "Angry", "S": "Sad", "H": "Happy", "U": "Surprise", "F": "Fear", "D": "Disgust",
            "C": "Contempt", "N": "Neutral", "O": "Other"}  # fmt: skip
_OTHER_WORDS = ("Excited", "Confused", "Concerned", "Annoyed", "Amused", "Bored")
_SECONDARY = ("Angry", "Sad", "Happy", "Amused", "Neutral", "Frustrated", "Depressed", "Surprise", "Concerned",
              "Disgust", "Disappointed", "Excited", "Confused", "Annoyed", "Fear", "Contempt")  # fmt: skip
# Mean arousal, valence, dominance (1-7) of a code's annotations.
_AVD = {"N": (3, 4, 4), "H": (5, 6, 5), "A": (6, 2, 6), "S": (2, 2, 3), "X": (4, 4, 4), "O": (4, 3, 4),
        "U": (5, 5, 4), "C": (4, 3, 5), "D": (4, 2, 5), "F": (5, 2, 3)}  # fmt: skip
_APPLEDOUBLE = (b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02" + b"\x00" * 22).ljust(4096, b"\x00")


@dataclass(frozen=True)
class _Segment:
    podcast: str
    number: int
    split: str  # Split_Set ("" for unlabelled audio)
    code: str  # EmoClass ("" for unlabelled audio)
    speaker_id: str  # SpkrID or "Unknown"
    gender: str
    turn: Turn
    noise_seed: int
    transcript: bool

    @property
    def stem(self) -> str:
        return f"MSP-PODCAST_{self.podcast}_{self.number:04d}"

    @property
    def labelled(self) -> bool:
        return bool(self.code)

    @property
    def text_sentiment(self) -> str:
        return SENTIMENT[self.turn.emotion] if self.turn.text_cue and self.turn.emotion in SENTIMENT else "neutral"


def _rng(*parts: object) -> random.Random:
    # String seeds hash with SHA-512 in `random`, so they do not depend on PYTHONHASHSEED.
    return random.Random(":".join(["msp_podcast", *map(str, parts)]))


def _seed32(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def podcast_ids(seed: int, count: int) -> list[str]:
    """`count` distinct 4-digit podcast ids, ascending."""
    return [f"{n:04d}" for n in sorted(_rng(seed, "podcasts").sample(range(1, 2000), count))]


def _split_plan(seed: int, labelled: int) -> list[str]:
    """Split_Set of each labelled podcast: shares from SPLIT_WEIGHTS, at least one podcast for each split when possible."""
    names = [name for name, _ in SPLIT_WEIGHTS]
    counts = {name: int(weight * labelled) for name, weight in SPLIT_WEIGHTS}
    for name in names:  # every split present once there are enough podcasts
        if labelled >= len(names) and counts[name] == 0:
            counts[name] = 1
    while sum(counts.values()) > labelled:
        counts[max(counts, key=lambda n: counts[n])] -= 1
    counts["Train"] += labelled - sum(counts.values())
    plan = [name for name in names for _ in range(counts[name])]
    _rng(seed, "splits").shuffle(plan)
    return plan


def _speakers(seed: int, podcast: str, speaker_ids: list[int]) -> tuple[tuple[Speaker, str], ...]:
    rng = _rng(seed, podcast, "speakers")
    voices = rng.sample(VOICES, 2)
    return tuple((make_speaker(rng, str(speaker_ids.pop()), voice), gender) for voice, gender in voices)


def _plan(seed: int, podcasts: int, unlabelled: int, config: ContentConfig, transcript_share: float) -> list[_Segment]:
    ids = podcast_ids(seed, podcasts + unlabelled)
    splits = _split_plan(seed, podcasts) + [""] * unlabelled
    order = _rng(seed, "unlabelled").sample(range(len(ids)), len(ids))  # which podcasts lose their labels
    split_of = {ids[i]: splits[k] for k, i in enumerate(order)}
    speaker_ids = _rng(seed, "speaker-ids").sample(range(1, 3000), 2 * len(ids))
    segments: list[_Segment] = []
    for podcast in ids:
        speakers = _speakers(seed, podcast, speaker_ids)
        gender_of = {s.name: g for s, g in speakers}
        dialogue = generate_dialogue(_rng(seed, podcast, "content"), tuple(s for s, _ in speakers), config)
        rng = _rng(seed, podcast, "layout")
        number = rng.randint(1, 12)
        names, weights = zip(*OTHER_CODES, strict=True)
        for turn in dialogue.turns:
            code = rng.choices(names, weights)[0] if turn.emotion == OTHER else EMOTION_CODES[turn.emotion]
            unknown = rng.random() < UNKNOWN_SPEAKER_SHARE
            segments.append(
                _Segment(
                    podcast=podcast,
                    number=number,
                    split=split_of[podcast],
                    code=code if split_of[podcast] else "",
                    speaker_id="Unknown" if unknown else turn.speaker,
                    gender="Unknown" if unknown else gender_of[turn.speaker],
                    turn=turn,
                    noise_seed=_seed32(seed, podcast, number),
                    transcript=rng.random() < transcript_share,
                )
            )
            number += rng.choice((1, 1, 1, 2, 3))
    return segments


# --- annotations -----------------------------------------------------------------------------------
def _primary(code: str, rng: random.Random) -> str:
    return f"Other-{rng.choice(_OTHER_WORDS)}" if code == "O" else _PRIMARY[code]


def _votes(rng: random.Random, code: str, workers: int) -> list[str]:
    """Primary-emotion codes of `workers` annotators whose plurality is `code` (no single winner for X)."""
    pool = [c for c in _PRIMARY if c != code]
    if code == "X":
        a, b, *rest = rng.sample(list(_PRIMARY), 2 + workers - 4)
        return [a, a, b, b, *rest]
    winners = workers // 2 + 1
    return [code] * winners + [rng.choice(pool) for _ in range(workers - winners)]


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 6)


def _annotations(seed: int, segment: _Segment) -> tuple[list[str], tuple[float, float, float]]:
    """Worker lines (``WORKERxxxxxxxx; Primary; Secondary,...; A:..; V:..; D:..;``) and the A, V, D means."""
    rng = _rng(seed, segment.stem, "annotations")
    workers = rng.randint(5, 7)
    votes = _votes(rng, segment.code, workers)
    rng.shuffle(votes)
    base = _AVD[segment.code]
    lines, ratings = [], []
    for worker, vote in zip(sorted(rng.sample(range(1000, 20000), workers)), votes, strict=True):
        primary = _primary(vote, rng)
        secondary = sorted({primary.split("-", 1)[-1], *rng.sample(_SECONDARY, rng.randint(0, 2))})  # Other-X -> X
        avd = tuple(min(7, max(1, b + rng.randint(-1, 1))) for b in base)
        ratings.append(avd)
        a, v, d = avd
        lines.append(f"WORKER{worker:08d}; {primary}; {','.join(secondary)}; A:{a:.6f}; V:{v:.6f}; D:{d:.6f};")
    means = tuple(_mean([r[i] for r in ratings]) for i in range(3))
    return lines, means  # type: ignore[return-value]


def _number(x: float) -> str:
    return repr(float(x))  # 4.222222, 3.4, 5.0 as in the release


def _write_labels(root: Path, seed: int, segments: list[_Segment]) -> None:
    labelled = sorted((s for s in segments if s.labelled), key=lambda s: s.stem)
    labels_dir = root / "Labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    consensus = io.StringIO()
    consensus.write("FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n")
    detailed = io.StringIO()
    writer = csv.writer(detailed, lineterminator="\n")
    writer.writerow(["FileName", "EmoDetail"])
    raw: list[str] = []
    as_json: dict[str, dict[str, Any]] = {}
    for s in labelled:
        name = f"{s.stem}.wav"
        lines, (act, val, dom) = _annotations(seed, s)
        consensus.write(f"{name},{s.code},{_number(act)},{_number(val)},{_number(dom)},{s.speaker_id},{s.gender},{s.split}\n")
        as_json[name] = {"EmoClass": s.code, "EmoAct": act, "EmoDom": dom, "EmoVal": val, "SpkrID": s.speaker_id,
                         "Gender": s.gender, "Split_Set": s.split}  # fmt: skip
        raw += [f"{name}; {s.code}; A:{act:.6f}; V:{val:.6f}; D:{dom:.6f};", *lines, ""]
        for line in lines:
            writer.writerow([name, line])
    (labels_dir / "labels_consensus.csv").write_text(consensus.getvalue(), encoding="utf-8", newline="")
    (labels_dir / "labels_consensus.json").write_text(json.dumps(as_json, indent=4), encoding="utf-8")
    (labels_dir / "labels_detailed.csv").write_text(detailed.getvalue(), encoding="utf-8", newline="")
    (labels_dir / "labels.txt").write_text("\n".join(raw) + "\n", encoding="utf-8")


def _write_transcripts(root: Path, segments: list[_Segment]) -> None:
    folder = root / "Transcripts"
    folder.mkdir(parents=True, exist_ok=True)
    for s in segments:
        if s.transcript:
            (folder / f"{s.stem}.txt").write_text(s.turn.text, encoding="utf-8")


# --- report ----------------------------------------------------------------------------------------
def _statistics(segments: list[_Segment]) -> dict[str, Any]:
    labelled = [s for s in segments if s.labelled]
    return {
        "segments": len(segments),
        "labelled": len(labelled),
        "unlabelled": len(segments) - len(labelled),
        "podcasts": len({s.podcast for s in segments}),
        "splits": dict(sorted(Counter(s.split or "(no labels row)" for s in segments).items())),
        "codes": dict(sorted(Counter(s.code for s in labelled).items())),
        "text_sentiment": dict(sorted(Counter(s.text_sentiment for s in segments).items())),
        "cues": dict(sorted(Counter(s.turn.cue for s in segments if s.turn.emotion not in (NEUTRAL, OTHER)).items())),
        "transcripts": sum(s.transcript for s in segments),
        "unknown_speakers": sum(s.speaker_id == "Unknown" for s in segments),
    }


def _record(s: _Segment, duration: float) -> dict[str, Any]:
    return {
        "file": f"{s.stem}.wav", "podcast": s.podcast, "segment": s.number, "split": s.split, "code": s.code,
        "emotion": s.turn.emotion, "sentiment": SENTIMENT.get(s.turn.emotion), "text_sentiment": s.text_sentiment,
        "cue": s.turn.cue, "label_segment": s.turn.segment, "speaker": s.speaker_id, "voice_speaker": s.turn.speaker,
        "text": s.turn.text, "transcript_file": s.transcript, "voice": asdict(s.turn.voice), "duration": round(duration, 4),
    }  # fmt: skip


def _readme(parameters: dict[str, Any], stats: dict[str, Any]) -> str:
    return f"""GENERATED CORPUS - this is NOT the real MSP-Podcast release.

Written by data_modules.generated.msp_podcast (generator version {parameters["version"]})
in the on-disk layout and file formats of MSP-PODCAST-Publish-1.xx, with speech synthesised by
{parameters["espeak"]}. It stands in for the licensed corpus in the MERITS-L pre-training chain
(transcribe -> pseudo-label -> text pre-training, CARE): about a third of the segments state a happy,
angry or sad feeling in words (see text_sentiment in generated_turns.jsonl), others carry it in the voice.

Parameters: {json.dumps({k: v for k, v in parameters.items() if k not in ("generator", "espeak")})}
Segments: {stats["segments"]} in {stats["podcasts"]} podcasts; {stats["labelled"]} labelled, {stats["unlabelled"]} audio-only.
Splits: {json.dumps(stats["splits"])}
Consensus codes: {json.dumps(stats["codes"])}
Text sentiment: {json.dumps(stats["text_sentiment"])}

generated.json holds the parameters and statistics; generated_turns.jsonl the ground truth per segment.
"""


def _build(root: Path, parameters: dict[str, Any], config: ContentConfig, workers: int | None) -> None:
    seed = parameters["seed"]
    segments = _plan(seed, parameters["podcasts"], parameters["unlabelled_podcasts"], config, parameters["transcript_share"])
    jobs = [SynthesisJob(s.turn.text, s.turn.voice, root / "Audios" / f"{s.stem}.wav", s.noise_seed) for s in segments]
    durations = synthesize_many(jobs, workers)
    (root / "Audios" / f"._{segments[0].stem}.wav").write_bytes(_APPLEDOUBLE)
    _write_labels(root, seed, segments)
    _write_transcripts(root, segments)
    stats = _statistics(segments)
    records = [json.dumps(_record(s, d), ensure_ascii=False) for s, d in zip(segments, durations, strict=True)]
    (root / "generated_turns.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (root / "README.txt").write_text(_readme(parameters, stats), encoding="utf-8")
    # Written last: its presence marks a complete corpus.
    (root / "generated.json").write_text(json.dumps({"parameters": parameters, "statistics": stats}, indent=2) + "\n", encoding="utf-8")


def generate_msp_podcast(
    out_dir: str | Path,
    seed: int = 0,
    podcasts: int = 16,
    unlabelled_podcasts: int = 1,
    min_turns: int = 10,
    max_turns: int = 16,
    transcript_share: float = 0.8,
    workers: int | None = None,
) -> Path:
    """Write a generated corpus to `out_dir/MSP-PODCAST-Publish-1.11` and return that folder.

    `podcasts` labelled podcasts of `min_turns`..`max_turns` segments (default: about 210 segments)
    plus `unlabelled_podcasts` audio-only ones. Returns at once when the folder holds a corpus generated
    with the same parameters; replaces a generated corpus with other parameters; refuses to touch a
    folder that is not a generated corpus. `workers` (synthesis threads) does not change the output.
    """
    if podcasts < 1 or unlabelled_podcasts < 0:
        raise ValueError(f"podcasts: expected >= 1 (and unlabelled_podcasts >= 0), got {podcasts} and {unlabelled_podcasts}")
    if podcasts + unlabelled_podcasts > 1999:
        raise ValueError(f"podcasts + unlabelled_podcasts: expected at most 1999, got {podcasts + unlabelled_podcasts}")
    if not 0.0 <= transcript_share <= 1.0:
        raise ValueError(f"transcript_share: expected a value in [0, 1], got {transcript_share}")
    config = ContentConfig(min_turns=min_turns, max_turns=max_turns, cue_weights=CUE_WEIGHTS)
    parameters = {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "podcasts": podcasts,
        "unlabelled_podcasts": unlabelled_podcasts,
        "min_turns": min_turns,
        "max_turns": max_turns,
        "transcript_share": transcript_share,
        "espeak": installed_espeak_version(),
    }
    return build_corpus(out_dir, CORPUS_FOLDER, parameters, lambda partial: _build(partial, parameters, config, workers))
