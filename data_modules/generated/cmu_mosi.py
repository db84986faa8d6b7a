"""A generated stand-in for CMU-MOSI, written in the raw archive's ``Raw/`` layout and formats.

Each video is a monologue (one speaker, one espeak-ng voice) of opinion segments. Words and voices come
from the content model's building blocks (``content.py``); the sentiment structure is this module's:

- every video has an overall *polarity* (positive or negative review);
- its segments form *spans* of 2-4 consecutive segments sharing one class: ``pos`` (the content model's
  ``hap`` words and voice), ``neg`` (its ``sad`` words and voice) or ``neu`` (neutral words and voice).
  Spans of the video's polarity are the most frequent; adjacent spans differ. Negative is ``sad`` alone,
  not also ``ang``: an angry voice is loud and fast, a sad one quiet and slow, so "negative" would be two
  opposite voices, and the tiny demo models learn one vocabulary per class far more readily;
- a ``pos``/``neg`` segment carries a cue as in the content model: ``text`` (35 %), ``voice`` (35 %),
  ``both`` (10 %) or ``none`` (20 %), at least one cued segment per span. Its score's sign is the span's,
  its magnitude grows with the cue (``both`` 2-3, ``text``/``voice`` 1-2.6, ``none`` 0.4-1.6);
- a ``neu`` segment's score is mild and follows the video's polarity (0 or +0.2..+0.6 in a positive
  review, -0.2..-0.6 in a negative one): only the rest of the monologue tells its sign.

So, as for the generated IEMOCAP, a segment's label is carried partly by its words, partly by its voice
and partly by its context, and the MERITS-L claims (Stage II > Stage I, Stage III > both Stage II) are
testable. Scores are multiples of 0.2 (now and then of 1/3), as averages of annotator ratings are.

Video ids are real ones, drawn from the CMU-MultimodalSDK standard folds (train videos from the train
fold, and so on), so that the shipped folds split the generated corpus and ``prepare``, the data module
and the demo need no extra argument. Split sizes follow ``GENERATED_SHARES`` (more validation and
test data than the SDK folds' 11 % / 33 %, for steadier model selection and demo numbers).
``video_list.json`` beside ``Raw/`` states the same split in the user video-list format (pass it as
``video_list`` to make it explicit, or edit it to try another partition). Validation and test videos use espeak voices that no training video uses.

Files: ``Raw/Audio/WAV_16000/Segmented/<video>_<seg>.wav`` (16 kHz mono PCM16, except a few stereo and
one 44.1 kHz file, as in the real archive), ``Raw/Transcript/Segmented/<video>.annotprocessed``
(lower-cased ``<seg>_DELIM_<text>`` lines; one file with CRLF endings; a few unlabelled closing lines),
``Raw/Transcript/Full/<video>.textonly`` and ``Raw/Labels/OpinionLevelSentiment.csv`` (no header; one
zero-length interval, like ``2WGyTLYerpo_44`` in the release). The corpus folder also holds
``README.txt``, ``generated.json`` (parameters and statistics; it marks a finished corpus) and
``generated_segments.jsonl`` (the ground truth per segment: class, cue, voice settings, score).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from data_modules.cmu_mosi_parser import SPLITS, binary_label, score_sign, standard_folds
from data_modules.generated.content import (
    CUES,
    Speaker,
    VoiceParams,
    emotional_sentence,
    make_speaker,
    neutral_sentence,
    segment_lengths,
    voice_for,
)
from data_modules.generated.output import build_corpus
from data_modules.generated.speech import (
    SAMPLE_RATE,
    SynthesisJob,
    installed_espeak_version,
    synthesize_many,
)

CORPUS_FOLDER = "CMU_MOSI"
VIDEO_LIST = "video_list.json"
GENERATOR_VERSION = 1
# Validation and test speakers are unseen in training.
TRAIN_VOICES = ("en-us+m1", "en-us+m2", "en-us+m3", "en-us+m4", "en-us+f1", "en-us+f2", "en-us+f3")
HELD_OUT_VOICES = ("en-us+m5", "en-us+m6", "en-us+m7", "en-us+f4", "en-us+f5")
CUE_WEIGHTS: tuple[tuple[str, float], ...] = (("text", 0.35), ("voice", 0.35), ("both", 0.10), ("none", 0.20))
# span class weights by video polarity (+1 positive review, -1 negative review)
SPAN_WEIGHTS = {
    1: {"pos": 0.50, "neu": 0.25, "neg": 0.25},
    -1: {"neg": 0.50, "neu": 0.25, "pos": 0.25},
}
MAGNITUDE = {"both": (2.0, 3.0), "text": (1.0, 2.6), "voice": (1.0, 2.6), "none": (0.4, 1.6)}
NEUTRAL_MAGNITUDE = (0.2, 0.6)
NEUTRAL_ZERO_SHARE = (
    0.4  # of the neutral segments of positive reviews scored exactly 0 (positive under has-0)
)
THIRDS_SHARE = 0.1  # scores rounded to a multiple of 1/3 rather than 0.2
STEREO_SHARE = 0.02
GENERATED_SHARES = {"train": 0.55, "validation": 0.15, "test": 0.30}
KIND_EMOTION = {"pos": "hap", "neg": "sad", "neu": "neu"}  # the content-model emotion of a span's cues
MIN_SPAN, MAX_SPAN = 2, 4


@dataclass(frozen=True)
class _Segment:
    split: str
    video: str
    number: int  # 1-based
    kind: str  # pos / neg / neu
    emotion: str  # the content-model emotion of its cues (hap / sad / neu)
    cue: str
    score: float
    score_text: str
    text: str
    voice: VoiceParams
    noise_seed: int

    @property
    def utt_id(self) -> str:
        return f"{self.video}_{self.number}"

    @property
    def wav(self) -> Path:
        return Path("Raw") / "Audio" / "WAV_16000" / "Segmented" / f"{self.utt_id}.wav"


def _rng(*parts: object) -> random.Random:
    # String seeds hash with SHA-512 in `random`, so they do not depend on PYTHONHASHSEED.
    return random.Random(":".join(["cmu_mosi", *map(str, parts)]))


def _seed32(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def videos_per_split(videos: int, folds: dict[str, list[str]]) -> dict[str, int]:
    """How many videos each split gets: ``GENERATED_SHARES``, at least one each, at most the fold's size."""
    total = sum(len(v) for v in folds.values())
    if not 3 <= videos <= total:
        raise ValueError(
            f"videos: expected 3..{total} (one per split at least, the standard folds' videos at most), got {videos}"
        )
    counts = {
        s: min(len(folds[s]), max(1, round(videos * GENERATED_SHARES[s]))) for s in ("validation", "test")
    }
    counts["train"] = videos - counts["validation"] - counts["test"]
    for split in ("test", "validation"):  # more videos than the train fold holds: the rest go elsewhere
        moved = min(max(0, counts["train"] - len(folds["train"])), len(folds[split]) - counts[split])
        counts[split] += moved
        counts["train"] -= moved
    return {s: counts[s] for s in SPLITS}


