"""Parse MELD as distributed (the `*_sent_emo.csv` label files and the `MELD.Raw` clip folders) into manifest rows.

Pure parsing: no Lightning, no features. Policies (see also ``parse_meld``):

- **Driven by the CSVs.** One manifest row per CSV row; the clip folders are never listed to find
  utterances. Clips in a folder without a CSV row (dev ``dia66_utt9``, test ``final_videos_test...``,
  macOS ``._*`` files) are counted in ``info["extra_clips"]``/``info["other_files"]``, not errors.
- **Media never fail the run and never drop an utterance.** A missing, empty, corrupt, truncated or
  silent clip keeps its row with ``audio_ok=False`` and is listed in ``defects`` (whatever
  ``on_error`` says); text stages keep every utterance, speech stages give such rows a zero vector and
  mask them out of the loss and the metrics. The real corpus has two such clips: dev ``dia110_utt7``
  (missing from the archive) and train ``dia125_utt3`` (corrupt, "moov atom not found").
- **Media checks.** By default a cheap header check: the file exists, is not empty, PyAV opens the
  container (an MP4 without its moov atom fails here), it has an audio track with samples, and the
  track's sample index ends inside the file (a cut-off download fails here). ``deep=True`` also
  decodes every clip with :func:`data_modules.audio.load_audio`.
- **Long clips** (mis-cut clips of several minutes exist) are kept; their audio is centre-cropped to
  ``max_seconds`` when it is loaded (``load_audio(max_seconds=...)``, the speech encoders'
  ``max_seconds`` option). Clips longer than ``max_seconds`` are listed in ``info["long_clips"]``.
- **CSV rows.** A real CSV parser; UTF-8 (a byte-order mark is stripped), falling back to cp1252 line
  by line (older copies carry cp1252 bytes such as 0x92 for ’); CRLF or LF line ends. A row with a
  label outside the label set, a duplicate (Dialogue_ID, Utterance_ID), the wrong number of columns,
  a non-integer id, a bad time, an empty utterance or an unclosed quoted field raises
  :class:`CorpusProblem` naming the file and line under ``on_error="fail"``; under ``"skip"`` the row
  is left out and listed in ``defects``. Both label columns (Emotion and Sentiment) are checked under
  either protocol, so that ``meld7`` and ``meld3`` manifests hold the same utterances.
- **Splits.** train, validation (MELD's dev) and test. A root with only some of the three CSVs is
  accepted (text-only or not): the missing splits are listed in ``info["missing_splits"]`` and in the
  warnings. A split whose CSV exists but whose clip folder does not is an error unless ``text_only``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av

from data_modules.errors import InputNotFound, InvalidInput
from data_modules.manifest import CorpusProblem, Defect, ParseResult, Utterance

DATASET = "meld"
RAW_FOLDER = "MELD.Raw"
HEADER = (
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
)  # fmt: skip
EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SENTIMENTS = ("neutral", "positive", "negative")


@dataclass(frozen=True)
class MeldSplit:
    """Where one split lives: MELD's own split name, its label CSV and its clip folder."""

    split: str  # the manifest's split name
    name: str  # MELD's name (train, dev, test), also the prefix of dialogue and utterance ids
    csv_name: str
    clip_folder: str


MELD_SPLITS: tuple[MeldSplit, ...] = (
    MeldSplit("train", "train", "train_sent_emo.csv", "train_splits"),
    MeldSplit("validation", "dev", "dev_sent_emo.csv", "dev_splits_complete"),
    MeldSplit("test", "test", "test_sent_emo.csv", "output_repeated_splits_test"),
)
CLIP_NAME = re.compile(r"^dia(\d+)_utt(\d+)\.mp4$")
# h:mm:ss,mmm with a variable-width hour; one real train value has a two-digit fraction ("0:06:47,28"),
# read as a millisecond count whose zero padding was dropped, like the hour's.
TIME = re.compile(r"^(\d{1,2}):([0-5]\d):([0-5]\d),(\d{1,3})$")
MAX_CONTINUATION_LINES = 3  # a quoted field may span this many extra lines before its quote counts as stray
DEFAULT_MAX_SECONDS = 30.0

