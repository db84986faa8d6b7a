"""Parse an MSP-Podcast release (``MSP-PODCAST-Publish-1.xx``) into manifest rows (pure parsing, no Lightning).

Layout (``notes/datasets.md`` §4)::

    Audios/MSP-PODCAST_0153_0042.wav             16 kHz mono
    Labels/labels_consensus.csv                  FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
    Labels/labels_consensus.json                 {file: {EmoClass, EmoAct, EmoDom, EmoVal, SpkrID, Gender, Split_Set}}
    Transcripts/MSP-PODCAST_0153_0042.txt        optional (recent releases)
    Partitions.txt                               older releases: "Train; MSP-PODCAST_0023_0048.wav"

MERITS-L uses MSP-Podcast for pre-training only (Whisper transcripts, LLM silver labels, CARE), so
the policies below keep every utterance that has audio:

- Labels: ``labels_consensus.csv`` when present, else ``labels_consensus.json``. When both exist the
  CSV is used and the JSON is compared with it; differences are warnings (``info["labels_json"]``),
  not defects, because the CSV rows are sound.
- Conversations: ``dialogue_id`` is the podcast id (``0153`` of ``MSP-PODCAST_0153_0042``), and a
  podcast's segments are ordered by their segment numbers; ``utt_index`` counts over the whole
  podcast, so within one split the indices of a podcast may have gaps (a podcast's speakers can be in
  different splits). Names of another scheme (e.g. WHiSER's ``006-040.1-2_13.wav``) use the part
  before the last ``_`` as the conversation and the number after it as the order.
- Labels: ``EmoClass`` letter -> name (``EMO_CLASSES``, release order A S H U F D C N O X); an empty
  ``EmoClass`` means the label is withheld (label None, counted in ``info["labels_withheld"]``);
  another letter is a defect. The labels serve agreement reports only.
- Splits (``SPLIT_VALUES``): Train -> ``train``, Development -> ``validation``, Test1/Test2/Test3 ->
  ``test1``/``test2``/``test3``. ``Split_Set`` is used when the labels have it; otherwise (older
  releases) ``Partitions.txt``. A value outside the map stays as the split name and is counted in
  ``info["unknown_split_values"]`` (not a defect); no value at all gives ``unassigned``.
- Audio without a labels row is kept (label None, split from ``Partitions.txt`` or ``unassigned``)
  and counted in ``info["unlabelled_audio"]``.
- Text: the release transcript when ``Transcripts/<name>.txt`` exists, else ``""`` (MERITS-L
  transcribes with Whisper later); ``info["release_transcripts"]`` counts both.
- Existence checks use one listing of ``Audios/`` (and ``Transcripts/``): no per-file stat, so
  150 k files parse in seconds. ``deep`` opens and decodes every wav.

Defects (a labels row whose wav is missing, a malformed CSV row or JSON entry, an unknown ``EmoClass``,
a duplicate file name, a malformed ``Partitions.txt`` line, unreadable or corrupt audio under ``deep``):
under ``on_error="fail"`` the first raises ``CorpusProblem`` naming the file and line; under ``"skip"``
the item is left out and listed. A missing or unusable labels file raises ``FileNotFoundError`` /
``ValueError`` under both.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import soundfile as sf

from data_modules.errors import InputNotFound, InvalidInput
from data_modules.iemocap_parser import check_wav
from data_modules.manifest import DefectLog, ParseResult, Utterance
from data_modules.text_decoding import decode_lines

DATASET = "msp_podcast"
AUDIO_DIR = "Audios"
LABELS_DIR = "Labels"
TRANSCRIPTS_DIR = "Transcripts"
CONSENSUS_CSV = "labels_consensus.csv"
CONSENSUS_JSON = "labels_consensus.json"
PARTITIONS = "Partitions.txt"
CSV_HEADER = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
JSON_KEYS = ("EmoClass", "EmoAct", "EmoDom", "EmoVal", "SpkrID", "Gender", "Split_Set")
REQUIRED_COLUMNS = ("FileName", "EmoClass")
ATTRIBUTES = ("EmoAct", "EmoVal", "EmoDom")  # SAM means on 1-7
SAMPLE_RATE = 16000

# The consensus codes in the release's documentation order; the label ids of protocol msp_all follow it.
EMO_CLASSES: Mapping[str, str] = {
    "A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear", "D": "disgust",
    "C": "contempt", "N": "neutral", "O": "other", "X": "no_agreement",
}  # fmt: skip
# Split_Set / Partitions.txt value -> manifest split. "Validation" is accepted as a synonym of Development.
SPLIT_VALUES: Mapping[str, str] = {
    "Train": "train", "Development": "validation", "Validation": "validation",
    "Test1": "test1", "Test2": "test2", "Test3": "test3",
}  # fmt: skip
UNASSIGNED = "unassigned"  # the split of an utterance that no labels row or Partitions.txt line places
MISSING_VALUES = frozenset({"", "NA"})  # attribute values meaning "not given"
UNKNOWN_SPEAKER = frozenset({"", "Unknown"})

MSP_NAME = re.compile(r"^MSP-PODCAST_(\d+)_(\d+)(?:_(\d+))?$")
_GENERIC_NAME = re.compile(r"^(.+)_(\d+)$")
_PARTITION_LINE = re.compile(r"^\s*([^;]*?)\s*;\s*(\S+)\s*$")
_FLOAT_TOLERANCE = 1e-4
_MAX_EXAMPLES = 20

OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class ProtocolSpec:
    """A label protocol: class names in id order, the EmoClass letter -> label map, a description."""

    name: str
    labels: tuple[str, ...]
    code_to_label: Mapping[str, str]
    description: str


PROTOCOLS: dict[str, ProtocolSpec] = {
    "msp_all": ProtocolSpec(
        name="msp_all",
        labels=tuple(EMO_CLASSES.values()),
        code_to_label=dict(EMO_CLASSES),
        description=(
            "every utterance with audio (pre-training); the 10 consensus classes A S H U F D C N O X in "
            "that order, kept for agreement reports; unlabelled audio has label None"
        ),
    ),
}


@dataclass(slots=True)
class LabelRow:
    """One labels_consensus entry (CSV row or JSON item), validated."""

    name: str  # file name, with .wav
    emo_class: str  # "" when withheld
    attributes: tuple[float | None, float | None, float | None]  # EmoAct, EmoVal, EmoDom
    speaker: str | None
    gender: str | None
    split: str | None  # raw Split_Set; None when the source has no Split_Set
    file: Path
    line: int | None


@dataclass
class _Entry:
    """A file name that becomes a manifest row: its labels row (None for unlabelled audio) and raw split value."""

    name: str
    row: LabelRow | None
    split: str  # "" when nothing assigns one


def _decode(raw: bytes) -> str:
    # The release is ASCII/UTF-8; a re-saved copy may carry a BOM, CRLF or cp1252 lines: never a stop
    return "\n".join(decode_lines(raw))


def conversation_key(stem: str) -> tuple[str, tuple[int, ...]]:
    """(conversation id, order within it) of a file stem: the podcast id and segment number(s) of
    ``MSP-PODCAST_XXXX_YYYY[_ZZZZ]``; for other names the part before the last ``_`` and the number after it."""
    m = MSP_NAME.match(stem)
    if m:
        return m.group(1), tuple(int(g) for g in m.groups()[1:] if g is not None)
    m = _GENERIC_NAME.match(stem)
    if m:
        return m.group(1), (int(m.group(2)),)
    return stem, ()


def find_corpus_root(root: str | Path) -> Path:
    """The release folder: `root` itself when it holds Labels/ or Audios/, else its one ``MSP-PODCAST*`` child that does."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputNotFound(f"MSP-Podcast root {root}: expected a directory, found none")

    def is_release(folder: Path) -> bool:
        return (folder / LABELS_DIR).is_dir() or (folder / AUDIO_DIR).is_dir()

    if is_release(root):
        return root
    children = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.upper().startswith("MSP-PODCAST") and is_release(p)]
    if len(children) == 1:
        return children[0]
    if len(children) > 1:
        raise InvalidInput(
            f"MSP-Podcast root {root}: several releases found ({', '.join(p.name for p in children)}); pass one of them as root"
        )
    raise InputNotFound(
        f"MSP-Podcast root {root}: expected {LABELS_DIR}/{CONSENSUS_CSV} (or {CONSENSUS_JSON}) and {AUDIO_DIR}/ "
        "in it or in an MSP-PODCAST-Publish-* folder inside it, found neither"
    )


