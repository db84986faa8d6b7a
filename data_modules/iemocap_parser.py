"""Parse an `IEMOCAP_full_release` folder into manifest rows (pure parsing: no Lightning, no features)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from data_modules.errors import InputNotFound, InvalidInput
from data_modules.manifest import DefectLog, ParseResult, Utterance
from data_modules.text_decoding import decode_lines

DATASET = "iemocap"
CORPUS_FOLDER = "IEMOCAP_full_release"
SESSIONS = (1, 2, 3, 4, 5)
# The manifest's default split; data modules may re-split (e.g. leave-one-session-out).
DEFAULT_SESSION_SPLITS: Mapping[int, str] = {1: "validation", 2: "train", 3: "train", 4: "train", 5: "test"}
# Every consensus code of the release; anything else is a defect, not a protocol exclusion.
IEMOCAP_CODES = ("neu", "hap", "sad", "ang", "exc", "fru", "sur", "fea", "dis", "oth", "xxx")

EMO_LINE = re.compile(r"^\[(\d+\.\d+) - (\d+\.\d+)\]\t(\S+)\t(\w+)\t\[(\S+), (\S+), (\S+)\]$")
# datasets.md's turn regex, with any spacing after the colon so that an empty transcript is
# reported as empty rather than as a missing line.
TRANSCRIPT_LINE = re.compile(r"^(\S+) \[(\d+\.\d+)-(\d+\.\d+)\]:\s*(.*)$")
_TURN_TOKEN = re.compile(r"Ses\d\d[FM]\S*")
_EMO_FORMAT = "'[START - END]<TAB>TURN<TAB>CODE<TAB>[V, A, D]'"

OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class ProtocolSpec:
    """A label protocol: class names in index order, the code->label map, and the real corpus' counts."""

    name: str
    labels: tuple[str, ...]
    code_to_label: Mapping[str, str]
    expected_total: int
    expected_splits: Mapping[str, int] | None  # under DEFAULT_SESSION_SPLITS; None where not published
    expected_labels: Mapping[str, int]
    description: str

    def published(self) -> dict[str, Any]:
        """The real-corpus counts, as stored in report.json."""
        return {
            "total": self.expected_total,
            "splits": dict(self.expected_splits) if self.expected_splits is not None else None,
            "labels": dict(self.expected_labels),
        }


# Label order: DialogueRNN's 6-class order (hap, sad, neu, ang, exc, fru); the 4-class protocol is its
# first four classes, so class index i names the same emotion under both protocols.
PROTOCOLS: dict[str, ProtocolSpec] = {
    "iemocap4": ProtocolSpec(
        name="iemocap4",
        labels=("hap", "sad", "neu", "ang"),
        code_to_label={"hap": "hap", "exc": "hap", "sad": "sad", "neu": "neu", "ang": "ang"},
        expected_total=5531,
        expected_splits={"train": 3205, "validation": 1085, "test": 1241},
        expected_labels={"hap": 1636, "sad": 1084, "neu": 1708, "ang": 1103},
        description="SER 4-class (MERITS-L, HCAM): exc merged into hap; fru, xxx and rarer codes dropped",
    ),
    "iemocap6": ProtocolSpec(
        name="iemocap6",
        labels=("hap", "sad", "neu", "ang", "exc", "fru"),
        code_to_label={c: c for c in ("hap", "sad", "neu", "ang", "exc", "fru")},
        expected_total=7380,
        expected_splits=None,
        expected_labels={"hap": 595, "sad": 1084, "neu": 1708, "ang": 1103, "exc": 1041, "fru": 1849},
        description="ERC 6-class (DialogueRNN order 0..5), from the raw consensus labels",
    ),
}


@dataclass
class _LabelLine:
    turn: str
    code: str
    start: float
    end: float
    file: Path
    line: int


@dataclass
class _TranscriptLine:
    text: str
    file: Path
    line: int
    start: float
    end: float


