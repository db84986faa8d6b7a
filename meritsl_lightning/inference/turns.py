"""The turns of a conversation to analyse, from a folder of turn files or a ``meritsl prepare`` manifest.

A folder holds one audio file per turn, in conversation order by natural sort of the names (``turn2`` before
``turn10``), with optional transcripts: ``transcripts.jsonl`` (one ``{"id" or "file", "text"}`` line per turn;
``meritsl transcribe`` output works as it is) and/or ``<name>.txt`` beside ``<name>.wav``. A turn listed in
``transcripts.jsonl`` whose audio file is absent is kept, with a note: a text-only bundle can still use it.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from data_modules.manifest import ManifestError, read_manifest

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".mp4", ".m4a")
TRANSCRIPTS_FILE = "transcripts.jsonl"


class InputError(ValueError):
    """Input that cannot be analysed at all (no turns, a malformed transcripts file); names the file."""


@dataclass
class TurnInput:
    """One turn to analyse: where its audio is, its transcript if known, and its time span if known."""

    conversation: str
    turn_id: str
    audio_path: str | None = None
    text: str | None = None
    start: float | None = None
    end: float | None = None
    wave: torch.Tensor | None = None  # already decoded, 16 kHz mono (the segments of a long recording)
    note: str | None = None  # a problem found while listing the input (e.g. its audio file is missing)


def natural_key(name: str) -> list[object]:
    """Sort key under which ``turn2`` comes before ``turn10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_audio(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def read_transcripts(path: Path) -> dict[str, dict]:
    """``transcripts.jsonl`` rows by turn id (``id``, else the stem of ``file`` / ``audio_path``)."""
    rows: dict[str, dict] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object with 'id' or 'file' and 'text'")
        ref = row.get("file") or row.get("audio_path")
        turn_id = row.get("id") or (Path(str(ref)).stem if ref else None)
        if not turn_id:
            raise InputError(f"{path}:{lineno}: the row names no turn ('id' or 'file')")
        if turn_id in rows:
            raise InputError(f"{path}:{lineno}: turn {turn_id!r} appears more than once")
        text = row.get("text")
        if text is not None and not isinstance(text, str):
            raise InputError(f"{path}:{lineno}: 'text' must be a string or null, got {type(text).__name__}")
        rows[str(turn_id)] = {**row, "text": text.strip() if isinstance(text, str) and text.strip() else None}
    return rows


def folder_turns(folder: str | os.PathLike) -> tuple[list[TurnInput], list[str]]:
    """The turns of a folder in natural name order, and warnings about files that are not turns."""
    folder = Path(folder)
    audio: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_audio(path):
            if path.stem in audio:
                raise InputError(f"{folder}: {audio[path.stem].name} and {path.name} would both be turn {path.stem!r}")
            audio[path.stem] = path
    listed = read_transcripts(folder / TRANSCRIPTS_FILE) if (folder / TRANSCRIPTS_FILE).is_file() else {}
    warnings = [
        f"ignored {p.name}: no audio file named {p.stem}.* beside it"
        for p in sorted(folder.glob("*.txt"))
        if p.stem not in audio and p.stem not in listed
    ]
    ids = sorted(set(audio) | set(listed), key=natural_key)
    if not ids:
        raise InputError(
            f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) and no {TRANSCRIPTS_FILE}: nothing to analyse"
        )
    turns = []
    for turn_id in ids:
        row = listed.get(turn_id, {})
        text = row.get("text")
        side = folder / f"{turn_id}.txt"
        if text is None and side.is_file():
            text = side.read_text(encoding="utf-8").strip() or None
        path = audio.get(turn_id)
        ref = row.get("file") or row.get("audio_path")
        if path is None and ref:
            path = Path(ref) if Path(ref).is_absolute() else folder / ref
        note = None
        if path is None or not path.is_file():
            note = f"audio file {path or folder / (turn_id + '.*')} not found"
            path = None
        turns.append(
            TurnInput(
                folder.name, turn_id, str(path) if path else None, text, row.get("start"), row.get("end"), note=note
            )
        )
    return turns, warnings


def manifest_turns(manifest: str | os.PathLike) -> list[list[TurnInput]]:
    """Every conversation of a ``meritsl prepare`` manifest (all splits), by dialogue id, turns by index."""
    try:
        rows = read_manifest(manifest)
    except ManifestError as e:
        raise InputError(str(e)) from e
    if not rows:
        raise InputError(f"{manifest}: the manifest has no rows: nothing to analyse")
    by_dialogue: dict[str, list] = defaultdict(list)
    for row in rows:
        by_dialogue[row.dialogue_id].append(row)
    conversations = []
    for dialogue_id in sorted(by_dialogue):
        turns = []
        for row in sorted(by_dialogue[dialogue_id], key=lambda u: u.utt_index):
            note = None
            if row.audio_path is None:
                note = "the manifest row has no audio file"
            elif not row.audio_ok:
                note = f"the manifest marks its audio {row.audio_path} unusable"
            audio = row.audio_path if note is None else None
            turns.append(TurnInput(dialogue_id, row.utt_id, audio, row.text.strip() or None, row.start, row.end, note=note))
        conversations.append(turns)
    return conversations
