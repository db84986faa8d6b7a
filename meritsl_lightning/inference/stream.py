"""Turns of a live conversation as they arrive: JSON lines on a stream, or new files in a watched folder.

A JSON line is ``{"audio": PATH, "text": ..., "id": ..., "conversation": ..., "start": ..., "end": ...}``
(``audio`` or ``text`` required; relative paths are read from the working folder). A watched folder yields an
audio file once its size has stopped changing between two polls, with its transcript from ``<name>.txt`` or
``transcripts.jsonl`` if present; files present at once come in natural name order.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from meritsl_lightning.inference.turns import (
    TRANSCRIPTS_FILE,
    InputError,
    TurnInput,
    is_audio,
    natural_key,
    read_transcripts,
)


def json_line_turns(lines: Iterable[str], conversation: str, report=None) -> Iterator[TurnInput]:
    """Turns from JSON lines; a malformed line is reported (``report``, default stderr) and skipped."""
    report = report or (lambda message: print(message, file=sys.stderr, flush=True))
    counts: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not (row.get("audio") or row.get("text")):
                raise ValueError("expected a JSON object with 'audio' and/or 'text'")
            text = row.get("text")
            if text is not None and not isinstance(text, str):
                raise ValueError("'text' must be a string")
        except ValueError as e:
            report(f"stdin line {lineno}: skipped ({e})")
            continue
        name = str(row.get("conversation") or conversation)
        counts[name] = counts.get(name, 0) + 1
        audio = row.get("audio")
        note = None if audio is None or Path(audio).is_file() else f"audio file {audio} not found"
        yield TurnInput(
            name,
            str(row.get("id") or (Path(audio).stem if audio else f"turn{counts[name]}")),
            str(Path(audio).resolve()) if audio and note is None else None,
            (text or "").strip() or None,
            row.get("start"),
            row.get("end"),
            note=note,
        )


def watch_folder(
    folder: Path, poll_seconds: float = 0.5, idle_timeout: float | None = None, sleep=time.sleep, clock=time.monotonic
) -> Iterator[TurnInput]:
    """New audio files of ``folder`` as they become complete; ends after ``idle_timeout`` s without one."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder to watch")
    seen: set[str] = set()
    sizes: dict[str, int] = {}
    last_new = clock()
    while True:
        ready = []
        for path in folder.iterdir():
            if path.name in seen or not is_audio(path):
                continue
            size = path.stat().st_size
            if sizes.get(path.name) == size and size > 0:
                ready.append(path)
            sizes[path.name] = size
        if ready:
            listed = read_transcripts(folder / TRANSCRIPTS_FILE) if (folder / TRANSCRIPTS_FILE).is_file() else {}
            for path in sorted(ready, key=lambda p: natural_key(p.name)):
                seen.add(path.name)
                text = (listed.get(path.stem) or {}).get("text")
                side = path.with_suffix(".txt")
                if text is None and side.is_file():
                    text = side.read_text(encoding="utf-8").strip() or None
                yield TurnInput(folder.name, path.stem, str(path.resolve()), text)
            last_new = clock()
        elif idle_timeout is not None and clock() - last_new >= idle_timeout:
            return
        sleep(poll_seconds)
