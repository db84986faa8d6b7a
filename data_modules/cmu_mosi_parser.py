"""Parse the CMU-MOSI raw archive (``Raw/``) into manifest rows (pure parsing: no Lightning, no features).

Layout (``notes/datasets.md`` §3)::

    Raw/Audio/WAV_16000/Segmented/<video>_<seg>.wav
    Raw/Transcript/Segmented/<video>.annotprocessed      lines "<seg>_DELIM_<text>"
    Raw/Labels/OpinionLevelSentiment.csv                 no header: start_s,end_s,video_id,segment_no,score

One conversation is one video (a monologue): its labelled segments in segment order. The splits are the
CMU-MultimodalSDK standard folds (``resources/cmu_mosi_folds.json``: 52 / 10 / 31 videos), or a
user-supplied ``video_list``. Audio comes from the segmented WAVs only, so the corrupt full-length video
``Raw/Video/Full/c5xsKMxpXnc.mp4`` (SDK issue #217, a valid-fold video) does not matter here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from data_modules.errors import InputNotFound, InvalidInput
from data_modules.iemocap_parser import check_wav
from data_modules.manifest import (
    SPLITS,
    DefectLog,
    ParseResult,
    Utterance,
)
from data_modules.text_decoding import decode_lines

DATASET = "cmu_mosi"
LABELS_CSV = Path("Labels") / "OpinionLevelSentiment.csv"  # relative to the Raw folder
TRANSCRIPT_DIR = Path("Transcript") / "Segmented"
WAV_DIR = Path("Audio") / "WAV_16000" / "Segmented"
TRANSCRIPT_SUFFIX = ".annotprocessed"
SCORE_MIN, SCORE_MAX = -3.0, 3.0
STANDARD_FOLDS_FILE = Path(__file__).resolve().parent / "resources" / "cmu_mosi_folds.json"
LABEL_NAMES = ("negative", "positive")  # has-0 binarisation: score < 0 negative, score >= 0 positive
# Names a video list may use for a split (the SDK says "valid").
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
KNOWN_DEFECTS = [
    "Raw/Video/Full/c5xsKMxpXnc.mp4 is corrupt (CMU-MultimodalSDK issue #217; a valid-fold video): "
    "irrelevant here, audio is read from the segmented WAVs"
]

TRANSCRIPT_LINE = re.compile(r"^\s*(\d+)_DELIM_(.*)$")
_CSV_FORMAT = "'start_s,end_s,video_id,segment_no,score'"

OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class ProtocolSpec:
    """A MOSI protocol: the label names (has-0 binarisation, both protocols) and what the target is."""

    name: str
    labels: tuple[str, ...]
    target: Literal["label", "score"]
    description: str


PROTOCOLS: dict[str, ProtocolSpec] = {
    "mosi2": ProtocolSpec(
        name="mosi2",
        labels=LABEL_NAMES,
        target="label",
        description="MERITS-L/HCAM binary (weighted F1): score < 0 negative, >= 0 positive; SDK standard folds "
        "(the Poria et al. video split is unpublished: pass video_list for it); the score is kept",
    ),
    "mosi_regression": ProtocolSpec(
        name="mosi_regression",
        labels=LABEL_NAMES,
        target="score",
        description="MSA benchmark: the real score in [-3, 3] is the target (MAE, Pearson r, Acc-2, F1, Acc-7); "
        "SDK standard folds; label = the has-0 binary, for reference",
    ),
}

# The real corpus under the SDK standard folds (datasets.md §3, recomputed from the public label file).
PUBLISHED: dict[str, Any] = {
    "videos": {"train": 52, "validation": 10, "test": 31},
    "segments": {"train": 1284, "validation": 229, "test": 686},
    "scores": {
        "train": {"<0": 552, "=0": 53, ">0": 679},
        "validation": {"<0": 92, "=0": 13, ">0": 124},
        "test": {"<0": 379, "=0": 30, ">0": 277},
    },
    "total": {"videos": 93, "segments": 2199, "<0": 1023, "=0": 96, ">0": 1080},
}


def binary_label(score: float) -> str:
    """The has-0 binary label of a score: ``negative`` below 0, ``positive`` from 0 up."""
    return LABEL_NAMES[int(score >= 0)]


def score_sign(score: float) -> str:
    return "<0" if score < 0 else "=0" if score == 0 else ">0"


# --- folds and video lists -------------------------------------------------------------------------------
class VideoListError(InvalidInput):
    """A fold file or user video list is malformed; the message names the file (and line)."""


def _check_folds(folds: dict[str, list[str]], source: Path) -> dict[str, list[str]]:
    seen: dict[str, str] = {}
    for split in SPLITS:
        videos = folds.get(split, [])
        if not videos:
            raise VideoListError(
                f"{source}: split {split!r} has no videos; expected train, validation and test video ids "
                "(model selection needs a validation split)"
            )
        for video in videos:
            if not isinstance(video, str) or not video.strip():
                raise VideoListError(f"{source}: split {split!r}: expected video id strings, found {video!r}")
            if video in seen:
                raise VideoListError(
                    f"{source}: video {video!r} is listed in {seen[video]!r} and again in {split!r}"
                )
            seen[video] = split
    return {split: list(folds[split]) for split in SPLITS}


def _folds_from_json(obj: Any, path: Path) -> dict[str, list[str]]:
    if isinstance(obj, dict) and "folds" in obj:
        obj = obj["folds"]
    if not isinstance(obj, dict):
        raise VideoListError(
            f"{path}: expected a JSON object {{'train': [...], 'validation': [...], 'test': [...]}}"
        )
    folds: dict[str, list[str]] = defaultdict(list)
    for key, videos in obj.items():
        split = SPLIT_ALIASES.get(str(key).lower())
        if split is None:
            raise VideoListError(f"{path}: unknown split {key!r}: expected one of {', '.join(SPLIT_ALIASES)}")
        if not isinstance(videos, list):
            raise VideoListError(
                f"{path}: split {key!r}: expected a list of video ids, found {type(videos).__name__}"
            )
        folds[split] += videos
    return dict(folds)


def _folds_from_text(text: str, path: Path) -> dict[str, list[str]]:
    folds: dict[str, list[str]] = defaultdict(list)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in re.split(r"[\s,]+", line) if f]
        split = SPLIT_ALIASES.get(fields[0].lower()) if len(fields) == 2 else None
        if split is None:
            raise VideoListError(
                f"{path}:{lineno}: expected 'SPLIT VIDEO_ID' with SPLIT one of {', '.join(SPLIT_ALIASES)}, found {raw.strip()!r}"
            )
        folds[split].append(fields[1])
    return dict(folds)


def load_video_list(path: str | Path) -> dict[str, list[str]]:
    """Split -> video ids from a JSON object (``{"train": [...], ...}``, optionally under ``"folds"``) or a
    text file of ``SPLIT VIDEO_ID`` lines (``#`` comments; ``valid``/``val``/``dev`` mean validation)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFound(f"video list {path}: file not found")
    text = "\n".join(decode_lines(path.read_bytes()))
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise VideoListError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
        folds = _folds_from_json(obj, path)
    else:
        folds = _folds_from_text(text, path)
    return _check_folds(folds, path)


def standard_folds(path: str | Path | None = None) -> dict[str, list[str]]:
    """The CMU-MultimodalSDK standard folds shipped with the framework (52 / 10 / 31 video ids)."""
    path = Path(path) if path is not None else STANDARD_FOLDS_FILE
    if not path.is_file():
        raise InputNotFound(
            f"CMU-MOSI standard folds not found: expected {path}, the JSON copy of CMU-MultimodalSDK's "
            "cmu_mosi_std_folds.py (52 train / 10 valid / 31 test video ids) that ships with meritsl-lightning. "
            'Reinstall the package, or pass video_list=FILE (JSON {"train": [...], "validation": [...], '
            "\"test\": [...]} or lines 'SPLIT VIDEO_ID')."
        )
    return load_video_list(path)


# --- the corpus ----------------------------------------------------------------------------------------
def find_raw_root(root: str | Path) -> Path:
    """The folder holding ``Labels/OpinionLevelSentiment.csv``: ``root``, ``root/Raw``, or one folder below ``root``."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputNotFound(f"CMU-MOSI root {root}: expected a directory, found none")
    for candidate in (root, root / "Raw"):
        if (candidate / LABELS_CSV).is_file():
            return candidate
    below = sorted(
        c / sub
        for c in root.iterdir()
        if c.is_dir()
        for sub in (".", "Raw")
        if (c / sub / LABELS_CSV).is_file()
    )
    if len(below) == 1:
        return below[0].resolve()
    if len(below) > 1:
        raise InputNotFound(
            f"CMU-MOSI root {root}: expected one corpus, found several: {', '.join(str(p) for p in below)}; pass one of them"
        )
    raise InputNotFound(
        f"CMU-MOSI root {root}: expected Raw/{LABELS_CSV.as_posix()} in it or in a folder below it "
        "(the raw archive: Raw/Audio/WAV_16000/Segmented, Raw/Transcript/Segmented, Raw/Labels), found none"
    )


@dataclass
class _LabelRow:
    video: str
    segment: int
    start: float
    end: float
    score: float
    score_raw: str
    line: int


@dataclass
class _TranscriptLine:
    text: str
    line: int


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _MosiParser:
    """State of one parse: defect policy, folds, source checksums, notes for report.json."""

    def __init__(
        self,
        raw: Path,
        spec: ProtocolSpec,
        on_error: OnError,
        deep: bool,
        text_only: bool,
        video_split: dict[str, str],
    ) -> None:
        self.raw = raw
        self.spec = spec
        self.deep = deep
        self.text_only = text_only
        self.video_split = video_split
        self.defects = DefectLog(on_error)
        self.sources: dict[str, str] = {}
        self.zero_length: list[str] = []
        self.unlabelled_transcript_lines = 0
        self.header_skipped = False

    def _lines(self, path: Path) -> list[str]:
        raw = path.read_bytes()
        self.sources[path.relative_to(self.raw).as_posix()] = hashlib.sha256(raw).hexdigest()
        return decode_lines(raw)

    def labels(self) -> dict[str, list[_LabelRow]]:
        """Video -> its valid label rows (in file order)."""
        path = self.raw / LABELS_CSV
        by_video: dict[str, list[_LabelRow]] = defaultdict(list)
        first: dict[tuple[str, int], int] = {}
        for lineno, line in enumerate(self._lines(path), 1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split(",")]
            if lineno == 1 and len(fields) == 5 and _number(fields[0]) is None and _number(fields[4]) is None:
                self.header_skipped = True  # a re-saved copy with a header line; the release has none
                continue
            item = f"{fields[2]}_{fields[3]}" if len(fields) == 5 else f"line {lineno}"
            if len(fields) != 5 or not fields[2]:
                self.defects.add(
                    item,
                    path,
                    f"malformed label row: expected {_CSV_FORMAT}, found {line.strip()[:120]!r}",
                    lineno,
                )
                continue
            start, end, video, segment_raw, score_raw = fields
            segment = _number(segment_raw)
            t0, t1 = _number(start), _number(end)
            if segment is None or segment != int(segment) or segment < 1 or t0 is None or t1 is None:
                self.defects.add(
                    item,
                    path,
                    f"malformed label row: expected numeric start/end and a segment number >= 1 in {_CSV_FORMAT}, found {line.strip()[:120]!r}",
                    lineno,
                )
                continue
            score = _number(score_raw)
            if score is None:
                self.defects.add(
                    item,
                    path,
                    f"score {score_raw!r} is not a number: expected a real value in [-3, 3]",
                    lineno,
                )
                continue
            if not SCORE_MIN <= score <= SCORE_MAX:
                self.defects.add(item, path, f"score {score_raw} is outside [-3, 3]", lineno)
                continue
            if t1 < t0:
                self.defects.add(item, path, f"label interval ends ({t1}) before it starts ({t0})", lineno)
                continue
            key = (video, int(segment))
            if key in first:
                self.defects.add(
                    item,
                    path,
                    f"duplicate segment: {video} segment {int(segment)} is already labelled at line {first[key]}; the first is kept",
                    lineno,
                )
                continue
            first[key] = lineno
            if t1 == t0:
                self.zero_length.append(f"{video}_{int(segment)}")  # e.g. 2WGyTLYerpo_44 in the release
            by_video[video].append(_LabelRow(video, int(segment), t0, t1, score, score_raw, lineno))
        return by_video

    def transcripts(self, video: str, n_labelled: int) -> dict[int, _TranscriptLine] | None:
        """Segment -> transcript line of one video; None (after a defect) when its file is missing or unreadable."""
        path = self.raw / TRANSCRIPT_DIR / f"{video}{TRANSCRIPT_SUFFIX}"
        if not path.is_file():
            self.defects.add(
                video,
                path,
                f"missing transcript file: expected it for the {n_labelled} labelled segments of {video}",
            )
            return None
        try:
            lines = self._lines(path)
        except OSError as e:
            self.defects.add(video, path, f"unreadable transcript file: {e.strerror or e}")
            return None
        found: dict[int, _TranscriptLine] = {}
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            m = TRANSCRIPT_LINE.match(line)
            if m is None:
                self.defects.add(
                    f"{video} line {lineno}",
                    path,
                    f"malformed transcript line: expected '<segment>_DELIM_<text>', found {line.strip()[:120]!r}",
                    lineno,
                )
                continue
            segment, text = int(m.group(1)), m.group(2).strip()
            if segment in found:
                self.defects.add(
                    f"{video}_{segment}",
                    path,
                    f"duplicate transcript line for segment {segment}: first at line {found[segment].line}; the first is kept",
                    lineno,
                )
                continue
            found[segment] = _TranscriptLine(text, lineno)
        return found

    def video(self, video: str, rows: list[_LabelRow]) -> list[Utterance]:
        labels_path = self.raw / LABELS_CSV
        split = self.video_split.get(video)
        if split is None:
            self.defects.add(
                video,
                labels_path,
                f"video in no fold: expected it in the train, validation or test list; its {len(rows)} labelled segments are left out",
                rows[0].line,
            )
            return []
        transcripts = self.transcripts(video, len(rows))
        tr_path = self.raw / TRANSCRIPT_DIR / f"{video}{TRANSCRIPT_SUFFIX}"
        if transcripts is None:
            return []
        labelled = {r.segment for r in rows}
        self.unlabelled_transcript_lines += sum(s not in labelled for s in transcripts)
        out: list[Utterance] = []
        for row in sorted(rows, key=lambda r: r.segment):
            utt = self.utterance(split, row, transcripts.get(row.segment), tr_path)
            if utt is not None:
                out.append(utt)
        for i, utt in enumerate(out):
            utt.utt_index = i
        return out

    def utterance(
        self, split: str, row: _LabelRow, transcript: _TranscriptLine | None, tr_path: Path
    ) -> Utterance | None:
        utt_id = f"{row.video}_{row.segment}"
        if transcript is None:
            self.defects.add(
                utt_id,
                self.raw / LABELS_CSV,
                f"labelled segment without a transcript line: expected '{row.segment}_DELIM_<text>' in {tr_path}",
                row.line,
            )
            return None
        if not transcript.text:
            self.defects.add(
                utt_id,
                tr_path,
                "empty transcript: expected the segment's words after '_DELIM_'",
                transcript.line,
            )
            return None
        wav: Path | None = self.raw / WAV_DIR / f"{utt_id}.wav"
        if self.text_only:
            wav = None  # transcripts and labels only: the media need not exist
        elif not wav.is_file():
            self.defects.add(
                utt_id, wav, "missing audio file: expected the segment's wav here, found no file"
            )
            return None
        elif (problem := check_wav(wav, self.deep)) is not None:
            self.defects.add(utt_id, wav, problem)  # unreadable, or zero-length (0 frames)
            return None
        return Utterance(
            dataset=DATASET,
            split=split,
            dialogue_id=row.video,
            utt_index=-1,  # set once the video's segments are in order
            utt_id=utt_id,
            text=transcript.text,
            label=binary_label(row.score),
            label_raw=row.score_raw,
            score=row.score,
            speaker=row.video,  # a monologue: one speaker per video (kept, never used)
            start=row.start,
            end=row.end,
            audio_path=str(wav) if wav is not None else None,
            audio_ok=True,
        )


def score_breakdown(utterances: list[Utterance]) -> dict[str, dict[str, int]]:
    """Per split: how many scores are < 0, = 0 and > 0."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for u in utterances:
        if u.score is not None:
            out[u.split][score_sign(u.score)] += 1
    return {s: {k: out[s][k] for k in ("<0", "=0", ">0")} for s in SPLITS if s in out}


def compare_with_published(
    utterances: list[Utterance], labelled_videos: set[str], folds: Mapping[str, list[str]], standard: bool
) -> list[str]:
    """Warnings where a full copy (all 93 fold videos labelled) differs from the published SDK-fold counts."""
    if not standard:
        return ["split from a user video list: counts not compared with the published SDK-fold ones"]
    fold_videos = {v for videos in folds.values() for v in videos}
    present = len(fold_videos & labelled_videos)
    if present < len(fold_videos):
        return [
            f"only {present} of the {len(fold_videos)} standard-fold videos have labels; "
            "counts not compared with the published ones"
        ]
    warnings = []
    segments = Counter(u.split for u in utterances)
    videos = {s: len({u.dialogue_id for u in utterances if u.split == s}) for s in SPLITS}
    signs = score_breakdown(utterances)
    for split in SPLITS:
        if segments[split] != PUBLISHED["segments"][split]:
            warnings.append(
                f"{split}: {segments[split]} segments, the published count is {PUBLISHED['segments'][split]}"
            )
        if videos[split] != PUBLISHED["videos"][split]:
            warnings.append(
                f"{split}: {videos[split]} videos, the published count is {PUBLISHED['videos'][split]}"
            )
        for sign, n in PUBLISHED["scores"][split].items():
            found = signs.get(split, {}).get(sign, 0)
            if found != n:
                warnings.append(f"{split}: {found} segments with score {sign}, the published count is {n}")
    return warnings


def get_protocol(protocol: str) -> ProtocolSpec:
    """The ProtocolSpec named `protocol`, with a clear error for an unknown name."""
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"unknown CMU-MOSI protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def parse_cmu_mosi(
    root: str | Path,
    protocol: str = "mosi2",
    on_error: OnError = "fail",
    deep: bool = False,
    text_only: bool = False,
    video_list: str | Path | None = None,
) -> ParseResult:
    """Parse CMU-MOSI into manifest rows, one conversation per video, split by the SDK standard folds.

    `video_list` (a JSON or text file of train/validation/test video ids) replaces the standard folds.
    Every row keeps the real `score` and its has-0 binary `label` (negative < 0 <= positive); the protocol
    says which is the target. `text_only` reads transcripts and labels without looking for the wavs.
    Under `on_error="fail"` the first bad item raises `CorpusProblem` (file and line); under `"skip"` bad
    items are left out and listed in `defects`. Raises FileNotFoundError when the layout is not there.
    """
    spec = get_protocol(protocol)
    if on_error not in ("fail", "skip"):
        raise InvalidInput(f"on_error: expected 'fail' or 'skip', found {on_error!r}")
    raw = find_raw_root(root)
    if not (raw / TRANSCRIPT_DIR).is_dir():
        raise InputNotFound(
            f"CMU-MOSI {raw}: expected the transcript folder {raw / TRANSCRIPT_DIR}, found none"
        )
    if not text_only and not (raw / WAV_DIR).is_dir():
        raise InputNotFound(
            f"CMU-MOSI {raw}: expected the segmented audio folder {raw / WAV_DIR}, found none "
            "(use text_only / --text-only for transcripts and labels only)"
        )
    standard = video_list is None
    folds = standard_folds() if standard else load_video_list(video_list)  # type: ignore[arg-type]
    video_split = {v: split for split, videos in folds.items() for v in videos}
    parser = _MosiParser(raw, spec, on_error, deep, text_only, video_split)
    by_video = parser.labels()
    utterances = [u for video in sorted(by_video) for u in parser.video(video, by_video[video])]
    transcripts = raw / TRANSCRIPT_DIR
    unlabelled_files = sorted(
        p.stem
        for p in transcripts.glob(f"*{TRANSCRIPT_SUFFIX}")
        if not p.name.startswith("._") and p.stem not in by_video
    )
    info = {
        "root": str(raw),
        "labels": list(spec.labels),
        "target": spec.target,
        "binarisation": "has-0: score < 0 -> negative, score >= 0 -> positive",
        "protocol_description": spec.description,
        "split_source": "CMU-MultimodalSDK standard folds"
        if standard
        else f"video list {Path(video_list).expanduser()}",  # type: ignore[arg-type]
        "fold_videos": {s: len(v) for s, v in folds.items()},
        "videos": {s: len({u.dialogue_id for u in utterances if u.split == s}) for s in SPLITS},
        "score_breakdown": score_breakdown(utterances),
        "published": PUBLISHED,
        "warnings": compare_with_published(utterances, set(by_video), folds, standard),
        "zero_length_label_intervals": parser.zero_length,
        "unlabelled_transcript_lines": parser.unlabelled_transcript_lines,
        "transcripts_without_labels": unlabelled_files,
        "label_csv_header_skipped": parser.header_skipped,
        "known_defects": KNOWN_DEFECTS,
        "deep_audio_check": deep,
        "text_only": text_only,
        "source_files": parser.sources,
    }
    return ParseResult(utterances=utterances, defects=parser.defects.items, info=info)