# The real corpus: utterances and dialogues per split (✔ recomputed from the CSVs), clips in the archive.
PUBLISHED_UTTERANCES = {"train": 9989, "validation": 1109, "test": 2610}
PUBLISHED_DIALOGUES = {"train": 1038, "validation": 114, "test": 280}
PUBLISHED_CLIPS = {"train": 9989, "validation": 1112, "test": 2615}
KNOWN_MEDIA_DEFECTS = {
    "dev/dia110_utt7": "missing from MELD.Raw.tar.gz",
    "train/dia125_utt3": "corrupt (moov atom not found)",
}

OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class ProtocolSpec:
    """A label protocol: the CSV column it reads, class names in index order, the real corpus' counts."""

    name: str
    column: str
    labels: tuple[str, ...]
    expected_labels: Mapping[str, Mapping[str, int]]  # split -> label -> count
    description: str

    def published(self) -> dict[str, Any]:
        """The real-corpus counts, as stored in report.json."""
        return {
            "splits": dict(PUBLISHED_UTTERANCES),
            "dialogues": dict(PUBLISHED_DIALOGUES),
            "clips": dict(PUBLISHED_CLIPS),
            "labels": {split: dict(counts) for split, counts in self.expected_labels.items()},
        }


PROTOCOLS: dict[str, ProtocolSpec] = {
    "meld7": ProtocolSpec(
        name="meld7",
        column="Emotion",
        labels=EMOTIONS,
        expected_labels={
            "train": {"neutral": 4710, "surprise": 1205, "fear": 268, "sadness": 683, "joy": 1743, "disgust": 271, "anger": 1109},
            "validation": {"neutral": 470, "surprise": 150, "fear": 40, "sadness": 111, "joy": 163, "disgust": 22, "anger": 153},
            "test": {"neutral": 1256, "surprise": 281, "fear": 50, "sadness": 208, "joy": 402, "disgust": 68, "anger": 345},
        },
        description="MELD emotion, 7 classes (the Emotion column)",
    ),
    "meld3": ProtocolSpec(
        name="meld3",
        column="Sentiment",
        labels=SENTIMENTS,
        expected_labels={
            "train": {"neutral": 4710, "positive": 2334, "negative": 2945},
            "validation": {"neutral": 470, "positive": 233, "negative": 406},
            "test": {"neutral": 1256, "positive": 521, "negative": 833},
        },
        description="MELD sentiment, 3 classes (the Sentiment column)",
    ),
}


def get_protocol(protocol: str) -> ProtocolSpec:
    """The ProtocolSpec named `protocol`, with a clear error for an unknown name."""
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"unknown MELD protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


# --- where the files are ---------------------------------------------------------------------------
@dataclass
class MeldLayout:
    """The label CSV and clip folder found for each split (None where absent), and where they were looked for."""

    root: Path
    csv_files: dict[str, Path | None]
    clip_dirs: dict[str, Path | None]
    searched_csv: dict[str, list[Path]]
    searched_clips: dict[str, list[Path]]


def _bases(root: Path) -> list[Path]:
    return [root, root / RAW_FOLDER]