def _list_files(folder: Path, suffix: str) -> tuple[set[str], int]:
    """Names of the plain files in `folder` ending in `suffix` (one listing, no stat), and how many others were ignored."""
    names: set[str] = set()
    ignored = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(suffix) and not entry.name.startswith("._") and entry.is_file():
                names.add(entry.name)
            else:
                ignored += 1  # macOS ._* files, .DS_Store, subfolders
    return names, ignored


def _deep_check(path: Path) -> tuple[str | None, str | None]:
    """(problem, "RATE Hz x CHANNELS ch") of a wav, decoding it fully."""
    problem = check_wav(path, deep=True)
    if problem is not None:
        return problem, None
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as e:  # pragma: no cover - check_wav opened it a moment ago
        return f"unreadable audio file: {e}", None
    return None, f"{info.samplerate} Hz x {info.channels} ch"


class _MspParser:
    """State of one parse: policy, defects, warnings and the counts that go into report.json."""

    def __init__(self, corpus: Path, spec: ProtocolSpec, on_error: OnError, deep: bool, text_only: bool) -> None:
        self.corpus = corpus
        self.spec = spec
        self.deep = deep
        self.text_only = text_only
        self.defects = DefectLog(on_error)
        self.bad_items: set[str] = set()  # file names left out by a defect (never re-admitted as unlabelled audio)
        self.sources: dict[str, str] = {}
        self.warnings: list[str] = []

    # --- files -------------------------------------------------------------------------------------
    def _read(self, path: Path) -> str:
        raw = path.read_bytes()
        self.sources[path.relative_to(self.corpus).as_posix()] = hashlib.sha256(raw).hexdigest()
        return _decode(raw)

    def _defect(
        self, defects: DefectLog, item: str, file: Path, problem: str, line: int | None = None, drops: bool = True
    ) -> None:
        """Record a defect; `drops`: the item is left out (False for a duplicate, whose first entry is kept)."""
        if drops and defects is self.defects:
            self.bad_items.add(item)
        defects.add(item, file, problem, line)

    # --- one entry ---------------------------------------------------------------------------------
    def _add(self, defects: DefectLog, rows: dict[str, LabelRow], row: LabelRow, where: Callable[[str, int], int | None]) -> None:
        first = rows.get(row.name)
        if first is None:
            rows[row.name] = row
            return
        first_line = first.line if first.line is not None else where(row.name, 1)
        at = f"{first.file}:{first_line}" if first_line is not None else str(first.file)
        line = row.line if row.line is not None else where(row.name, 2)
        self._defect(
            defects, row.name, row.file, f"duplicate file name: already labelled at {at}; the first is kept", line, drops=False
        )

    # --- labels files ------------------------------------------------------------------------------
    def read_csv(self, path: Path) -> dict[str, LabelRow]:
        reader = csv.reader(io.StringIO(self._read(path), newline=""))
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InvalidInput(
                f"{path}:1: expected the header {','.join(CSV_HEADER)} (at least {', '.join(REQUIRED_COLUMNS)}), "
                f"found {','.join(header)!r}"
            )
        has_split = "Split_Set" in header
        rows: dict[str, LabelRow] = {}
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                item = fields[0].strip() if fields and fields[0].strip() else f"{path.name} line {line}"
                self._defect(self.defects, item, path,
                             f"malformed row: expected {len(header)} comma-separated fields ({','.join(header)}), "
                             f"found {len(fields)}: {','.join(fields)[:120]!r}", line)  # fmt: skip
                continue
            values = dict(zip(header, fields, strict=True))
            row = _label_row(values["FileName"], values, has_split, path, line)
            if isinstance(row, LabelRow):
                self._add(self.defects, rows, row, lambda name, occurrence: None)
            else:
                self._defect(self.defects, row[0] or f"{path.name} line {line}", path, row[1], line)
        return rows

    def read_json(self, path: Path, defects: DefectLog) -> dict[str, LabelRow]:
        text = self._read(path)
        try:
            top = json.loads(text, object_pairs_hook=_object)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(top, dict | _Pairs):
            raise InvalidInput(f"{path}: expected an object {{file name: {{{', '.join(JSON_KEYS)}}}}}, found {type(top).__name__}")
        items = list(top.items()) if isinstance(top, dict) else list(top)
        has_split = any(isinstance(v, dict) and "Split_Set" in v for _, v in items)
        where = _JsonLines(text)  # line numbers are looked up only for defects
        rows: dict[str, LabelRow] = {}
        seen: Counter[str] = Counter()
        for name, entry in items:
            seen[name] += 1
            if not isinstance(entry, dict) or "EmoClass" not in entry:
                found = "duplicate keys" if isinstance(entry, _Pairs) else json.dumps(entry)[:120]
                self._defect(defects, name, path,
                             f"malformed entry: expected {{{', '.join(JSON_KEYS)}}}, found {found}", where(name, seen[name]))  # fmt: skip
                continue
            row = _label_row(name, entry, has_split, path, None)
            if isinstance(row, LabelRow):
                self._add(defects, rows, row, where)
            else:
                self._defect(defects, row[0] or name, path, row[1], where(name, seen[name]))
        return rows

    def read_labels(self) -> tuple[dict[str, LabelRow], dict[str, Any]]:
        """The labels rows (CSV preferred) and the info entry describing where they came from."""
        csv_path = self.corpus / LABELS_DIR / CONSENSUS_CSV
        json_path = self.corpus / LABELS_DIR / CONSENSUS_JSON
        if csv_path.is_file():
            rows = self.read_csv(csv_path)
            info: dict[str, Any] = {"file": f"{LABELS_DIR}/{CONSENSUS_CSV}"}
            if json_path.is_file():
                info["json_comparison"] = self.compare_json(rows, json_path)
            return rows, info
        if json_path.is_file():
            return self.read_json(json_path, self.defects), {"file": f"{LABELS_DIR}/{CONSENSUS_JSON}"}
        raise InputNotFound(
            f"MSP-Podcast {self.corpus}: expected the consensus labels {csv_path} or {json_path}, found neither"
        )

    def compare_json(self, rows: dict[str, LabelRow], path: Path) -> dict[str, Any]:
        """Compare labels_consensus.json with the CSV rows; differences become warnings, never defects."""
        problems = DefectLog("skip")
        try:
            other = self.read_json(path, problems)
        except ValueError as e:
            self.warnings.append(f"{path} not compared with {CONSENSUS_CSV}: {e}")
            return {"compared": False, "error": str(e)}
        differences = [f"{d.item}: {d.problem}" for d in problems.items]
        for name in sorted(set(rows) - set(other) - {d.item for d in problems.items}):
            differences.append(f"{name}: in {CONSENSUS_CSV}, not in {CONSENSUS_JSON}")
        for name in sorted(set(other) - set(rows) - self.bad_items):
            differences.append(f"{name}: in {CONSENSUS_JSON}, not in {CONSENSUS_CSV}")
        for name in sorted(set(rows) & set(other)):
            differences += [f"{name}: {d}" for d in _row_differences(rows[name], other[name])]
        if differences:
            self.warnings.append(
                f"{CONSENSUS_CSV} and {CONSENSUS_JSON} differ in {len(differences)} places (the CSV is used); "
                f"first: {differences[0]}"
            )
        return {"compared": True, "differences": len(differences), "examples": differences[:_MAX_EXAMPLES]}

    def read_partitions(self) -> tuple[dict[str, str], Path | None]:
        """File name -> raw split value from Partitions.txt (root or Labels/), if the release has one."""
        for path in (self.corpus / PARTITIONS, self.corpus / LABELS_DIR / PARTITIONS):
            if path.is_file():
                break
        else:
            return {}, None
        splits: dict[str, str] = {}
        lines_of: dict[str, int] = {}
        for lineno, raw in enumerate(self._read(path).splitlines(), 1):
            if not raw.strip():
                continue
            m = _PARTITION_LINE.match(raw)
            if m is None or not m.group(1) or not m.group(2).lower().endswith(".wav"):
                self._defect(self.defects, f"{PARTITIONS} line {lineno}", path,
                             f"malformed line: expected 'SPLIT; FILE.wav', found {raw.strip()[:120]!r}", lineno)  # fmt: skip
                continue
            value, name = m.group(1), m.group(2)
            if name in splits:
                self._defect(self.defects, name, path,
                             f"duplicate file name: already listed at line {lines_of[name]}; the first is kept", lineno,
                             drops=False)  # fmt: skip
                continue
            splits[name], lines_of[name] = value, lineno
        return splits, path

    # --- the corpus --------------------------------------------------------------------------------
    def list_audio(self) -> tuple[set[str], int]:
        audio_dir = self.corpus / AUDIO_DIR
        if not audio_dir.is_dir():
            raise InputNotFound(
                f"MSP-Podcast {self.corpus}: expected the wav folder {audio_dir}, found none "
                "(use text_only / --text-only for labels and transcripts without audio)"
            )
        return _list_files(audio_dir, ".wav")

    def check_audio(self, entries: list[_Entry]) -> tuple[list[_Entry], Counter[str]]:
        """`entries` without those whose wav fails a full decode (defects), and the audio formats seen."""
        formats: Counter[str] = Counter()
        kept: list[_Entry] = []
        paths = [self.corpus / AUDIO_DIR / e.name for e in entries]
        pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        try:
            for entry, path, (problem, fmt) in zip(entries, paths, pool.map(_deep_check, paths), strict=True):
                if problem is not None:
                    self._defect(self.defects, entry.name, path, problem)
                    continue
                formats[fmt or "unknown"] += 1
                kept.append(entry)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # fail fast: no decoding of the rest after a fatal defect
        return kept, formats

    def run(self) -> ParseResult:
        labels, labels_info = self.read_labels()
        partitions, partitions_path = self.read_partitions()
        audio, ignored_audio = self.list_audio() if not self.text_only else (set(), 0)
        transcript_dir = self.corpus / TRANSCRIPTS_DIR
        transcripts = _list_files(transcript_dir, ".txt")[0] if transcript_dir.is_dir() else set()

        entries: list[_Entry] = []
        disagreements = 0
        for name, row in labels.items():
            if not self.text_only and name not in audio:
                self._defect(self.defects, name, row.file,
                             f"missing audio file: expected {self.corpus / AUDIO_DIR / name}, found no file", row.line)  # fmt: skip
                continue
            if row.split and name in partitions and partitions[name] != row.split:
                disagreements += 1
            entries.append(_Entry(name, row, row.split or partitions.get(name) or ""))
        unlabelled = sorted(audio - set(labels) - self.bad_items)
        entries += [_Entry(name, None, partitions.get(name) or "") for name in unlabelled]
        formats: Counter[str] = Counter()
        if self.deep and not self.text_only:
            entries, formats = self.check_audio(entries)

        # Plain string paths: pathlib's joins cost more than the rest of a row on 150 k files.
        audio_prefix, transcript_prefix = str(self.corpus / AUDIO_DIR) + os.sep, str(transcript_dir) + os.sep
        utterances: list[tuple[tuple[int, ...], Utterance]] = []
        kept: list[_Entry] = []
        transcript_counts: Counter[str] = Counter()
        for entry in entries:
            stem = entry.name[: -len(".wav")]
            text: str | None = ""
            if stem + ".txt" in transcripts:
                text = self.transcript(transcript_prefix + stem + ".txt", entry.name)
                if text is None:
                    continue
                transcript_counts["with_text" if text else "empty"] += 1
            else:
                transcript_counts["absent"] += 1
            row = entry.row
            dialogue, order = conversation_key(stem)
            utterance = Utterance(
                dataset=DATASET,
                split=_split(entry.split),
                dialogue_id=dialogue,
                utt_index=-1,  # set once the podcast's segments are in order
                utt_id=stem,
                text=text,
                label=self.spec.code_to_label[row.emo_class] if row is not None and row.emo_class else None,
                label_raw=(row.emo_class or None) if row is not None else None,
                speaker=row.speaker if row is not None else None,
                audio_path=None if self.text_only else audio_prefix + entry.name,
            )
            utterances.append((order, utterance))
            kept.append(entry)
        transcript_counts["orphans"] = len(transcripts) - transcript_counts["with_text"] - transcript_counts["empty"]

        split_values = Counter(e.split for e in kept)
        unknown_splits = {v: n for v, n in sorted(split_values.items()) if v and v not in SPLIT_VALUES}
        unlabelled_kept = [e.name for e in kept if e.row is None]
        self._warn(unknown_splits, split_values[""], unlabelled_kept, disagreements, formats)
        labels_info["rows"] = len(labels)
        labels_info["withheld"] = sum(1 for e in kept if e.row is not None and not e.row.emo_class)
        info = {
            "root": str(self.corpus),
            "labels": list(self.spec.labels),
            "label_codes": dict(self.spec.code_to_label),
            "protocol_description": self.spec.description,
            "labels_source": labels_info,
            "split_source": "Split_Set" if any(r.split is not None for r in labels.values())
                            else (PARTITIONS if partitions_path else "none"),  # fmt: skip
            "split_map": {**SPLIT_VALUES, "(none)": UNASSIGNED},
            "split_values": {v or "(none)": n for v, n in sorted(split_values.items())},
            "unknown_split_values": unknown_splits,
            "partitions": {"file": partitions_path.relative_to(self.corpus).as_posix(), "entries": len(partitions),
                           "split_set_disagreements": disagreements} if partitions_path else None,  # fmt: skip
            "unlabelled_audio": {"count": len(unlabelled_kept), "examples": unlabelled_kept[:_MAX_EXAMPLES]},
            "release_transcripts": {k: transcript_counts[k] for k in ("with_text", "empty", "absent", "orphans")},
            "nonstandard_names": sum(1 for _, u in utterances if not MSP_NAME.match(u.utt_id)),
            "ignored_audio_entries": ignored_audio,
            "audio_formats": dict(sorted(formats.items())) if self.deep and not self.text_only else None,
            "deep_audio_check": self.deep,
            "text_only": self.text_only,
            "warnings": self.warnings,
            "source_files": self.sources,
        }
        return ParseResult(utterances=_order(utterances), defects=self.defects.items, info=info)

    def _warn(
        self, unknown_splits: dict[str, int], no_split: int, unlabelled: list[str], disagreements: int, formats: Counter[str]
    ) -> None:
        if unknown_splits:
            values = ", ".join(f"{v!r} x{n}" for v, n in unknown_splits.items())
            self.warnings.append(f"split values outside {'/'.join(SPLIT_VALUES)} kept as split names: {values}")
        if no_split:
            self.warnings.append(f"{no_split} utterances have no split value; their split is {UNASSIGNED!r}")
        if unlabelled:
            self.warnings.append(
                f"{len(unlabelled)} wavs in {AUDIO_DIR}/ have no labels row; kept with label None (e.g. {unlabelled[0]})"
            )
        if disagreements:
            self.warnings.append(f"{disagreements} files have a Split_Set that differs from {PARTITIONS}; Split_Set is used")
        odd = {f: n for f, n in formats.items() if f != f"{SAMPLE_RATE} Hz x 1 ch"}
        if odd:
            self.warnings.append(f"audio not 16 kHz mono (resampled / down-mixed when loaded): {odd}")

    def transcript(self, path: str, name: str) -> str | None:
        """A release transcript as one line of text, or None after recording the defect."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            self._defect(self.defects, name, Path(path), f"unreadable transcript: {e.strerror or e}")
            return None
        return " ".join(_decode(raw).split())


class _Pairs(list):
    """A JSON object with a duplicate key, as its (key, value) pairs (json.loads would keep only the last)."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Pairs:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _Pairs(pairs)


