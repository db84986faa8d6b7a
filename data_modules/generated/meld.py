"""A generated stand-in for MELD, written in the real `MELD.Raw` layout: label CSVs and mp4 clips.

Dialogues come from the content model (``content.py``) and are spoken by a cast of six recurring
characters (plus a few guests) on their own espeak-ng voices; this module maps them onto MELD:

- labels: the content model's ``neu``/``ang``/``hap``/``sad`` become ``neutral``/``anger``/``joy``/
  ``sadness``; its *other* turns (neutral words and voice, about 10 %) get ``surprise``, ``fear`` or
  ``disgust``, the classes with no cue (as hard as MELD's rare classes are). Sentiment follows the
  emotion (``joy`` positive; ``anger``, ``sadness``, ``fear``, ``disgust`` negative; ``surprise``
  either);
- files: ``MELD.Raw/{train,dev,test}_sent_emo.csv`` with MELD's exact header, quoting (utterances with
  commas, ’ apostrophes and embedded double quotes) and CRLF line ends; clips
  ``MELD.Raw/{train_splits,dev_splits_complete,output_repeated_splits_test}/dia{D}_utt{U}.mp4`` with
  an H.264 video track (a black 64x64 frame at 5 fps; audio only where PyAV lacks libx264) and an AAC
  audio track: 16 kHz mono, and about one clip in 16 at 48 or 44.1 kHz stereo;
- the real corpus' quirks and defects: times ``h:mm:ss,mmm`` with one- and two-digit hours and one
  two-digit millisecond field, non-contiguous ``Sr No.``, a missing train Dialogue_ID, Utterance_ID
  gaps in a train and a dev dialogue, a missing dev clip, a corrupt train clip (cut before its moov
  atom), a mis-cut train clip of about 40 s, two unannotated extra dev clips, and a ``._*``
  AppleDouble file and a ``final_videos_test...`` clip in the test folder.

Clips are written in-process with PyAV (its wheel bundles FFmpeg with libx264 and the AAC encoder):
about 0.03 s a clip, against 0.4 s for one ``ffmpeg`` command per clip.

The corpus folder also holds ``README.txt``, ``generated.json`` (parameters, statistics and the
planted defects; it marks a finished corpus) and ``generated_turns.jsonl`` (ground truth per
utterance), which no real release has.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

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
    NOISE_FLOOR_DBFS,
    SAMPLE_RATE,
    espeak_executable,
    installed_espeak_version,
    synthesize,
)
from data_modules.meld_parser import HEADER, MELD_SPLITS, MeldSplit

CORPUS_FOLDER = "MELD.Raw"
GENERATOR_VERSION = 1
CAST: tuple[tuple[str, str], ...] = (
    ("Monica", "en-us+f1"), ("Rachel", "en-us+f2"), ("Phoebe", "en-us+f3"),
    ("Ross", "en-us+m1"), ("Chandler", "en-us+m2"), ("Joey", "en-us+m3"),
)  # fmt: skip
GUESTS: tuple[tuple[str, str], ...] = (
    ("The Interviewer", "en-us+m4"),
    ("Janice", "en-us+f4"),
    ("Mike", "en-us+m5"),
)
EMOTION_MAP = {"neu": "neutral", "ang": "anger", "hap": "joy", "sad": "sadness"}
OTHER_EMOTIONS: tuple[tuple[str, float], ...] = (("surprise", 0.5), ("fear", 0.25), ("disgust", 0.25))
SENTIMENT = {
    "neutral": "neutral",
    "joy": "positive",
    "anger": "negative",
    "sadness": "negative",
    "fear": "negative",
    "disgust": "negative",
}
# (output rate, channels, share of clips); the rest are 16 kHz mono
CLIP_FORMATS: tuple[tuple[int, int, float], ...] = ((48000, 2, 0.04), (44100, 2, 0.02))
LONG_CLIP_SECONDS = 40.0
QUOTE_SHARE = 0.06  # of the turns with neutral words, reported speech in double quotes
ONE_DIGIT_HOUR_SHARE = 0.25  # of the dialogues (2 412 of 9 989 train rows in the real CSV)
VIDEO_RATE, VIDEO_SIZE = 5, 64
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ".ljust(4096, b"\x00")


# --- mp4 clips -------------------------------------------------------------------------------------
def has_h264() -> bool:
    """Whether PyAV can encode H.264 video (libx264); without it clips are audio-only mp4."""
    return "libx264" in av.codecs_available


def write_clip(
    path: str | Path,
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    out_rate: int = SAMPLE_RATE,
    channels: int = 1,
    video: bool = True,
) -> Path:
    """Write mono float32 `audio` as a MELD-like mp4: AAC at `out_rate` with `channels`, and a black H.264 video track."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "mono" if channels == 1 else "stereo"
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    with av.open(str(path), "w", format="mp4") as container:
        picture = None
        if video and has_h264():
            picture = container.add_stream("libx264", rate=VIDEO_RATE)
            picture.width = picture.height = VIDEO_SIZE
            picture.pix_fmt = "yuv420p"
            picture.options = {"preset": "ultrafast", "threads": "1"}
        sound = container.add_stream("aac", rate=out_rate)
        sound.layout = layout
        sound.options = {"aac_coder": "fast"}
        if samples.size:
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=out_rate, frame_size=1024)
            frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
            frame.sample_rate = sample_rate
            written = 0
            for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
                # explicit timestamps: the resampler leaves them unset at 44.1 kHz, which the muxer rejects
                chunk.pts, chunk.time_base = written, Fraction(1, out_rate)
                written += chunk.samples
                container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
        if picture is not None:
            black = np.zeros((VIDEO_SIZE, VIDEO_SIZE, 3), dtype=np.uint8)
            for i in range(max(1, round(samples.size / sample_rate * VIDEO_RATE))):
                image = av.VideoFrame.from_ndarray(black, format="rgb24")
                image.pts = i
                container.mux(picture.encode(image))
            container.mux(picture.encode(None))
    return path