def find_meld_layout(root: str | Path, csv_dir: str | Path | None = None) -> MeldLayout:
    """Find each split's CSV and clip folder under `root` (or `csv_dir` for the CSVs, searched first).

    A CSV is looked for at ``<base>/<csv>``, ``<base>/<meld split>/<csv>`` and ``<base>/data/MELD/<csv>``
    (a clone of the MELD repository), a clip folder at ``<base>/<folder>`` and
    ``<base>/<meld split>/<folder>``, where base is `root` or ``root/MELD.Raw``. The first match wins.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputNotFound(f"MELD root {root}: expected a directory, found none")
    csv_base: list[Path] = []
    if csv_dir is not None:
        csv_dir = Path(csv_dir).expanduser().resolve()
        if not csv_dir.is_dir():
            raise InputNotFound(f"MELD csv_dir {csv_dir}: expected a directory, found none")
        csv_base.append(csv_dir)
    layout = MeldLayout(root, {}, {}, {}, {})
    for s in MELD_SPLITS:
        csvs = [d / s.csv_name for d in csv_base]
        csvs += [p for b in _bases(root) for p in (b / s.csv_name, b / s.name / s.csv_name, b / "data" / "MELD" / s.csv_name)]
        clips = [p for b in _bases(root) for p in (b / s.clip_folder, b / s.name / s.clip_folder)]
        layout.searched_csv[s.split] = csvs
        layout.searched_clips[s.split] = clips
        layout.csv_files[s.split] = next((p for p in csvs if p.is_file()), None)
        layout.clip_dirs[s.split] = next((p for p in clips if p.is_dir()), None)
    return layout


# --- media -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipCheck:
    """The outcome of checking one clip: its problem (None when usable) and its audio duration in seconds."""

    problem: str | None
    seconds: float | None = None


def _header_check(path: Path) -> ClipCheck:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ClipCheck("missing clip: expected the utterance's mp4 here, found no file")
    except OSError as e:
        return ClipCheck(f"unreadable clip: {e.strerror or e}")
    if size == 0:
        return ClipCheck("empty clip file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return ClipCheck("no audio track (a video-only clip, or zero-length audio that the muxer dropped)")
            stream = container.streams.audio[0]
            if stream.duration:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (container.duration or 0) / av.time_base
            entries = getattr(stream, "index_entries", None)  # PyAV >= 14
            if entries is not None:
                if len(entries) == 0:
                    return ClipCheck("zero-length audio: the audio track has no samples")
                data_end = max(e.pos + e.size for e in entries)
                if data_end > size:
                    return ClipCheck(
                        f"truncated clip: its audio data runs to byte {data_end}, the file has {size} bytes"
                    )
    except (av.error.FFmpegError, OSError) as e:
        return ClipCheck(f"corrupt clip: the container does not open ({e})")
    if seconds <= 0:
        return ClipCheck("zero-length audio: the audio track's duration is 0")
    return ClipCheck(None, round(seconds, 3))


def check_clip(path: str | Path, deep: bool = False) -> ClipCheck:
    """Check one MELD clip: the header check, and with `deep` a full decode (see the module docstring)."""
    path = Path(path)
    header = _header_check(path)
    if header.problem is not None or not deep:
        return header
    import torch  # deep checks only: keeps `meritsl prepare` light

    from data_modules.audio import AudioError, load_audio

    try:
        wave = load_audio(path)
    except AudioError as e:
        return ClipCheck(f"clip fails to decode: {e}")
    if wave.numel() == 0:
        return ClipCheck("zero-length audio: the clip decodes to no samples")
    if not bool(torch.isfinite(wave).all()):
        return ClipCheck("clip decodes to non-finite samples (NaN or inf)")
    seconds = wave.numel() / 16000
    if header.seconds and seconds < 0.5 * header.seconds:
        return ClipCheck(f"truncated clip: decodes to {seconds:.2f} s, its header says {header.seconds:.2f} s")
    return ClipCheck(None, round(seconds, 3))


# --- CSV -------------------------------------------------------------------------------------------
@dataclass
class _Row:
    split: MeldSplit
    file: Path
    line: int
    values: dict[str, str]


@dataclass
class _CsvText:
    text: str
    encoding: str


def decode_csv(raw: bytes) -> _CsvText:
    """UTF-8 (BOM stripped); bytes that are not UTF-8 are read as cp1252 (line by line, byte run by byte run)."""
    bom = raw.startswith(b"\xef\xbb\xbf")
    if bom:
        raw = raw[3:]
    try:
        return _CsvText(raw.decode("utf-8"), "utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError:
        pass
    lines, fallback = [], 0
    for piece in raw.split(b"\n"):
        try:
            lines.append(piece.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(_mixed_line(piece))
            fallback += 1
    return _CsvText("\n".join(lines), f"utf-8 with {fallback} cp1252 line(s)")


def _mixed_line(piece: bytes) -> str:
    # a re-saved line may mix UTF-8 (…) and cp1252 (0x92 for ’): only the invalid byte runs are cp1252
    out, pos = [], 0
    while True:
        try:
            out.append(piece[pos:].decode("utf-8"))
            return "".join(out)
        except UnicodeDecodeError as e:
            out.append(piece[pos : pos + e.start].decode("utf-8"))
            # cp1252 leaves 5 byte values undefined; those (never seen in MELD) become U+FFFD
            out.append(piece[pos + e.start : pos + e.end].decode("cp1252", errors="replace"))
            pos += e.end


def _parse_time(value: str) -> float | None:
    m = TIME.match(value.strip())
    if m is None:
        return None
    h, mnt, s, ms = m.groups()
    return int(h) * 3600 + int(mnt) * 60 + int(s) + int(ms) / 1000


def _parse_int(value: str) -> int | None:
    value = value.strip()
    return int(value) if re.fullmatch(r"\d+", value) else None


class _Defects:
    """Row problems: raised at once under on_error='fail', collected under 'skip'. Media problems: always collected."""

    def __init__(self, on_error: OnError) -> None:
        self.on_error = on_error
        self.items: list[Defect] = []

    def row(self, item: str, file: Path, problem: str, line: int | None = None) -> None:
        defect = Defect(item=item, file=str(file), problem=problem, line=line)
        if self.on_error == "fail":
            raise CorpusProblem(defect)
        self.items.append(defect)

    def media(self, item: str, file: Path, problem: str) -> None:
        self.items.append(Defect(item=item, file=str(file), problem=f"{problem}; row kept with audio_ok=False"))


def _records(text: str) -> list[tuple[int, list[str] | None, str]]:
    """(first line number, fields or None, raw text) of each non-blank CSV record.

    A record is one line, or a few lines when a quoted field holds a line break. A line whose quoted
    field does not close (stray quote) yields fields None, and reading goes on at the next line.
    """
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    out: list[tuple[int, list[str] | None, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fields, used = _read_record(lines, i)
        out.append((i + 1, fields, line))
        i += used
    return out


def _read_record(lines: list[str], i: int) -> tuple[list[str] | None, int]:
    try:
        return next(csv.reader([lines[i]], strict=True)), 1
    except csv.Error:
        pass
    # A quoted field may hold a line break: join following lines while the quotes stay unbalanced.
    for extra in range(1, MAX_CONTINUATION_LINES + 1):
        if i + extra >= len(lines):
            break
        joined = "\n".join(lines[i : i + extra + 1])
        try:
            fields = next(csv.reader([joined], strict=True))
        except csv.Error:
            continue
        if len(fields) == len(HEADER):
            return fields, extra + 1
        break
    return None, 1


class _MeldParser:
    """State of one parse: protocol, defect policy, the rows read so far, sources and quirks."""

    def __init__(self, layout: MeldLayout, spec: ProtocolSpec, on_error: OnError) -> None:
        self.layout = layout
        self.spec = spec
        self.defects = _Defects(on_error)
        self.sources: dict[str, str] = {}
        self.encodings: dict[str, str] = {}
        # per split: rows with a one-digit hour, dialogues with Utterance_ID gaps; odd values by item
        self.quirks: dict[str, Any] = {
            "one_digit_hour_rows": {},
            "utterance_id_gap_dialogues": {},
            "short_milliseconds": [],
            "end_before_start": [],
        }

    def _source_name(self, path: Path) -> str:
        try:
            return path.relative_to(self.layout.root).as_posix()
        except ValueError:
            return str(path)

    def read_csv(self, split: MeldSplit, path: Path) -> list[_Row]:
        try:
            raw = path.read_bytes()
        except OSError as e:
            self.defects.row(split.name, path, f"unreadable file: {e.strerror or e}")
            return []
        self.sources[self._source_name(path)] = hashlib.sha256(raw).hexdigest()
        decoded = decode_csv(raw)
        self.encodings[split.split] = decoded.encoding
        records = _records(decoded.text)
        if not records:
            self.defects.row(split.name, path, f"empty CSV: expected the header {','.join(HEADER)} and rows", 1)
            return []
        line, header, _ = records[0]
        header = [h.strip() for h in header] if header is not None else None
        missing = [h for h in HEADER if header is None or h not in header]
        if header is None or missing:
            self.defects.row(
                split.name,
                path,
                f"bad header: expected the columns {','.join(HEADER)}, missing {', '.join(missing) or 'all'} "
                f"(found {records[0][2][:200]!r}); no row of this file is read",
                line,
            )
            return []
        rows = []
        for line, fields, raw_line in records[1:]:
            if fields is None:
                self.defects.row(
                    f"{split.name} line {line}",
                    path,
                    f"malformed row: bad quoting (a stray '\"' in a quoted field, or a quote that does not close); "
                    f"found {raw_line[:160]!r}",
                    line,
                )
                continue
            if len(fields) != len(header):
                self.defects.row(
                    f"{split.name} line {line}",
                    path,
                    f"malformed row: expected {len(header)} columns, found {len(fields)} in {raw_line[:160]!r}",
                    line,
                )
                continue
            rows.append(_Row(split, path, line, dict(zip(header, fields, strict=True))))
        return rows

    def utterances(self, rows: list[_Row]) -> list[Utterance]:
        """The manifest rows of one split's CSV rows, sorted by dialogue and Utterance_ID."""
        seen: dict[tuple[int, int], _Row] = {}
        kept: list[tuple[int, int, Utterance]] = []
        for row in rows:
            u = self.utterance(row, seen)
            if u is not None:
                kept.append(u)
        by_dialogue: dict[int, list[tuple[int, Utterance]]] = defaultdict(list)
        for d, k, u in kept:
            by_dialogue[d].append((k, u))
        out: list[Utterance] = []
        gaps = 0
        for d in sorted(by_dialogue):
            turns = sorted(by_dialogue[d], key=lambda t: t[0])
            # Utterance_ID orders the turns but is never a position: the real CSVs have gaps.
            if [k for k, _ in turns] != list(range(len(turns))):
                gaps += 1
            for i, (_, u) in enumerate(turns):
                u.utt_index = i
                out.append(u)
        if rows:
            self.quirks["utterance_id_gap_dialogues"][rows[0].split.split] = gaps
        return out

    def utterance(self, row: _Row, seen: dict[tuple[int, int], _Row]) -> tuple[int, int, Utterance] | None:
        v, split = row.values, row.split
        item = f"{split.name} line {row.line}"
        dialogue, turn = _parse_int(v["Dialogue_ID"]), _parse_int(v["Utterance_ID"])
        if dialogue is None or turn is None:
            self.defects.row(
                item,
                row.file,
                f"malformed row: expected non-negative integer Dialogue_ID and Utterance_ID, "
                f"found {v['Dialogue_ID']!r} and {v['Utterance_ID']!r}",
                row.line,
            )
            return None
        item = f"{split.name}/dia{dialogue}_utt{turn}"
        first = seen.get((dialogue, turn))
        if first is not None:
            self.defects.row(
                item,
                row.file,
                f"duplicate (Dialogue_ID, Utterance_ID) = ({dialogue}, {turn}): already at line {first.line}; the first is kept",
                row.line,
            )
            return None
        times = [_parse_time(v["StartTime"]), _parse_time(v["EndTime"])]
        if None in times:
            self.defects.row(
                item,
                row.file,
                f"malformed row: expected StartTime and EndTime as h:mm:ss,mmm, found {v['StartTime']!r} and {v['EndTime']!r}",
                row.line,
            )
            return None
        emotion, sentiment = v["Emotion"].strip().lower(), v["Sentiment"].strip().lower()
        for column, value, allowed in (("Emotion", emotion, EMOTIONS), ("Sentiment", sentiment, SENTIMENTS)):
            if value not in allowed:
                self.defects.row(
                    item,
                    row.file,
                    f"label outside the label set: {column} {v[column]!r}, expected one of {', '.join(allowed)}",
                    row.line,
                )
                return None
        text = " ".join(v["Utterance"].splitlines()).strip()
        if not text:
            self.defects.row(item, row.file, "empty utterance: expected the words in the Utterance column", row.line)
            return None
        seen[(dialogue, turn)] = row
        start, end = times
        assert start is not None and end is not None
        values = (v["StartTime"].strip(), v["EndTime"].strip())
        if any(len(value.partition(":")[0]) == 1 for value in values):
            hours = self.quirks["one_digit_hour_rows"]
            hours[split.split] = hours.get(split.split, 0) + 1
        for value in values:
            if len(value.rpartition(",")[2]) < 3:
                self.quirks["short_milliseconds"].append({"item": item, "value": value, "line": row.line})
        if end < start:
            self.quirks["end_before_start"].append({"item": item, "line": row.line})
        label_raw = emotion if self.spec.column == "Emotion" else sentiment
        u = Utterance(
            dataset=DATASET,
            split=split.split,
            dialogue_id=f"{split.name}/dia{dialogue}",
            utt_index=-1,  # set once the dialogue is sorted by Utterance_ID
            utt_id=item,
            text=text,
            label=label_raw,
            label_raw=label_raw,
            speaker=v["Speaker"].strip() or None,
            start=start,
            end=end,
        )
        return dialogue, turn, u


