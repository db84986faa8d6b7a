"""A generated stand-in for IEMOCAP, written in the real `IEMOCAP_full_release` layout and formats.

Five sessions, each with a female (``F``) and a male (``M``) speaker on their own espeak-ng voices.
Dialogues come from the content model (``content.py``); this module maps them onto IEMOCAP:

- codes: ``neu``, ``ang``, ``sad``; a ``hap`` segment is coded ``hap`` or ``exc`` (one code per
  segment, both merge into ``hap`` under the 4-class protocol); the content model's *other* turns
  (neutral words and voice, about 10 %) get ``xxx``, ``fru``, ``sur`` or ``oth``;
- names: dialogs ``Ses01F_impro01``, ``Ses01M_script02_1``, ...; turns ``<dialog>_F000``,
  ``<dialog>_M001`` with per-speaker counters in time order;
- files: ``Session*/dialog/EmoEvaluation/<dialog>.txt`` (header, summary lines, evaluator lines),
  ``Session*/dialog/transcriptions/<dialog>.txt`` (zero-padded times) and
  ``Session*/sentences/wav/<dialog>/<turn>.wav`` (16 kHz mono PCM16);
- the defects a parser must survive: transcription lines that are not turns (``M: [LAUGHTER]``,
  ``<dialog>_MXX0 [BREATHING]``), an ``EmoEvaluation/Categorical`` subfolder, and macOS ``._*``
  AppleDouble files in a few folders.

The corpus root also holds ``README.txt``, ``generated.json`` (parameters and statistics; it marks
a finished corpus) and ``generated_turns.jsonl`` (the content model's ground truth per turn: emotion,
segment, cue, voice settings), which no real release has.
"""

from __future__ import annotations

import hashlib
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
    Dialogue,
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

CORPUS_FOLDER = "IEMOCAP_full_release"
GENERATOR_VERSION = 2  # bump whenever the output for the same parameters changes
SESSIONS = (1, 2, 3, 4, 5)
# Different voices per session, so that the Session 5 test speakers are unseen in training.
SESSION_VOICES: dict[int, tuple[str, str]] = {
    1: ("en-us+f3", "en-us+m3"),
    2: ("en-us+f1", "en-us+m1"),
    3: ("en-us+f2", "en-us+m2"),
    4: ("en-us+f4", "en-us+m4"),
    5: ("en-us+f5", "en-us+m5"),
}
_IMPROS = ("impro01", "impro02", "impro03", "impro04", "impro05a", "impro05b", "impro06", "impro07", "impro08")  # fmt: skip
_SCRIPTS = ("script01_1", "script01_2", "script01_3", "script02_1", "script02_2", "script03_1", "script03_2")
OTHER_CODES: tuple[tuple[str, float], ...] = (("xxx", 0.5), ("fru", 0.3), ("sur", 0.15), ("oth", 0.05))
EXC_SHARE = 0.6  # of the hap segments coded exc (1041 of 1636 in the real corpus)
FOUR_CLASS = {"neu": "neu", "ang": "ang", "sad": "sad", "hap": "hap", "exc": "hap"}

_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
_CATEGORY = {
    "neu": "Neutral state", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other",
}  # fmt: skip
_VAD = {
    "neu": (3, 3, 3), "hap": (4, 3, 3), "exc": (4, 4, 3), "sad": (2, 2, 2), "ang": (2, 4, 4),
    "fru": (2, 3, 3), "sur": (3, 4, 3), "oth": (3, 3, 3), "xxx": (3, 3, 3),
}  # fmt: skip
_NOISE_MARKERS = ("[LAUGHTER]", "[BREATHING]", "[GARBAGE]")
# The start of a real AppleDouble file (magic 0x00051607, version 2, "Mac OS X" filler); not UTF-8.
_APPLEDOUBLE = (
    b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x0e\xb0"
    b"\x00\x00\x00\x02\x00\x00\x0e\xe2\x00\x00\x01\x1e"
    + b"\x00" * 18
    + b"ATTR\xff\xfe\xc3\x28com.apple.quarantine"
).ljust(4096, b"\x00")