def _quantize(rng: random.Random, value: float) -> tuple[float, str]:
    step = 1 / 3 if rng.random() < THIRDS_SHARE else 0.2
    value = max(-3.0, min(3.0, round(value / step) * step))
    text = f"{value:.9g}"
    return float(text), text


def _span_kinds(rng: random.Random, count: int, polarity: int) -> list[str]:
    kinds: list[str] = []
    for _ in range(count):
        options = [k for k in SPAN_WEIGHTS[polarity] if not kinds or k != kinds[-1]]
        kinds.append(rng.choices(options, [SPAN_WEIGHTS[polarity][k] for k in options])[0])
    return kinds


def _span_cues(rng: random.Random, length: int) -> list[str]:
    names, weights = zip(*CUE_WEIGHTS, strict=True)
    cues = rng.choices(names, weights, k=length)
    if all(c == "none" for c in cues):  # every span is recoverable from both modalities together
        cued = [(n, w) for n, w in CUE_WEIGHTS if n != "none"]
        cues[rng.randrange(length)] = rng.choices([n for n, _ in cued], [w for _, w in cued])[0]
    return cues


def _score(rng: random.Random, kind: str, cue: str, polarity: int) -> float:
    if kind == "neu":
        if polarity > 0 and rng.random() < NEUTRAL_ZERO_SHARE:
            return 0.0
        return polarity * rng.uniform(*NEUTRAL_MAGNITUDE)
    sign = 1 if kind == "pos" else -1
    return sign * rng.uniform(*MAGNITUDE[cue])