def _clip_path(clip_dir: Path, utt: Utterance) -> Path:
    return clip_dir / f"{utt.utt_id.split('/', 1)[1]}.mp4"


def _check_media(
    parser: _MeldParser,
    rows: list[Utterance],
    clip_dirs: dict[str, Path],
    deep: bool,
    max_seconds: float | None,
    workers: int,
) -> list[dict[str, Any]]:
    """Set audio_path/audio_ok of every row; record media defects; return the long clips."""
    paths = [_clip_path(clip_dirs[u.split], u) for u in rows]
    check: Callable[[Path], ClipCheck] = lambda p: check_clip(p, deep)  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(check, paths))
    long_clips = []
    for u, path, result in zip(rows, paths, results, strict=True):
        u.audio_path = str(path)
        if result.problem is not None:
            u.audio_ok = False
            parser.defects.media(u.utt_id, path, result.problem)
        elif max_seconds is not None and result.seconds is not None and result.seconds > max_seconds:
            long_clips.append({"item": u.utt_id, "seconds": result.seconds, "file": str(path)})
    return long_clips


def _folder_extras(clip_dir: Path, meld_name: str, rows: list[Utterance], examples: int = 20) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clips without a CSV row, and files that are not clips at all (``._*``, other names)."""
    wanted = {u.utt_id.split("/", 1)[1] for u in rows}
    extra, other = [], []
    for entry in sorted(os.listdir(clip_dir)):
        m = CLIP_NAME.match(entry)
        if m is None:
            other.append(entry)
        elif entry[:-4] not in wanted:
            extra.append(f"{meld_name}/{entry[:-4]}")
    return {"count": len(extra), "examples": extra[:examples]}, {"count": len(other), "examples": other[:examples]}


def compare_with_published(utterances: list[Utterance], spec: ProtocolSpec, present: list[str]) -> list[str]:
    """Warnings where a split's counts differ from the published ones (each present split is compared)."""
    warnings: list[str] = []
    by_split: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_split[u.split].append(u)
    for split in present:
        rows = by_split.get(split, [])
        n, dialogues = len(rows), len({u.dialogue_id for u in rows})
        if n != PUBLISHED_UTTERANCES[split] or dialogues != PUBLISHED_DIALOGUES[split]:
            warnings.append(
                f"{spec.name} {split}: {n} utterances in {dialogues} dialogues, the published counts are "
                f"{PUBLISHED_UTTERANCES[split]} in {PUBLISHED_DIALOGUES[split]}"
            )
        labels = Counter(u.label for u in rows)
        differ = [f"{k} {labels[k]} (published {c})" for k, c in spec.expected_labels[split].items() if labels[k] != c]
        if differ:
            warnings.append(f"{spec.name} {split}: label counts differ from the published ones: {', '.join(differ)}")
    return warnings