def find_corpus_root(root: str | Path) -> tuple[Path, list[int]]:
    """The `IEMOCAP_full_release` folder (`root` itself or its child) and the session numbers in it."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputNotFound(f"IEMOCAP root {root}: expected a directory, found none")
    for candidate in (root, root / CORPUS_FOLDER):
        sessions = [n for n in SESSIONS if (candidate / f"Session{n}").is_dir()]
        if sessions:
            return candidate, sessions
    raise InputNotFound(
        f"IEMOCAP root {root}: expected folders Session1..Session5 in it or in {root / CORPUS_FOLDER}, found none"
    )


def check_wav(path: Path, deep: bool = False) -> str | None:
    """The problem with an audio file, or None: header check by default, a full decode with `deep`."""
    if not path.is_file():
        return "missing audio file: expected the turn's wav here, found no file"
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        return f"unreadable audio file: expected a WAV that soundfile can open, got: {e}"
    if info.frames <= 0:
        return "empty audio file: expected samples, the header declares 0"
    if deep:
        try:
            data, _ = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, OSError) as e:
            return f"audio file fails to decode: {e}"
        if len(data) != info.frames:
            return f"audio file decodes to {len(data)} samples, its header declares {info.frames}"
        if not np.isfinite(data).all():
            return "audio file contains non-finite samples (NaN or inf)"
    return None


def _txt_files(folder: Path) -> dict[str, Path]:
    """`<dialog>.txt` files of a folder by dialog name; subfolders and `._*` AppleDouble files skipped."""
    if not folder.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix == ".txt" and not p.name.startswith("._")
    }


def _speaker(turn: str, session: int) -> str | None:
    # The speaker is the last F/M of the turn name (the letter after SesNN is the mocap actor);
    # prefixed by the session so that the 10 actors get 10 distinct ids.
    letters = [c for c in turn if c in "FM"]
    return f"Ses{session:02d}_{letters[-1]}" if letters else None


class _IemocapParser:
    """State of one parse: protocol, defect policy, turn ids seen so far, exclusions, source files."""

    def __init__(self, corpus: Path, spec: ProtocolSpec, on_error: OnError, deep: bool, text_only: bool = False) -> None:
        self.corpus = corpus
        self.spec = spec
        self.deep = deep
        self.text_only = text_only
        self.defects = DefectLog(on_error)
        self.labelled: dict[str, _LabelLine] = {}
        self.excluded: Counter[str] = Counter()
        self.unlabelled: list[str] = []  # transcription turns without an EmoEvaluation line
        self.sources: dict[str, str] = {}

    def _lines(self, path: Path, item: str) -> list[str] | None:
        try:
            raw = path.read_bytes()
        except OSError as e:
            self.defects.add(item, path, f"unreadable file: {e.strerror or e}")
            return None
        self.sources[path.relative_to(self.corpus).as_posix()] = hashlib.sha256(raw).hexdigest()
        return decode_lines(raw)

    def session(self, n: int) -> list[Utterance]:
        dialog_dir = self.corpus / f"Session{n}" / "dialog"
        emo_dir, tr_dir = dialog_dir / "EmoEvaluation", dialog_dir / "transcriptions"
        emo_files, tr_files = _txt_files(emo_dir), _txt_files(tr_dir)
        if not emo_files:
            self.defects.add(f"Session{n}", emo_dir, "no label files: expected one <dialog>.txt per dialogue")
        rows: list[Utterance] = []
        for dialog, emo_path in emo_files.items():
            rows += self.dialog(n, dialog, emo_path, tr_files.get(dialog, tr_dir / f"{dialog}.txt"))
        for dialog in sorted(set(tr_files) - set(emo_files)):
            self.defects.add(
                dialog,
                tr_files[dialog],
                f"transcription turns without labels: expected a label file {emo_dir / (dialog + '.txt')}, found none",
            )
        return rows

    def labels(self, path: Path, dialog: str) -> tuple[list[_LabelLine], set[str]]:
        """The valid label lines of one EmoEvaluation file, and every turn id its `[` lines mention."""
        lines = self._lines(path, dialog)
        found: list[_LabelLine] = []
        mentioned: set[str] = set()
        for lineno, raw in enumerate(lines or [], 1):
            if not raw.startswith("["):
                continue
            line = raw.rstrip()
            m = EMO_LINE.match(line)
            if m is None:
                token = _TURN_TOKEN.search(line)
                item = token.group(0) if token else f"{dialog} line {lineno}"
                mentioned.add(item)
                self.defects.add(
                    item,
                    path,
                    f"malformed EmoEvaluation line: expected {_EMO_FORMAT}, found {line[:120]!r}",
                    lineno,
                )
                continue
            start, end, turn, code = m.group(1), m.group(2), m.group(3), m.group(4)
            mentioned.add(turn)
            if code not in IEMOCAP_CODES:
                self.defects.add(
                    turn,
                    path,
                    f"unknown emotion code {code!r}: expected one of {' '.join(IEMOCAP_CODES)}",
                    lineno,
                )
                continue
            first = self.labelled.get(turn)
            if first is not None:
                self.defects.add(
                    turn,
                    path,
                    f"duplicate turn id: already labelled at {first.file}:{first.line}; the first is kept",
                    lineno,
                )
                continue
            entry = _LabelLine(turn, code, float(start), float(end), path, lineno)
            self.labelled[turn] = entry
            found.append(entry)
        return found, mentioned

    def transcripts(self, path: Path, dialog: str) -> dict[str, _TranscriptLine]:
        """Turn id -> transcript line; lines that are not turns (noise markers, overlaps) are ignored."""
        lines = self._lines(path, dialog)
        found: dict[str, _TranscriptLine] = {}
        for lineno, raw in enumerate(lines or [], 1):
            m = TRANSCRIPT_LINE.match(raw.rstrip("\r\n"))
            if m is None:
                continue
            turn, text = m.group(1), m.group(4).strip()
            first = found.get(turn)
            if first is not None:
                self.defects.add(
                    turn,
                    path,
                    f"duplicate turn id in transcription: first at line {first.line}; the first is kept",
                    lineno,
                )
                continue
            found[turn] = _TranscriptLine(text, path, lineno, float(m.group(2)), float(m.group(3)))
        return found

    def dialog(self, session: int, dialog: str, emo_path: Path, tr_path: Path) -> list[Utterance]:
        labels, mentioned = self.labels(emo_path, dialog)
        has_transcripts = tr_path.is_file()
        transcripts = self.transcripts(tr_path, dialog) if has_transcripts else {}
        split = DEFAULT_SESSION_SPLITS[session]
        rows: list[Utterance] = []
        # A turn the annotators never labelled (e.g. the release's overlapped _MXX0/_FXX0 turns) is not a
        # defect: it is kept as an unlabelled row (context only; label-consuming code skips it) and counted.
        for turn, t in transcripts.items():
            if turn not in mentioned:
                self.unlabelled.append(turn)
                if t.text:
                    rows.append(self.unlabelled_utterance(session, dialog, split, turn, t))
        for entry in labels:
            label = self.spec.code_to_label.get(entry.code)
            if label is None:
                self.excluded[entry.code] += 1
                continue
            row = self.utterance(session, dialog, split, entry, label, transcripts.get(entry.turn), tr_path)
            if row is not None:
                rows.append(row)
        # Turn counters are per speaker, so only the start time gives the conversation order.
        rows.sort(key=lambda u: (u.start, u.end, u.utt_id))
        for i, row in enumerate(rows):
            row.utt_index = i
        return rows

    def utterance(
        self,
        session: int,
        dialog: str,
        split: str,
        entry: _LabelLine,
        label: str,
        transcript: _TranscriptLine | None,
        tr_path: Path,
    ) -> Utterance | None:
        """The manifest row of a retained turn, or None after recording its defect."""
        if transcript is None:
            where = tr_path if tr_path.is_file() else f"{tr_path} (file not found)"
            self.defects.add(
                entry.turn,
                entry.file,
                f"labelled turn without a transcription: expected a '{entry.turn} [START-END]: TEXT' line in {where}",
                entry.line,
            )
            return None
        if not transcript.text:
            self.defects.add(
                entry.turn,
                transcript.file,
                "empty transcript: expected the turn's words after ':'",
                transcript.line,
            )
            return None
        wav: Path | None = self.corpus / f"Session{session}" / "sentences" / "wav" / dialog / f"{entry.turn}.wav"
        if self.text_only:
            wav = None  # transcripts and labels only: the media need not exist
        elif (problem := check_wav(wav, self.deep)) is not None:
            self.defects.add(entry.turn, wav, problem)
            return None
        return Utterance(
            dataset=DATASET,
            split=split,
            dialogue_id=dialog,
            utt_index=-1,  # set once the dialogue is sorted by time
            utt_id=entry.turn,
            text=transcript.text,
            label=label,
            label_raw=entry.code,
            speaker=_speaker(entry.turn, session),
            start=entry.start,
            end=entry.end,
            audio_path=str(wav) if wav is not None else None,
            audio_ok=True,
        )

    def unlabelled_utterance(self, session: int, dialog: str, split: str, turn: str, t: _TranscriptLine) -> Utterance:
        """The row of a transcription turn without a label; its audio is used when present, never required."""
        wav: Path | None = self.corpus / f"Session{session}" / "sentences" / "wav" / dialog / f"{turn}.wav"
        audio_ok = not self.text_only and check_wav(wav, self.deep) is None
        return Utterance(
            dataset=DATASET,
            split=split,
            dialogue_id=dialog,
            utt_index=-1,
            utt_id=turn,
            text=t.text,
            label=None,
            label_raw=None,
            speaker=_speaker(turn, session),
            start=t.start,
            end=t.end,
            audio_path=None if self.text_only else str(wav),
            audio_ok=audio_ok,
        )


def compare_with_published(utterances: list[Utterance], spec: ProtocolSpec, sessions: list[int]) -> list[str]:
    """Warnings where a full (five-session) copy's counts differ from the published ones."""
    if tuple(sessions) != SESSIONS:
        found = ", ".join(f"Session{n}" for n in sessions)
        return [
            f"only {found} found (expected Session1..Session5); counts not compared with the published ones"
        ]
    warnings: list[str] = []
    utterances = [u for u in utterances if u.label is not None]
    if len(utterances) != spec.expected_total:
        warnings.append(
            f"{spec.name}: {len(utterances)} utterances, the published full-corpus count is {spec.expected_total}"
        )
    splits = Counter(u.split for u in utterances)
    for split, n in (spec.expected_splits or {}).items():
        if splits[split] != n:
            warnings.append(f"{spec.name}: {splits[split]} {split} utterances, the published count is {n}")
    labels = Counter(u.label for u in utterances)
    for label, n in spec.expected_labels.items():
        if labels[label] != n:
            warnings.append(f"{spec.name}: {labels[label]} '{label}' utterances, the published count is {n}")
    return warnings


