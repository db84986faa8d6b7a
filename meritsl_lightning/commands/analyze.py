"""``meritsl analyze INPUT --bundle BUNDLE_DIR --out OUT``: per-turn emotions of new conversations.

INPUT is a folder of turn audio files (conversation order = natural name order; transcripts from
``transcripts.jsonl`` or ``<name>.txt`` beside them), one long recording (split into turns by
faster-whisper's voice activity detector, in bounded memory), or a ``meritsl prepare`` manifest (every
conversation in it). Turns without a transcript are transcribed with faster-whisper (``--asr-model``).
OUT gets turns.jsonl, turns.csv and timeline.png. ``--stream`` reads turns as they arrive (JSON lines on
stdin with INPUT ``-``, or new files in the folder INPUT) and emits each new turn's prediction at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from data_modules.audio import AudioError
from meritsl_lightning.checkpoints import CheckpointMismatch
from meritsl_lightning.inference.analyzer import Analyzer, Conversation, Transcriber
from meritsl_lightning.inference.bundle import Bundle, BundleError
from meritsl_lightning.inference.chain import Chain
from meritsl_lightning.inference.longform import RecordingSegmenter
from meritsl_lightning.inference.outputs import ResultWriter, table_header, table_line
from meritsl_lightning.inference.stream import json_line_turns, watch_folder
from meritsl_lightning.inference.timeline import plot_timeline
from meritsl_lightning.inference.turns import (
    AUDIO_EXTENSIONS,
    InputError,
    TurnInput,
    folder_turns,
    manifest_turns,
)
from meritsl_lightning.pseudo_labels.transcribe import TranscribeError

USER_ERRORS = (BundleError, InputError, TranscribeError, CheckpointMismatch, AudioError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meritsl analyze",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", help="a folder of turn audio files, one long recording, a manifest.jsonl, or (--stream) '-' for stdin")
    p.add_argument("--bundle", required=True, help="a bundle folder written by `meritsl export`")
    p.add_argument("--out", required=True, help="folder for turns.jsonl, turns.csv and timeline.png")
    p.add_argument("--asr-model", default=None, help="a CTranslate2 Whisper folder (or size name) for turns without a transcript")
    p.add_argument("--language", default="en", help="the speech language for --asr-model ('auto': detect per turn)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the models run")
    p.add_argument("--silence-db", type=float, default=-60.0, help="a turn whose RMS level is below this (dBFS) is silent and left out")
    p.add_argument("--stream", action="store_true", help="read turns as they arrive and predict each new one from the conversation so far")
    p.add_argument("--conversation", default="stdin", help="--stream from stdin: the conversation name of lines that give none")
    p.add_argument("--poll-seconds", type=float, default=0.5, help="--stream on a folder: how often to look for new files")
    p.add_argument("--idle-timeout", type=float, default=None, help="--stream on a folder: stop after this many seconds without a new file")
    p.add_argument("--window-seconds", type=float, default=120.0, help="long recordings: audio held at once for voice activity detection")
    p.add_argument("--min-silence-ms", type=int, default=500, help="long recordings: the pause that ends a turn")
    p.add_argument("--max-turn-seconds", type=float, default=30.0, help="long recordings: longer speech is split")
    p.add_argument("--no-plot", action="store_true", help="do not write timeline.png")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as e:
        print(f"meritsl analyze: error: {e}", file=sys.stderr)
        return 2


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    source = Path(args.input)
    if args.stream:
        if args.input != "-" and not source.is_dir():
            raise InputError(f"--stream reads JSON lines from stdin ('-') or watches a folder; {args.input} is neither")
        conversations: Iterable[Iterable[TurnInput]] = []
    else:
        conversations = plan_inputs(source, args)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    chain = Chain(bundle, device)
    describe(bundle, chain)
    asr = Transcriber(args.asr_model, args.device, None if args.language == "auto" else args.language) if args.asr_model else None
    analyzer = Analyzer(chain, asr, args.silence_db)
    if asr is not None:
        asr.load()  # a bad --asr-model fails here, before any turn
    loaded = time.perf_counter() - t0
    writer = ResultWriter(args.out, chain.label_names, chain.modalities, chain.task == "regression")
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        if args.stream:
            turns = json_line_turns(sys.stdin, args.conversation) if args.input == "-" else watch_folder(source, args.poll_seconds, args.idle_timeout)
            stream(analyzer, turns, writer)
        else:
            for turns in conversations:
                offline(analyzer, turns, writer)
    except KeyboardInterrupt:
        say("interrupted: writing what was analysed so far")
    finally:
        writer.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    records = writer.records
    if records and not args.no_plot:
        shown = plot_timeline(records, chain.label_names, Path(args.out) / "timeline.png")
        if shown < len({r["conversation"] for r in records}):
            say(f"timeline.png shows the first {shown} conversations; turns.csv has them all")
    done = sum(r["label"] is not None for r in records)
    t = analyzer.timing
    say(
        f"{done} of {len(records)} turns analysed ({len(records) - done} left out) in {wall:.2f} s: "
        f"{done / wall if wall else 0:.1f} turns/s, {cpu:.2f} CPU-s (audio decoding {t.audio:.2f} s, ASR {t.asr:.2f} s, Stage I "
        f"{t.stage1:.2f} s, Stage II/III {t.context:.2f} s; models loaded in {loaded:.1f} s on {device}) -> {args.out}"
    )
    return 0 if done or args.stream else 1


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    return torch.device(device)


def describe(bundle: Bundle, chain: Chain) -> None:
    say(f"bundle {bundle.root}: {bundle.meta['top']}, labels {', '.join(chain.label_names)}")
    if "audio" not in chain.modalities:
        say(
            "note: this bundle has no speech branch (a Stage II text model): predictions come from the transcripts "
            "alone; audio is used only to transcribe turns that have no transcript"
        )
    elif "text" not in chain.modalities:
        say("note: this bundle has no text branch (a Stage II speech model): predictions come from the audio alone")


def plan_inputs(source: Path, args: argparse.Namespace) -> list[Iterable[TurnInput]]:
    """The conversations of INPUT (turn lists, or a lazy turn stream for a long recording)."""
    if source.is_dir():
        turns, warnings = folder_turns(source)
        for w in warnings:
            say(f"{source}: {w}")
        conversations: list[Iterable[TurnInput]] = [turns]
    elif source.is_file() and source.suffix.lower() in AUDIO_EXTENSIONS:
        segmenter = RecordingSegmenter(args.window_seconds, args.min_silence_ms, max_turn_seconds=args.max_turn_seconds)
        conversations = [recording_turns(source, segmenter)]
    elif source.is_file():
        conversations = list(manifest_turns(source))
    else:
        raise InputError(f"{source}: no such folder, audio file or manifest")
    return conversations


def recording_turns(path: Path, segmenter: RecordingSegmenter) -> Iterator[TurnInput]:
    count = 0
    for count, segment in enumerate(segmenter.segments(path), 1):
        yield TurnInput(path.stem, f"{path.stem}_{count:04d}", str(path.resolve()), None, segment.start, segment.end, segment.wave)
    if count == 0:
        raise InputError(f"{path}: the voice activity detector found no speech: nothing to analyse")


def _check_transcripts(analyzer: Analyzer, turns: list[TurnInput]) -> None:
    if analyzer.asr is not None or not analyzer.uses_text:
        return
    missing = [t.turn_id for t in turns if t.text is None and t.note is None]
    if missing:
        raise InputError(
            f"{len(missing)} turn(s) have no transcript (e.g. {turns[0].conversation}/{missing[0]}); pass --asr-model DIR "
            "(a CTranslate2 Whisper folder) to transcribe them, or add transcripts.jsonl / <name>.txt files"
        )


def offline(analyzer: Analyzer, turns: Iterable[TurnInput], writer: ResultWriter) -> None:
    """One whole conversation: every turn encoded once, then Stage II/III over all usable turns."""
    if isinstance(turns, list):
        _check_transcripts(analyzer, turns)
    elif analyzer.uses_text and analyzer.asr is None:
        raise InputError("a long recording has no transcripts: pass --asr-model DIR (a CTranslate2 Whisper folder)")
    conversation: Conversation | None = None
    for turn in turns:
        if conversation is None:
            conversation = Conversation(analyzer, turn.conversation)
        result = conversation.add(turn)
        if result.error:
            say(f"{turn.conversation}/{turn.turn_id}: left out of the context: {result.error}")
    if conversation is None:
        return
    results = conversation.predict_all()
    print(f"\n{table_header(analyzer.chain.modalities)}")
    for result in results:
        print(table_line(writer.write(result), analyzer.chain.modalities), flush=True)


def stream(analyzer: Analyzer, turns: Iterable[TurnInput], writer: ResultWriter) -> None:
    """Each arriving turn: encode it, predict it from its conversation so far, print its JSON line."""
    import json

    conversations: dict[str, Conversation] = {}
    for turn in turns:
        conversation = conversations.setdefault(turn.conversation, Conversation(analyzer, turn.conversation))
        conversation.add(turn)
        result = conversation.predict_latest()
        record = writer.write(result)
        if result.error:
            say(f"{turn.conversation}/{turn.turn_id}: left out of the context: {result.error}")
        print(json.dumps(record, ensure_ascii=False), flush=True)