class _JsonLines:
    """``where(key, n)``: the line of the n-th ``"key": {`` of a JSON text, indexed on first use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: dict[str, list[int]] | None = None

    def __call__(self, key: str, occurrence: int) -> int | None:
        if self.lines is None:
            self.lines = _json_entry_lines(self.text)
        found = self.lines.get(key, [])
        return found[occurrence - 1] if occurrence <= len(found) else _json_line(self.text, key, occurrence)


def _text(value: Any) -> str:
    if type(value) is str:
        return value.strip()
    return "" if value is None else str(value).strip()


def _number(value: Any) -> float | None:
    """A SAM mean; None when absent; NaN when not a finite number."""
    if type(value) is float or type(value) is int:
        return float(value) if math.isfinite(value) else math.nan
    text = _text(value)
    if text in MISSING_VALUES:
        return None
    try:
        number = float(text)
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def _label_row(name: Any, values: Mapping[str, Any], has_split: bool, file: Path, line: int | None) -> LabelRow | tuple[str, str]:
    """A validated labels entry, or (item, problem)."""
    item = _text(name)
    if not item or "/" in item or "\\" in item or not item.lower().endswith(".wav"):
        return item, f"malformed FileName {item!r}: expected a wav file name such as MSP-PODCAST_0153_0042.wav"
    emo_class = _text(values.get("EmoClass"))
    if emo_class and emo_class not in EMO_CLASSES:
        return item, f"unknown EmoClass {emo_class!r}: expected one of {' '.join(EMO_CLASSES)} (or empty when withheld)"
    attributes = tuple(_number(values.get(key)) for key in ATTRIBUTES)
    for key, value in zip(ATTRIBUTES, attributes, strict=True):
        if value is not None and math.isnan(value):
            return item, f"malformed row: {key} should be a number (1-7), found {_text(values.get(key))!r}"
    speaker = _text(values.get("SpkrID"))
    gender = _text(values.get("Gender"))
    return LabelRow(
        name=item,
        emo_class=emo_class,
        attributes=attributes,  # type: ignore[arg-type]
        speaker=None if speaker in UNKNOWN_SPEAKER else speaker,
        gender=None if gender in UNKNOWN_SPEAKER else gender,
        split=_text(values.get("Split_Set")) if has_split else None,
        file=file,
        line=line,
    )


_JSON_ENTRY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*\{')


def _json_entry_lines(text: str) -> dict[str, list[int]]:
    """Line numbers of every ``"key": {`` in a JSON text (the file entries of labels_consensus.json), in one pass."""
    lines: dict[str, list[int]] = defaultdict(list)
    line, pos = 1, 0
    for m in _JSON_ENTRY.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        try:
            key = json.loads(f'"{m.group(1)}"')
        except json.JSONDecodeError:
            continue
        lines[key].append(line)
    return lines


def _json_line(text: str, key: str, occurrence: int) -> int | None:
    """The line of the `occurrence`-th ``"key":`` in a JSON text (None when not found)."""
    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    pos = 0
    for _ in range(occurrence):
        m = pattern.search(text, pos)
        if m is None:
            return None
        pos = m.end()
    return text.count("\n", 0, pos) + 1


def _row_differences(a: LabelRow, b: LabelRow) -> list[str]:
    diffs = []
    for key, x, y in (("EmoClass", a.emo_class, b.emo_class), ("SpkrID", a.speaker, b.speaker),
                      ("Gender", a.gender, b.gender), ("Split_Set", a.split, b.split)):  # fmt: skip
        if x != y:
            diffs.append(f"{key} {x!r} in {CONSENSUS_CSV}, {y!r} in {CONSENSUS_JSON}")
    for key, x, y in zip(ATTRIBUTES, a.attributes, b.attributes, strict=True):
        if (x is None) != (y is None) or (x is not None and y is not None and abs(x - y) > _FLOAT_TOLERANCE):
            diffs.append(f"{key} {x} in {CONSENSUS_CSV}, {y} in {CONSENSUS_JSON}")
    return diffs


def _split(raw: str | None) -> str:
    if not raw:
        return UNASSIGNED
    return SPLIT_VALUES.get(raw, raw)


def _order(utterances: Iterable[tuple[tuple[int, ...], Utterance]]) -> list[Utterance]:
    """Rows grouped by conversation in segment order (then by id), with utt_index set."""
    by_dialogue: dict[str, list[tuple[tuple[int, ...], str, Utterance]]] = defaultdict(list)
    for order, u in utterances:
        by_dialogue[u.dialogue_id].append((order, u.utt_id, u))
    ordered: list[Utterance] = []
    for dialogue in sorted(by_dialogue):
        for i, (_, _, u) in enumerate(sorted(by_dialogue[dialogue], key=lambda t: (t[0], t[1]))):
            u.utt_index = i
            ordered.append(u)
    return ordered


def get_protocol(protocol: str) -> ProtocolSpec:
    """The ProtocolSpec named `protocol`, with a clear error for an unknown name."""
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"unknown MSP-Podcast protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def parse_msp_podcast(
    root: str | Path,
    protocol: str = "msp_all",
    on_error: OnError = "fail",
    deep: bool = False,
    text_only: bool = False,
) -> ParseResult:
    """Parse an MSP-Podcast release into manifest rows (policies: the module docstring).

    `text_only` reads labels and release transcripts without looking at ``Audios/`` (audio_path None;
    audio without a labels row is then not discovered). `deep` decodes every wav. Raises
    FileNotFoundError without a release folder or labels file, ValueError for an unusable labels file,
    and CorpusProblem for the first bad item under ``on_error="fail"``.
    """
    spec = get_protocol(protocol)
    if on_error not in ("fail", "skip"):
        raise InvalidInput(f"on_error: expected 'fail' or 'skip', found {on_error!r}")
    corpus = find_corpus_root(root)
    return _MspParser(corpus, spec, on_error, deep, text_only).run()