def corrupt_clip(path: str | Path) -> None:
    """Cut an mp4 to its first third: the moov atom (written last) is lost, as in MELD's train dia125_utt3."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 3)])


# --- planning --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PlannedUtterance:
    split: MeldSplit
    dialogue: int
    utterance: int  # Utterance_ID
    turn: Turn
    text: str  # as written in the CSV
    emotion: str
    sentiment: str
    out_rate: int
    channels: int
    noise_seed: int
    long: bool = False

    @property
    def clip(self) -> Path:
        return Path(self.split.clip_folder) / f"dia{self.dialogue}_utt{self.utterance}.mp4"

    @property
    def item(self) -> str:
        return f"{self.split.name}/dia{self.dialogue}_utt{self.utterance}"


def _rng(*parts: object) -> random.Random:
    # String seeds hash with SHA-512 in `random`, so they do not depend on PYTHONHASHSEED.
    return random.Random(":".join(["meld", *map(str, parts)]))


def _seed32(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def _cast(seed: int) -> dict[str, Speaker]:
    return {name: make_speaker(_rng(seed, "speaker", name), name, voice) for name, voice in (*CAST, *GUESTS)}


def _dialogue_speakers(rng: random.Random, cast: dict[str, Speaker]) -> tuple[Speaker, ...]:
    names = rng.sample([n for n, _ in CAST], 3 if rng.random() < 0.3 else 2)
    if rng.random() < 0.1:
        names[-1] = rng.choice([n for n, _ in GUESTS])
    return tuple(cast[n] for n in names)


def _csv_text(rng: random.Random, turn: Turn) -> str:
    text = turn.text
    # reported speech in quotes, for turns whose words carry nothing (whatever their label)
    if not turn.text_cue and rng.random() < QUOTE_SHARE:
        text = f'So he goes, "{text}"'
    return text.replace("'", "\u2019")  # MELD's apostrophes are typographic


def _labels(rng: random.Random, turn: Turn) -> tuple[str, str]:
    if turn.emotion == OTHER:
        names, weights = zip(*OTHER_EMOTIONS, strict=True)
        emotion = rng.choices(names, weights)[0]
    else:
        emotion = EMOTION_MAP[turn.emotion]
    sentiment = rng.choice(("positive", "negative")) if emotion == "surprise" else SENTIMENT[emotion]
    return emotion, sentiment


def _clip_format(rng: random.Random) -> tuple[int, int]:
    draw = rng.random()
    for rate, channels, share in CLIP_FORMATS:
        if draw < share:
            return rate, channels
        draw -= share
    return SAMPLE_RATE, 1


def _dialogue_ids(split: MeldSplit, count: int) -> list[int]:
    if split.split != "train" or count <= 3:
        return list(range(count))
    return [i for i in range(count + 1) if i != 3]  # the real train CSV has no Dialogue_ID 60; this one skips 3


def _plan(seed: int, counts: dict[str, int], config: ContentConfig) -> list[_PlannedUtterance]:
    cast = _cast(seed)
    planned: list[_PlannedUtterance] = []
    for split in MELD_SPLITS:
        for dialogue in _dialogue_ids(split, counts[split.split]):
            rng = _rng(seed, split.name, dialogue)
            content = generate_dialogue(
                _rng(seed, split.name, dialogue, "content"), _dialogue_speakers(rng, cast), config
            )
            for u, turn in enumerate(content.turns):
                emotion, sentiment = _labels(rng, turn)
                rate, channels = _clip_format(rng)
                planned.append(
                    _PlannedUtterance(
                        split,
                        dialogue,
                        u,
                        turn,
                        _csv_text(rng, turn),
                        emotion,
                        sentiment,
                        rate,
                        channels,
                        _seed32(seed, split.name, dialogue, u),
                    )  # fmt: skip
                )
    return planned


def _plant_defects(planned: list[_PlannedUtterance]) -> tuple[list[_PlannedUtterance], dict[str, Any]]:
    """Utterance_ID gaps and a long clip; the missing and corrupt clips, the short-ms row, the extra clips."""
    out = list(planned)

    def dialogue(split: str, k: int) -> list[_PlannedUtterance]:
        d = sorted({p.dialogue for p in out if p.split.split == split})[k]
        return [p for p in out if p.split.split == split and p.dialogue == d]

    # Utterance_ID gaps: the turns after the third of train dialogue #1 and dev dialogue #2 are numbered one higher
    gaps = []
    for split, k in (("train", 1), ("validation", 2)):
        turns = dialogue(split, k)
        gaps.append(turns[0].item.rsplit("_", 1)[0])
        for p in turns[3:]:
            out[out.index(p)] = replace(p, utterance=p.utterance + 1)
    long = dialogue("train", 4)[0]
    out[out.index(long)] = replace(long, long=True)
    last = dialogue("validation", 0)[-1]
    extras = [replace(last, utterance=last.utterance + k) for k in (1, 2)]  # clips without CSV rows
    defects = {
        "missing_clip": dialogue("validation", 1)[2].item,
        "corrupt_clip": dialogue("train", 2)[3].item,
        "long_clip": long.item,
        "short_milliseconds": dialogue("train", 5)[1].item,
        "utterance_id_gaps": gaps,
        "extra_clips": [p.item for p in extras],
    }
    return out, {"defects": defects, "extras": extras}


def _audio(p: _PlannedUtterance) -> np.ndarray:
    spoken = p.text.replace("\u2019", "'")
    audio = synthesize(spoken, p.turn.voice, p.noise_seed)
    if p.long:  # a mis-cut clip: the utterance in the middle of about 40 s of room noise
        pad = max(0, int(LONG_CLIP_SECONDS * SAMPLE_RATE) - audio.size) // 2
        noise = (
            np.random.default_rng(p.noise_seed)
            .normal(0.0, 10 ** (NOISE_FLOOR_DBFS / 20), (2, pad))
            .astype(np.float32)
        )
        audio = np.concatenate([noise[0], audio, noise[1]])
    return audio


def _render(root: Path, p: _PlannedUtterance, skip: bool) -> float:
    """Write one clip (unless `skip`); its audio duration in seconds."""
    audio = _audio(p)
    if not skip:
        write_clip(root / p.clip, audio, SAMPLE_RATE, p.out_rate, p.channels)
    return audio.size / SAMPLE_RATE


# --- CSVs ------------------------------------------------------------------------------------------
def format_time(seconds: float, one_digit_hour: bool = False, short_ms: bool = False) -> str:
    """MELD's ``h:mm:ss,mmm`` (``0:14:02,118`` with a one-digit hour; ``,28`` with `short_ms` when ms < 100)."""
    total_ms = int(round(seconds * 1000))
    h, rest = divmod(total_ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    hour = f"{h:d}" if one_digit_hour else f"{h:02d}"
    return f"{hour}:{m:02d}:{s:02d},{ms:d}" if short_ms and ms < 100 else f"{hour}:{m:02d}:{s:02d},{ms:03d}"


def _rows(
    seed: int, planned: list[_PlannedUtterance], durations: dict[str, float], short_ms: str
) -> dict[str, list[list[str]]]:
    rows: dict[str, list[list[str]]] = {s.split: [] for s in MELD_SPLITS}
    serial = {s.split: 0 for s in MELD_SPLITS}
    by_dialogue: dict[tuple[str, int], list[_PlannedUtterance]] = {}
    for p in planned:
        by_dialogue.setdefault((p.split.split, p.dialogue), []).append(p)
    for (split, dialogue), turns in by_dialogue.items():
        rng = _rng(seed, split, dialogue, "times")
        season, episode = rng.randint(1, 10), rng.randint(1, 24)
        one_digit = rng.random() < ONE_DIGIT_HOUR_SHARE
        cursor = rng.uniform(30.0, 1500.0)
        for p in turns:
            serial[split] += 1 + (rng.random() < 0.1) * rng.randint(1, 3)  # Sr No. is not contiguous
            start, end = cursor, cursor + min(durations[p.item], 12.0)
            short = p.item == short_ms
            if short:
                end = float(int(end) + 1) + 0.028  # written as ",28", like train dia437_utt2
            rows[split].append([
                str(serial[split]), p.text, p.turn.speaker, p.emotion, p.sentiment, str(p.dialogue), str(p.utterance),
                str(season), str(episode), format_time(start, one_digit), format_time(end, one_digit, short),
            ])  # fmt: skip
            cursor = end + rng.uniform(0.1, 1.0)
    return rows


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(HEADER)
        writer.writerows(rows)


# --- the corpus ------------------------------------------------------------------------------------
def _statistics(planned: list[_PlannedUtterance]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for s in MELD_SPLITS:
        mine = [p for p in planned if p.split == s]
        splits[s.split] = {
            "utterances": len(mine),
            "dialogues": len({p.dialogue for p in mine}),
            "emotions": _count(p.emotion for p in mine),
            "sentiments": _count(p.sentiment for p in mine),
            "cues": _count(p.turn.cue for p in mine if p.turn.emotion not in (NEUTRAL, OTHER)),
        }
    return {"utterances": len(planned), "splits": splits}


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def _readme(parameters: dict[str, Any], stats: dict[str, Any], defects: dict[str, Any]) -> str:
    splits = "\n".join(
        f"  {name}: {s['utterances']} utterances in {s['dialogues']} dialogues, emotions {s['emotions']}"
        for name, s in stats["splits"].items()
    )
    return f"""GENERATED CORPUS - this is NOT the real MELD release.

Written by data_modules.generated.meld (generator version {parameters["version"]})
in the on-disk layout and file formats of MELD.Raw, with speech synthesised by {parameters["espeak"]}.
It exists so that the MERITS-L pipeline can be tested and demonstrated without the real clips.
Emotion is carried partly by the words, partly by the voice and partly by the conversation.

Parameters: {json.dumps({k: v for k, v in parameters.items() if k not in ("generator", "espeak")})}
{splits}

Planted defects (as in the real archive): {json.dumps(defects)}
generated.json holds the parameters, statistics and defects; generated_turns.jsonl the ground truth
per utterance (content emotion, cue, espeak settings, clip format).
"""


def _turn_record(p: _PlannedUtterance, duration: float) -> dict[str, Any]:
    return {
        "split": p.split.split, "item": p.item, "dialogue": p.dialogue, "utterance": p.utterance,
        "speaker": p.turn.speaker, "emotion": p.emotion, "sentiment": p.sentiment,
        "content_emotion": p.turn.emotion, "segment": p.turn.segment, "cue": p.turn.cue, "text": p.text,
        "voice": asdict(p.turn.voice), "clip": p.clip.as_posix(), "clip_rate": p.out_rate,
        "clip_channels": p.channels, "seconds": round(duration, 3),
    }  # fmt: skip


def _build(root: Path, parameters: dict[str, Any], config: ContentConfig, workers: int | None) -> None:
    seed = parameters["seed"]
    n = parameters["dialogues_per_split"]
    counts = {"train": n * parameters["train_factor"], "validation": n, "test": n}
    planned, planted = _plant_defects(_plan(seed, counts, config))
    defects = planted["defects"]
    espeak_executable()
    threads = torch.get_num_threads()
    # one intra-op thread per worker: the resampler's own threads only oversubscribe the cores (5x the CPU time)
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers or 2) as pool:
            seconds = list(pool.map(lambda p: _render(root, p, p.item == defects["missing_clip"]), planned))
            list(pool.map(lambda p: _render(root, p, False), planted["extras"]))
    finally:
        torch.set_num_threads(threads)
    corrupt_clip(root / next(p.clip for p in planned if p.item == defects["corrupt_clip"]))
    test_folder = root / MELD_SPLITS[2].clip_folder
    (test_folder / "._dia0_utt0.mp4").write_bytes(_APPLEDOUBLE)
    shutil.copyfile(test_folder / "dia0_utt0.mp4", test_folder / "final_videos_testdia0_utt0.mp4")

    durations = {p.item: s for p, s in zip(planned, seconds, strict=True)}
    rows = _rows(seed, planned, durations, defects["short_milliseconds"])
    for s in MELD_SPLITS:
        _write_csv(root / s.csv_name, rows[s.split])
    stats = _statistics(planned)
    records = [json.dumps(_turn_record(p, durations[p.item]), ensure_ascii=False) for p in planned]
    (root / "generated_turns.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (root / "README.txt").write_text(_readme(parameters, stats, defects), encoding="utf-8")
    # Written last: its presence marks a complete corpus.
    summary = {"parameters": parameters, "statistics": stats, "defects": defects}
    (root / "generated.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def generate_meld(
    out_dir: str | Path,
    seed: int = 0,
    dialogues_per_split: int = 12,
    train_factor: int = 4,
    min_turns: int = 6,
    max_turns: int = 12,
    other_fraction: float = 0.10,
    workers: int | None = None,
) -> Path:
    """Write a generated corpus to `out_dir/MELD.Raw` and return that folder.

    dev and test get `dialogues_per_split` dialogues each, train `train_factor` times as many (the
    default: 48 / 12 / 12 dialogues, about 650 utterances, as many training dialogues as the IEMOCAP
    demo); `other_fraction` of the turns get the uncued labels surprise, fear and disgust. Returns at
    once when the folder holds a corpus generated with the same parameters; replaces a generated
    corpus with other parameters; refuses to touch a folder that is not a generated corpus. `workers`
    (synthesis and encoding threads, default 2) does not change the output: the corpus is the same
    byte for byte.
    """
    if dialogues_per_split < 3 or train_factor < 1 or dialogues_per_split * train_factor < 6:
        raise ValueError(
            "expected dialogues_per_split >= 3, train_factor >= 1 and at least 6 train dialogues (each planted "
            f"defect has its own dialogue), got {dialogues_per_split} and {train_factor}"
        )
    config = ContentConfig(min_turns=min_turns, max_turns=max_turns, other_fraction=other_fraction)
    parameters = {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "dialogues_per_split": dialogues_per_split,
        "train_factor": train_factor,
        "min_turns": min_turns,
        "max_turns": max_turns,
        "other_fraction": other_fraction,
        "h264": has_h264(),
        "espeak": installed_espeak_version(),
    }
    return build_corpus(out_dir, CORPUS_FOLDER, parameters, lambda partial: _build(partial, parameters, config, workers))