def _plan_video(
    seed: int, split: str, video: str, speaker: Speaker, min_segments: int, max_segments: int
) -> list[_Segment]:
    rng = _rng(seed, video, "content")
    polarity = rng.choice((1, -1))
    n = rng.randint(min_segments, max_segments)
    lengths = segment_lengths(rng, n, MIN_SPAN, MAX_SPAN)
    kinds = _span_kinds(rng, len(lengths), polarity)
    segments: list[_Segment] = []
    for length, kind in zip(lengths, kinds, strict=True):
        emotion = KIND_EMOTION[kind]
        cues = ["none"] * length if kind == "neu" else _span_cues(rng, length)
        for cue in cues:
            text_emotion = emotion if cue in ("text", "both") else "neu"
            voice_emotion = emotion if cue in ("voice", "both") else "neu"
            text = emotional_sentence(rng, text_emotion) if text_emotion != "neu" else neutral_sentence(rng)
            score, score_text = _quantize(rng, _score(rng, kind, cue, polarity))
            number = len(segments) + 1
            segments.append(
                _Segment(
                    split=split,
                    video=video,
                    number=number,
                    kind=kind,
                    emotion=emotion,
                    cue=cue,
                    score=score,
                    score_text=score_text,
                    text=text,
                    voice=voice_for(rng, speaker, voice_emotion),
                    noise_seed=_seed32(seed, video, number),
                )
            )
    return segments


def transcript_text(text: str) -> str:
    """The transcript form of a sentence: lower case, no punctuation but apostrophes (as in MOSI)."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def _times(rng: random.Random, durations: list[float]) -> list[tuple[float, float]]:
    """Start and end of each segment in its video: gaps of 0-3 s, now and then a small overlap."""
    times = []
    start = rng.uniform(0.5, 8.0)
    for duration in durations:
        times.append((float(f"{start:.10g}"), float(f"{start + duration:.10g}")))
        start += duration + (-rng.uniform(0.05, 0.3) if rng.random() < 0.1 else rng.uniform(0.0, 3.0))
    return times


def _restyle_wav(path: Path, channels: int, rate: int) -> None:
    """Rewrite a 16 kHz mono wav as `channels` channels at `rate` (the archive has a few such files)."""
    audio, _ = sf.read(str(path), dtype="float32")
    if rate != SAMPLE_RATE:
        audio = AF.resample(torch.from_numpy(audio), SAMPLE_RATE, rate).numpy()
    sf.write(str(path), np.stack([audio] * channels, axis=1), rate, subtype="PCM_16")


def _write_lines(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))


def _statistics(segments: list[_Segment]) -> dict[str, Any]:
    per_split: dict[str, Any] = {}
    for split in SPLITS:
        mine = [s for s in segments if s.split == split]
        per_split[split] = {
            "videos": len({s.video for s in mine}),
            "segments": len(mine),
            "scores": {k: sum(score_sign(s.score) == k for s in mine) for k in ("<0", "=0", ">0")},
            "labels": dict(sorted(Counter(binary_label(s.score) for s in mine).items())),
            "kinds": dict(sorted(Counter(s.kind for s in mine).items())),
            "cues": dict(sorted(Counter(s.cue for s in mine if s.kind != "neu").items())),
        }
    return {"segments": len(segments), "videos": len({s.video for s in segments}), "splits": per_split}


def _readme(parameters: dict[str, Any], stats: dict[str, Any]) -> str:
    splits = "\n".join(
        f"  {name}: {s['videos']} videos, {s['segments']} segments, scores {s['scores']}"
        for name, s in stats["splits"].items()
    )
    return f"""GENERATED CORPUS - this is NOT the real CMU-MOSI release.