def parse_meld(
    root: str | Path,
    protocol: str = "meld7",
    on_error: OnError = "fail",
    deep: bool = False,
    text_only: bool = False,
    csv_dir: str | Path | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    workers: int | None = None,
) -> ParseResult:
    """Parse MELD into manifest rows (train, validation = MELD's dev, test); the policies are in the module docstring.

    Ids: ``dialogue_id`` ``train/dia12``, ``utt_id`` ``train/dia12_utt3`` (MELD's split names);
    ``utt_index`` is the position after sorting by Utterance_ID; ``start``/``end`` are StartTime/EndTime
    in seconds (times in the episode). `text_only` reads the CSVs only (audio_path None, no media needed).
    `workers` threads check the clips (I/O bound). Raises FileNotFoundError when no CSV is found, or
    (unless `text_only`) when a split with a CSV has no clip folder.
    """
    spec = get_protocol(protocol)
    if on_error not in ("fail", "skip"):
        raise InvalidInput(f"on_error: expected 'fail' or 'skip', found {on_error!r}")
    if max_seconds is not None and max_seconds <= 0:
        raise InvalidInput(f"max_seconds: expected a positive number of seconds or None, found {max_seconds}")
    layout = find_meld_layout(root, csv_dir)
    present = [s for s in MELD_SPLITS if layout.csv_files[s.split] is not None]
    if not present:
        expected = ", ".join(s.csv_name for s in MELD_SPLITS)
        raise InputNotFound(
            f"MELD root {layout.root}: expected the label CSVs ({expected}) in it, in its {RAW_FOLDER} folder, "
            f"in train/ dev/ test/ subfolders{' or in ' + str(csv_dir) if csv_dir else ''}; found none"
        )
    if not text_only:
        for s in present:
            if layout.clip_dirs[s.split] is None:
                tarballs = [p for b in _bases(layout.root) for p in (b / f"{s.name}.tar.gz",) if p.is_file()]
                hint = f" ({tarballs[0]} is there: extract it first)" if tarballs else ""
                searched = ", ".join(str(p) for p in layout.searched_clips[s.split])
                raise InputNotFound(
                    f"MELD {s.name}: found {layout.csv_files[s.split]} but no clip folder {s.clip_folder}/{hint}; "
                    f"looked in {searched}. Pass text_only (--text-only) to read the CSVs without media."
                )
    parser = _MeldParser(layout, spec, on_error)
    utterances: list[Utterance] = []
    for s in present:
        path = layout.csv_files[s.split]
        assert path is not None
        utterances += parser.utterances(parser.read_csv(s, path))

    long_clips: list[dict[str, Any]] = []
    extra_clips: dict[str, Any] = {}
    other_files: dict[str, Any] = {}
    if not text_only:
        clip_dirs = {s.split: layout.clip_dirs[s.split] for s in present}
        threads = workers or min(8, 2 * (os.cpu_count() or 1))
        long_clips = _check_media(parser, utterances, clip_dirs, deep, max_seconds, threads)  # type: ignore[arg-type]
        for s in present:
            mine = [u for u in utterances if u.split == s.split]
            extra_clips[s.split], other_files[s.split] = _folder_extras(clip_dirs[s.split], s.name, mine)  # type: ignore[arg-type]

    missing = [s.split for s in MELD_SPLITS if s not in present]
    where = f"{layout.root}" + (f" or {csv_dir}" if csv_dir is not None else "")
    warnings = [f"no {s.csv_name} found under {where}: the {s.split} split is missing" for s in MELD_SPLITS if s.split in missing]
    warnings += compare_with_published(utterances, spec, [s.split for s in present])
    media_problems = [d for d in parser.defects.items if d.problem.endswith("audio_ok=False")]
    info: dict[str, Any] = {
        "root": str(layout.root),
        "labels": list(spec.labels),
        "label_column": spec.column,
        "csv_files": {split: str(p) if p else None for split, p in layout.csv_files.items()},
        "clip_dirs": None if text_only else {s.split: str(layout.clip_dirs[s.split]) for s in present},
        "missing_splits": missing,
        "csv_searched": {split: [str(p) for p in layout.searched_csv[split]] for split in missing},
        "published": spec.published(),
        "warnings": warnings,
        "deep_audio_check": deep,
        "text_only": text_only,
        "max_seconds": max_seconds,
        "media_policy": (
            "rows are driven by the CSVs; a missing or unusable clip keeps its row with audio_ok=False "
            "(listed in defects); clips longer than max_seconds are centre-cropped when loaded"
        ),
        "audio_not_ok": len(media_problems),
        "long_clips": long_clips,
        "extra_clips": extra_clips,
        "other_files": other_files,
        "known_media_defects": dict(KNOWN_MEDIA_DEFECTS),
        "encodings": parser.encodings,
        "time_quirks": parser.quirks,
        "source_files": parser.sources,
    }
    return ParseResult(utterances=utterances, defects=parser.defects.items, info=info)