def get_protocol(protocol: str) -> ProtocolSpec:
    """The ProtocolSpec named `protocol`, with a clear error for an unknown name."""
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"unknown IEMOCAP protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def parse_iemocap(
    root: str | Path,
    protocol: str = "iemocap4",
    on_error: OnError = "fail",
    deep: bool = False,
    text_only: bool = False,
) -> ParseResult:
    """Parse IEMOCAP into manifest rows (Session 1 validation, 2-4 train, 5 test).

    `text_only` reads transcripts and labels without looking for the wav files (audio_path is None).
    Under `on_error="fail"` the first bad item raises `CorpusProblem`; under `"skip"` bad items are left
    out and listed in `defects`. Turns whose code the protocol does not use are counted in
    `info["excluded_by_protocol"]`, not reported as defects. Transcription turns without an EmoEvaluation
    line are rows with ``label=None`` (context only) counted in `info["unlabelled_turns"]`. Raises
    InputNotFound without sessions.
    """
    spec = get_protocol(protocol)
    if on_error not in ("fail", "skip"):
        raise InvalidInput(f"on_error: expected 'fail' or 'skip', found {on_error!r}")
    corpus, sessions = find_corpus_root(root)
    parser = _IemocapParser(corpus, spec, on_error, deep, text_only)
    utterances = [u for n in sessions for u in parser.session(n)]
    info = {
        "root": str(corpus),
        "labels": list(spec.labels),
        "sessions": [f"Session{n}" for n in sessions],
        "session_splits": {f"Session{n}": DEFAULT_SESSION_SPLITS[n] for n in SESSIONS},
        "excluded_by_protocol": dict(sorted(parser.excluded.items())),
        "unlabelled_turns": {
            "count": len(parser.unlabelled),
            "ids": sorted(parser.unlabelled),
            "note": "transcription turns without an EmoEvaluation line: manifest rows with label null, "
            "not in the labelled counts; used only as conversation context (IEMOCAPDataModule unlabelled_context)",
        },
        "published": spec.published(),
        "warnings": compare_with_published(utterances, spec, sessions),
        "deep_audio_check": deep,
        "text_only": text_only,
        "source_files": parser.sources,
    }
    return ParseResult(utterances=utterances, defects=parser.defects.items, info=info)