Written by data_modules.generated.cmu_mosi (generator version {parameters["version"]})
in the on-disk layout and file formats of the CMU-MOSI raw archive (Raw/), with speech synthesised by
{parameters["espeak"]}. The video ids are real CMU-MOSI ids taken from the CMU-MultimodalSDK standard
folds so that those folds split this corpus; the words, voices and scores are all generated.
Sentiment is carried partly by the words, partly by the voice (pitch, rate, loudness, pauses) and
partly by the monologue (neutral segments take the sign of the video's overall opinion).

Parameters: {json.dumps({k: v for k, v in parameters.items() if k not in ("generator", "espeak")})}
Segments: {stats["segments"]} in {stats["videos"]} videos.
{splits}

{VIDEO_LIST} gives the split in the user video-list format; generated.json the parameters and
statistics; generated_segments.jsonl the ground truth per segment (class, cue, espeak settings, score).
"""


def _build(root: Path, parameters: dict[str, Any], workers: int | None) -> None:
    seed = parameters["seed"]
    folds = standard_folds()
    counts = videos_per_split(parameters["videos"], folds)
    rng = _rng(seed, "videos")
    chosen = {split: sorted(rng.sample(folds[split], counts[split])) for split in SPLITS}
    plan: dict[str, list[_Segment]] = {}
    for split in SPLITS:
        voices = TRAIN_VOICES if split == "train" else HELD_OUT_VOICES
        for video in chosen[split]:
            speaker = make_speaker(
                _rng(seed, video, "speaker"), "S", _rng(seed, video, "voice").choice(voices)
            )
            plan[video] = _plan_video(
                seed, split, video, speaker, parameters["min_segments"], parameters["max_segments"]
            )
    segments = [s for planned in plan.values() for s in planned]
    durations = iter(
        synthesize_many(
            [SynthesisJob(s.text, s.voice, root / s.wav, s.noise_seed) for s in segments], workers
        )
    )

    quirks = _rng(seed, "quirks")
    videos = sorted(plan)
    crlf_video, closing_videos = quirks.choice(videos), set(quirks.sample(videos, min(3, len(videos))))
    zero_length = quirks.choice(segments).utt_id
    rows, records = [], []
    for video, planned in plan.items():
        times = _times(_rng(seed, video, "times"), [next(durations) for _ in planned])
        lines = [f"{s.number}_DELIM_{transcript_text(s.text)}" for s in planned]
        if video in closing_videos:  # a closing remark nobody labelled (no wav either)
            lines.append(
                f"{len(planned) + 1}_DELIM_{transcript_text(neutral_sentence(_rng(seed, video, 'closing')))}"
            )
        transcripts = root / "Raw" / "Transcript"
        _write_lines(
            transcripts / "Segmented" / f"{video}.annotprocessed",
            lines,
            "\r\n" if video == crlf_video else "\n",
        )
        _write_lines(
            transcripts / "Full" / f"{video}.textonly", [" ".join(transcript_text(s.text) for s in planned)]
        )
        for s, (start, end) in zip(planned, times, strict=True):
            if s.utt_id == zero_length:
                end = start
            rows.append(f"{start:.10g},{end:.10g},{video},{s.number},{s.score_text}")
            records.append(
                {
                    **{k: v for k, v in asdict(s).items() if k not in ("voice", "noise_seed")},
                    "voice": asdict(s.voice),
                    "start": start,
                    "end": end,
                    "wav": s.wav.as_posix(),
                }
            )
    for s in segments:
        if quirks.random() < STEREO_SHARE:
            _restyle_wav(root / s.wav, channels=2, rate=SAMPLE_RATE)
    _restyle_wav(root / quirks.choice(segments).wav, channels=2, rate=44_100)
    _write_lines(root / "Raw" / "Labels" / "OpinionLevelSentiment.csv", rows)

    stats = _statistics(segments)
    (root / VIDEO_LIST).write_text(json.dumps(chosen, indent=1) + "\n", encoding="utf-8")
    _write_lines(root / "generated_segments.jsonl", [json.dumps(r, ensure_ascii=False) for r in records])
    (root / "README.txt").write_text(_readme(parameters, stats), encoding="utf-8")
    # Written last: its presence marks a complete corpus.
    (root / "generated.json").write_text(
        json.dumps({"parameters": parameters, "statistics": stats}, indent=2) + "\n", encoding="utf-8"
    )


def generate_cmu_mosi(
    out_dir: str | Path,
    seed: int = 0,
    videos: int = 56,
    min_segments: int = 10,
    max_segments: int = 14,
    workers: int | None = None,
) -> Path:
    """Write a generated corpus to `out_dir/CMU_MOSI` (holding ``Raw/``) and return that folder.

    Returns at once when the folder holds a corpus generated with the same parameters; replaces a
    generated corpus with other parameters; refuses to touch a folder that is not a generated corpus.
    `workers` (synthesis threads) does not change the output.
    """
    if not MIN_SPAN <= min_segments <= max_segments:
        raise ValueError(
            f"segments per video: expected {MIN_SPAN} <= min_segments <= max_segments, got {min_segments}..{max_segments}"
        )
    videos_per_split(videos, standard_folds())  # validates the count before any work
    parameters = {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "videos": videos,
        "min_segments": min_segments,
        "max_segments": max_segments,
        "espeak": installed_espeak_version(),
    }
    return build_corpus(out_dir, CORPUS_FOLDER, parameters, lambda partial: _build(partial, parameters, workers))


__all__ = ["CORPUS_FOLDER", "CUES", "VIDEO_LIST", "generate_cmu_mosi", "transcript_text", "videos_per_split"]