@dataclass(frozen=True)
class _PlannedTurn:
    session: int
    dialog: str
    name: str
    code: str
    turn: Turn
    noise_seed: int

    @property
    def wav(self) -> Path:
        return Path(f"Session{self.session}") / "sentences" / "wav" / self.dialog / f"{self.name}.wav"


def dialog_names(session: int, count: int) -> list[str]:
    """The first `count` dialog names of a session, alternating actor (F/M) and impro/script."""
    kinds = [k for i in range(len(_IMPROS)) for k in (_IMPROS[i], *_SCRIPTS[i : i + 1])]
    names = [f"Ses{session:02d}{actor}_{kind}" for kind in kinds for actor in "FM"]
    if not 1 <= count <= len(names):
        raise ValueError(f"dialogues_per_session: expected 1..{len(names)}, got {count}")
    return names[:count]


def _rng(*parts: object) -> random.Random:
    # String seeds hash with SHA-512 in `random`, so they do not depend on PYTHONHASHSEED.
    return random.Random(":".join(["iemocap", *map(str, parts)]))


def _seed32(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def _session_speakers(seed: int, session: int) -> tuple[Speaker, Speaker]:
    female, male = SESSION_VOICES[session]
    speaker_f = make_speaker(_rng(seed, session, "F"), "F", female)
    return speaker_f, make_speaker(_rng(seed, session, "M"), "M", male)


def _codes(rng: random.Random, dialogue: Dialogue) -> list[str]:
    names, weights = zip(*OTHER_CODES, strict=True)
    hap_segments = sorted({t.segment for t in dialogue.turns if t.emotion == "hap"})
    exc_segments = {segment for segment in hap_segments if rng.random() < EXC_SHARE}
    codes = []
    for turn in dialogue.turns:
        if turn.emotion == OTHER:
            codes.append(rng.choices(names, weights)[0])
        else:
            codes.append("exc" if turn.segment in exc_segments else turn.emotion)
    return codes


def _plan_dialog(
    seed: int, session: int, dialog: str, speakers: tuple[Speaker, Speaker], config: ContentConfig
) -> list[_PlannedTurn]:
    dialogue = generate_dialogue(_rng(seed, dialog, "content"), speakers, config)
    codes = _codes(_rng(seed, dialog, "codes"), dialogue)
    counters: Counter[str] = Counter()
    planned = []
    for turn, code in zip(dialogue.turns, codes, strict=True):
        name = f"{dialog}_{turn.speaker}{counters[turn.speaker]:03d}"
        counters[turn.speaker] += 1
        planned.append(_PlannedTurn(session, dialog, name, code, turn, _seed32(seed, name)))
    return planned


def _times(rng: random.Random, durations: list[float]) -> list[tuple[float, float]]:
    """Start and end of each turn: gaps of 0.2-1.2 s, and now and then an overlap of the previous turn."""
    times = []
    start = rng.uniform(1.5, 6.0)
    for duration in durations:
        start, end = round(start, 4), round(start + duration, 4)
        times.append((start, end))
        gap = -rng.uniform(0.1, min(0.5, duration / 2)) if rng.random() < 0.1 else rng.uniform(0.2, 1.2)
        start = end + gap
    return times


def _vad(rng: random.Random, code: str) -> tuple[int, int, int]:
    return tuple(min(5, max(1, v + rng.randint(-1, 1))) for v in _VAD[code])  # type: ignore[return-value]


def _evaluation_block(rng: random.Random, turn: _PlannedTurn, start: float, end: float) -> list[str]:
    evaluators = sorted(rng.sample(["E1", "E2", "E3", "E4", "E5", "E6"], 3))
    pool = [c for c in _CATEGORY if c != turn.code]
    if turn.code == "xxx":
        categories = [[c] for c in rng.sample(pool, 3)]  # no majority
    else:
        categories = [[turn.code] for _ in evaluators]
        if rng.random() < 0.4:
            categories[rng.randrange(3)] = [rng.choice(pool)]
        if rng.random() < 0.2:
            categories[rng.randrange(3)].append(rng.choice(pool))
    lines = [
        f"C-{e}:\t{' '.join(_CATEGORY[c] + ';' for c in cats)}\t()"
        for e, cats in zip(evaluators, categories, strict=True)
    ]
    speaker = turn.turn.speaker
    if rng.random() < 0.5:  # the actor's self-report, which the consensus ignores
        lines.append(f"C-{speaker}1:\t{_CATEGORY.get(turn.code, 'Other')};\t()")
    raters = evaluators[: rng.choice((2, 3))]
    ratings = [_vad(rng, turn.code) for _ in raters]
    lines += [
        f"A-{e}:\tval {v}; act {a}; dom  {d};\t()" for e, (v, a, d) in zip(raters, ratings, strict=True)
    ]
    v, a, d = (sum(r[i] for r in ratings) / len(ratings) for i in range(3))
    summary = f"[{start:.4f} - {end:.4f}]\t{turn.name}\t{turn.code}\t[{v:.4f}, {a:.4f}, {d:.4f}]"
    return [summary, *lines, ""]


def _transcription(
    rng: random.Random, dialog: str, turns: list[_PlannedTurn], times: list[tuple[float, float]]
) -> list[str]:
    lines = [f"{t.name} [{s:08.4f}-{e:08.4f}]: {t.turn.text}" for t, (s, e) in zip(turns, times, strict=True)]
    for _ in range(rng.choice((0, 1, 1, 2))):
        speaker, marker = rng.choice("FM"), rng.choice(_NOISE_MARKERS)
        junk = f"{speaker}: {marker}" if rng.random() < 0.5 else f"{dialog}_{speaker}XX0 {marker}"
        lines.insert(rng.randint(1, len(lines)), junk)
    return lines


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def _write_dialog(
    root: Path, seed: int, dialog: str, turns: list[_PlannedTurn], times: list[tuple[float, float]]
) -> None:
    dialog_dir = root / f"Session{turns[0].session}" / "dialog"
    rng = _rng(seed, dialog, "annotations")
    evaluation = [_HEADER, ""]
    for turn, (start, end) in zip(turns, times, strict=True):
        evaluation += _evaluation_block(rng, turn, start, end)
    _write_lines(dialog_dir / "EmoEvaluation" / f"{dialog}.txt", evaluation)
    categorical = [f"{t.name} :{_CATEGORY.get(t.code, 'Other')}; ()" for t in turns]
    _write_lines(dialog_dir / "EmoEvaluation" / "Categorical" / f"{dialog}_e1_cat.txt", categorical)
    _write_lines(dialog_dir / "transcriptions" / f"{dialog}.txt", _transcription(rng, dialog, turns, times))


def _write_appledouble_junk(root: Path, dialogs: dict[int, list[str]]) -> None:
    first = {session: names[0] for session, names in dialogs.items()}
    targets = [
        root / "Session1" / "dialog" / "EmoEvaluation" / f"._{first[1]}.txt",
        root / "Session1" / "dialog" / "transcriptions" / f"._{first[1]}.txt",
        root / "Session3" / "dialog" / "EmoEvaluation" / f"._{first[3]}.txt",
        root / "Session2" / "sentences" / "wav" / first[2] / f"._{first[2]}_F000.wav",
    ]
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_APPLEDOUBLE)


def _statistics(turns: list[_PlannedTurn]) -> dict[str, Any]:
    per_session: dict[str, dict[str, Any]] = {}
    for session in SESSIONS:
        mine = [t for t in turns if t.session == session]
        per_session[f"Session{session}"] = {
            "turns": len(mine),
            "codes": dict(sorted(Counter(t.code for t in mine).items())),
            "four_class": dict(
                sorted(Counter(FOUR_CLASS[t.code] for t in mine if t.code in FOUR_CLASS).items())
            ),
            "cues": dict(
                sorted(Counter(t.turn.cue for t in mine if t.turn.emotion not in (NEUTRAL, OTHER)).items())
            ),
        }
    return {
        "turns": len(turns),
        "four_class_turns": sum(t.code in FOUR_CLASS for t in turns),
        "dialogues": len({t.dialog for t in turns}),
        "sessions": per_session,
    }


def _readme(parameters: dict[str, Any], stats: dict[str, Any]) -> str:
    sessions = "\n".join(
        f"  {name}: {s['turns']} turns, 4-class {s['four_class']}" for name, s in stats["sessions"].items()
    )
    return f"""GENERATED CORPUS - this is NOT the real IEMOCAP release.

Written by data_modules.generated.iemocap (generator version {parameters["version"]})
in the on-disk layout and file formats of IEMOCAP_full_release, with speech synthesised by
{parameters["espeak"]}. It exists so that the MERITS-L pipeline can be tested and demonstrated
without the licensed corpus. Emotion is carried partly by the words, partly by the voice (pitch,
rate, loudness, pauses) and partly by the conversation (turns whose own words and voice are neutral).

Parameters: {json.dumps({k: v for k, v in parameters.items() if k not in ("generator", "espeak")})}
Turns: {stats["turns"]} in {stats["dialogues"]} dialogues, {stats["four_class_turns"]} with a 4-class label.
{sessions}

Usual split: Session1 validation, Session2-4 train, Session5 test.
generated.json holds the parameters and statistics; generated_turns.jsonl the ground truth per turn
(emotion, label segment, which modality carries the cue, espeak settings).
"""


def _turn_record(turn: _PlannedTurn, start: float, end: float) -> dict[str, Any]:
    return {
        "session": turn.session, "dialog": turn.dialog, "turn": turn.name, "speaker": turn.turn.speaker,
        "code": turn.code, "emotion": turn.turn.emotion, "segment": turn.turn.segment, "cue": turn.turn.cue,
        "text": turn.turn.text, "voice": asdict(turn.turn.voice), "start": start, "end": end,
        "wav": turn.wav.as_posix(),
    }  # fmt: skip


def _build(root: Path, parameters: dict[str, Any], config: ContentConfig, workers: int | None) -> None:
    seed = parameters["seed"]
    dialogs = {s: dialog_names(s, parameters["dialogues_per_session"]) for s in SESSIONS}
    plan: dict[str, list[_PlannedTurn]] = {}
    for session, names in dialogs.items():
        speakers = _session_speakers(seed, session)
        for dialog in names:
            plan[dialog] = _plan_dialog(seed, session, dialog, speakers, config)
    turns = [t for planned in plan.values() for t in planned]
    jobs = [SynthesisJob(t.turn.text, t.turn.voice, root / t.wav, t.noise_seed) for t in turns]
    durations = iter(synthesize_many(jobs, workers))
    records = []
    for dialog, planned in plan.items():
        times = _times(_rng(seed, dialog, "times"), [next(durations) for _ in planned])
        _write_dialog(root, seed, dialog, planned, times)
        records += [_turn_record(t, s, e) for t, (s, e) in zip(planned, times, strict=True)]
    _write_appledouble_junk(root, dialogs)
    stats = _statistics(turns)
    _write_lines(root / "generated_turns.jsonl", [json.dumps(r, ensure_ascii=False) for r in records])
    (root / "README.txt").write_text(_readme(parameters, stats), encoding="utf-8")
    # Written last: its presence marks a complete corpus.
    (root / "generated.json").write_text(
        json.dumps({"parameters": parameters, "statistics": stats}, indent=2) + "\n", encoding="utf-8"
    )


def generate_iemocap(
    out_dir: str | Path,
    seed: int = 0,
    dialogues_per_session: int = 16,
    min_turns: int = 10,
    max_turns: int = 16,
    workers: int | None = None,
) -> Path:
    """Write a generated corpus to `out_dir/IEMOCAP_full_release` and return that folder.

    Returns at once when the folder holds a corpus generated with the same parameters; replaces a
    generated corpus with other parameters; refuses to touch a folder that is not a generated corpus.
    `workers` (synthesis threads) does not change the output.
    """
    config = ContentConfig(min_turns=min_turns, max_turns=max_turns)
    parameters = {
        "generator": __name__,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "dialogues_per_session": dialogues_per_session,
        "min_turns": min_turns,
        "max_turns": max_turns,
        "espeak": installed_espeak_version(),
    }
    dialog_names(1, dialogues_per_session)  # validates the count before any work
    return build_corpus(out_dir, CORPUS_FOLDER, parameters, lambda partial: _build(partial, parameters, config, workers))
