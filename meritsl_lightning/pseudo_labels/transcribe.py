"""``meritsl transcribe``: speech -> ``transcripts.jsonl`` with faster-whisper; resumable and shardable.

Input is a manifest (``meritsl prepare``; rows with ``audio_path``), a folder of audio files (searched
recursively; id = path relative to the folder without extension) or one audio file. Output is one
JSON line per utterance with the fields of ``ROW_FIELDS``; ``error`` is null, or the reason a file
could not be transcribed (its ``text`` is then null). A missing or corrupt file never stops the run.

Crash safety and scale-out follow :mod:`meritsl_lightning.pseudo_labels.shards`: rows are appended
and fsynced after every batch, a rerun skips the ids already in the output (``--retry-errors`` redoes
the failed ones), and ranks from ``--shard i/n`` or the launcher's environment write their own shard
files, merged by ``--merge`` (or automatically by a later single-process run).

Decoding: ``--batch-size 1`` runs ``WhisperModel.transcribe`` per clip (long-form decoding with
temperature fallback). ``--batch-size N`` packs the <= 30 s pieces of N clips (VAD speech chunks with
``--vad``, else 30 s windows) into one ``BatchedInferencePipeline`` call with explicit clip timestamps,
which avoids its "No clip timestamps" error for audio over 30 s; that mode decodes at one temperature
and does not condition on earlier text.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

import numpy as np

from data_modules.audio import AudioError, audio_duration, load_audio
from data_modules.manifest import read_manifest
from meritsl_lightning.errors import InvalidInput
from meritsl_lightning.pseudo_labels.inputs import read_rows
from meritsl_lightning.pseudo_labels.shards import (
    append_rows,
    assign,
    find_shards,
    locked,
    merge_shards,
    read_results,
    resolve_rows,
    resolve_shard,
    shard_path,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".mp4", ".m4a")
DEFAULT_MODEL = "large-v3"  # the paper's ASR
DEFAULT_LANGUAGE = "en"  # MSP-Podcast is English; per-clip language detection misfires on short clips
ROW_FIELDS = (
    "id",
    "audio_path",
    "text",
    "language",
    "language_probability",
    "duration",  # seconds of audio transcribed
    "truncated",  # True when --max-seconds cut the clip
    "avg_logprob",  # mean over segments; a confidence signal for filtering silver labels
    "no_speech_prob",
    "model",
    "error",
)
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
PIECE_ALIGN = SAMPLE_RATE // 10  # batched mode lays clips out on 0.1 s boundaries (see _layout)


class TranscribeError(InvalidInput):
    """A bad input, model or option; the message names the file or item."""


@dataclass(frozen=True)
class AudioItem:
    """One utterance to transcribe: its id and audio reference (file, optional span in seconds)."""

    id: str
    path: str | None
    start: float | None = None
    end: float | None = None


@dataclass
class TranscribeOptions:
    """Model and decoding settings (the CLI flags of the same names)."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    compute_type: str | None = None  # None: int8 on CPU, float16 on CUDA
    batch_size: int = 1  # > 1: BatchedInferencePipeline over the clips of several utterances
    vad: bool = False
    language: str | None = DEFAULT_LANGUAGE  # None: detect per utterance
    beam_size: int = 5
    temperature: float | None = None  # None: faster-whisper's fallback schedule (plain mode)
    max_seconds: float | None = None
    cpu_threads: int = 0  # 0: ctranslate2's default


# ---------------------------------------------------------------- inputs


def collect_items(input_path: str | os.PathLike) -> list[AudioItem]:
    """The utterances of a manifest, an audio folder or one audio file, sorted by id (ids must be unique)."""
    path = Path(input_path)
    if path.is_dir():
        items = _folder_items(path)
    elif path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
        items = [AudioItem(path.stem, str(path.resolve()))]
    elif path.is_file():
        items = _file_items(path)
        seen: set[str] = set()
        for item in items:
            if item.id in seen:
                raise TranscribeError(f"{path}: utterance id {item.id!r} appears more than once")
            seen.add(item.id)
    else:
        raise TranscribeError(f"--input {path}: no such manifest file or audio folder")
    return sorted(items, key=lambda item: item.id)


def _file_items(path: Path) -> list[AudioItem]:
    """The utterances of a `meritsl prepare` manifest (rows keyed ``utt_id``) or of earlier `meritsl transcribe`
    output (rows keyed ``id``, e.g. to transcribe again with another model); relative audio paths are resolved
    against the file's folder."""
    source = read_rows(path)
    if not source.rows:
        raise TranscribeError(source.why_no_rows())
    if source.malformed:
        line, problem = source.malformed[0]
        raise TranscribeError(f"{path}:{line}: {problem} ({len(source.malformed)} such lines)")
    if all("utt_id" in r.row and "id" not in r.row for r in source.rows):
        # a manifest row's audio_path is the utterance's own file; start/end are its times in the conversation
        # (IEMOCAP turns at 9.4-12.7 s of their dialogue live in their own wav starting at 0), not offsets
        return [AudioItem(u.utt_id, u.audio_path) for u in read_manifest(path)]
    items = []
    for r in source.rows:
        audio = r.row.get("audio_path")
        if audio is not None and not isinstance(audio, str):
            raise TranscribeError(f"{path}:{r.line}: audio_path is a {type(audio).__name__}, expected a string")
        if audio and not os.path.isabs(audio):
            audio = str((path.parent / audio).resolve())
        items.append(AudioItem(r.id, audio or None))
    return items


def _folder_items(folder: Path) -> list[AudioItem]:
    by_id: dict[str, AudioItem] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.suffix.lower() not in AUDIO_EXTENSIONS or any(p.startswith(".") for p in relative.parts):
            continue
        item_id = relative.with_suffix("").as_posix()
        if item_id in by_id:
            raise TranscribeError(f"{folder}: {by_id[item_id].path} and {path} would both get the id {item_id!r}")
        by_id[item_id] = AudioItem(item_id, str(path.resolve()))
    if not by_id:
        raise TranscribeError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    return list(by_id.values())


def decode(item: AudioItem, max_seconds: float | None = None) -> tuple[np.ndarray | None, dict[str, Any]]:
    """``(16 kHz mono float32 audio, row fields)``, or ``(None, {"error": reason})`` for a bad file."""
    if not item.path:
        return None, {"error": f"{item.id}: the manifest row has no audio_path"}
    end, truncated = item.end, False
    if max_seconds is not None:
        first = item.start or 0.0
        if end is None or end - first > max_seconds:
            truncated = audio_duration(item.path, item.start, item.end) > max_seconds + 1e-3
            end = first + max_seconds
    try:
        audio = load_audio(item.path, item.start, end, sample_rate=SAMPLE_RATE).numpy()
    except (AudioError, OSError) as e:
        return None, {"error": str(e)}
    if not np.isfinite(audio).all():
        return None, {"error": f"{item.path}: audio has non-finite samples"}
    return audio, {"duration": round(len(audio) / SAMPLE_RATE, 3), "truncated": truncated}


def _prefetch(items: Sequence[AudioItem], max_seconds: float | None, lookahead: int) -> Iterator[tuple[AudioItem, Any]]:
    """Decode ahead in threads (decoding releases the GIL) while the model works; yields in order."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:
        pending: deque[tuple[AudioItem, Future]] = deque()
        try:
            for item in items:
                pending.append((item, pool.submit(decode, item, max_seconds)))
                if len(pending) > lookahead:
                    head, future = pending.popleft()
                    yield head, future.result()
            while pending:
                head, future = pending.popleft()
                yield head, future.result()
        finally:
            for _, future in pending:
                future.cancel()


# ---------------------------------------------------------------- model


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when ctranslate2 sees a GPU, else ``cpu``."""
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if device == "cuda" and gpus == 0:
        raise TranscribeError("--device cuda: ctranslate2 sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise TranscribeError(f"--device must be auto, cpu or cuda; got {device!r}")
    return device


def resolve_compute_type(device: str, compute_type: str | None) -> str:
    """The default compute type of ``device`` (int8 on CPU, float16 on CUDA), or ``compute_type`` if supported."""
    if compute_type is None:
        return "float16" if device == "cuda" else "int8"
    import ctranslate2

    supported = sorted(ctranslate2.get_supported_compute_types(device))
    if compute_type not in (*supported, "default", "auto"):
        raise TranscribeError(
            f"--compute-type {compute_type} is not supported on {device} (supported here: {', '.join(supported)})"
        )
    return compute_type


def model_identity(model: str) -> str:
    """What the ``model`` field records: the absolute folder for a local model, else the name/id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def load_whisper(options: TranscribeOptions) -> Any:
    """A ``faster_whisper.WhisperModel`` from a local CTranslate2 folder, a size name or a Hub id."""
    from faster_whisper import WhisperModel

    device = resolve_device(options.device)
    compute_type = resolve_compute_type(device, options.compute_type)
    folder = Path(options.model).expanduser()
    if folder.is_dir():
        missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
        if missing:  # without tokenizer.json faster-whisper silently tries to download one
            raise TranscribeError(f"--model {folder}: not a CTranslate2 Whisper folder (missing {', '.join(missing)})")
    elif options.model.startswith(("/", ".", "~")):
        raise TranscribeError(f"--model {options.model}: no such model folder")
    source = str(folder) if folder.is_dir() else options.model
    try:
        return WhisperModel(
            source,
            device=device,
            device_index=_local_rank() % max(1, _gpu_count()) if device == "cuda" else 0,
            compute_type=compute_type,
            cpu_threads=options.cpu_threads,
        )
    except OSError as e:
        if folder.is_dir():
            raise
        raise TranscribeError(
            f"--model {options.model}: not a local folder and not downloadable here ({e}); "
            "pass a CTranslate2 Whisper folder"
        ) from e


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))


def _gpu_count() -> int:
    import ctranslate2

    return ctranslate2.get_cuda_device_count()


class WhisperTranscriber:
    """Transcribes a batch of decoded clips with one loaded model; returns the text fields of each row."""

    def __init__(self, model: Any, options: TranscribeOptions) -> None:
        self.model = model
        self.options = options
        self.multilingual = bool(model.model.is_multilingual)
        language = options.language
        if language is not None and language not in model.supported_languages:
            kind = "multilingual" if self.multilingual else "English-only"
            raise TranscribeError(f"--language {language}: the {kind} model {options.model} does not support it")
        self.pipeline = None
        if options.batch_size > 1:
            from faster_whisper import BatchedInferencePipeline

            self.pipeline = BatchedInferencePipeline(model)

    def __call__(self, audios: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """One dict of text fields per clip, in order."""
        if self.pipeline is None:
            return [self._plain(audio) for audio in audios]
        return self._batched(audios)

    def _decoding_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"beam_size": self.options.beam_size}
        if self.options.temperature is not None:
            kwargs["temperature"] = self.options.temperature
        return kwargs

    def _plain(self, audio: np.ndarray) -> dict[str, Any]:
        segments, info = self.model.transcribe(
            audio, language=self.options.language, vad_filter=self.options.vad, **self._decoding_kwargs()
        )
        return _text_fields(list(segments), info.language, info.language_probability)

    def _batched(self, audios: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        pieces = [self._pieces(audio) for audio in audios]
        languages = [self._language(clip_pieces) for clip_pieces in pieces]
        fields: list[dict[str, Any]] = [{} for _ in audios]
        for language in sorted({code for code, _ in languages}, key=str):
            members = [i for i, (code, _) in enumerate(languages) if code == language]
            segments = self._batched_group([pieces[i] for i in members], language)
            for i, clip_segments in zip(members, segments, strict=True):
                fields[i] = _text_fields(clip_segments, language, languages[i][1])
        return fields

    def _language(self, pieces: Sequence[np.ndarray]) -> tuple[str | None, float | None]:
        """The clip's language: the fixed one, or Whisper's guess from its (speech) pieces."""
        if self.options.language is not None or not self.multilingual:
            return self.options.language or "en", 1.0
        if not pieces:  # VAD found no speech: nothing to decide from, and no text to decode
            return None, None
        code, probability, _ = self.model.detect_language(audio=np.concatenate(pieces))
        return code, probability

    def _batched_group(self, clips: Sequence[Sequence[np.ndarray]], language: str | None) -> list[list[Any]]:
        """Segments of each clip (given as pieces), from one BatchedInferencePipeline call over all pieces."""
        pieces, owners = [], []
        for k, clip_pieces in enumerate(clips):
            pieces.extend(clip_pieces)
            owners.extend([k] * len(clip_pieces))
        per_clip: list[list[Any]] = [[] for _ in clips]
        if not pieces:
            return per_clip
        concatenated, clip_timestamps, start_frames = _layout(pieces)
        segments, _ = self.pipeline.transcribe(
            concatenated,
            language=language,
            clip_timestamps=clip_timestamps,  # explicit clips: no VAD pass, and no error for audio over 30 s
            vad_filter=False,
            without_timestamps=True,
            batch_size=self.options.batch_size,
            **self._decoding_kwargs(),
        )
        for segment in segments:
            # a segment's seek is its clip's start frame (10 ms), truncated; clips start >= 10 frames apart
            piece = bisect.bisect_right(start_frames, segment.seek + 1) - 1
            per_clip[owners[piece]].append(segment)
        return per_clip

    def _pieces(self, audio: np.ndarray) -> list[np.ndarray]:
        """Whisper-sized (<= 30 s) pieces of a clip: VAD speech chunks, or plain 30 s windows."""
        window = self.model.feature_extractor.chunk_length
        if self.options.vad:
            from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

            # the pipeline's own VAD settings
            speech = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=window, min_silence_duration_ms=160))
            chunks, _ = collect_chunks(audio, speech, max_duration=window)
            return [chunk for chunk in chunks if len(chunk)]
        step = window * SAMPLE_RATE
        return [audio[i : i + step] for i in range(0, len(audio), step)]


def _layout(pieces: Sequence[np.ndarray]) -> tuple[np.ndarray, list[dict[str, float]], list[int]]:
    """Concatenate pieces on 0.1 s boundaries: ``(audio, clip_timestamps in s, start frame of each piece)``."""
    starts, position = [], 0
    for piece in pieces:
        starts.append(position)
        position = math.ceil((position + max(len(piece), 1)) / PIECE_ALIGN) * PIECE_ALIGN
    concatenated = np.zeros(position, dtype=np.float32)
    for start, piece in zip(starts, pieces, strict=True):
        concatenated[start : start + len(piece)] = piece
    # +0.5 sample: faster-whisper converts back with int(seconds * rate), which must land on the sample
    clips = [{"start": (s + 0.5) / SAMPLE_RATE, "end": (s + len(p) + 0.5) / SAMPLE_RATE} for s, p in zip(starts, pieces, strict=True)]
    return concatenated, clips, [s * 100 // SAMPLE_RATE for s in starts]


def _text_fields(segments: Sequence[Any], language: str | None, probability: float | None) -> dict[str, Any]:
    def mean(values: list[float]) -> float | None:
        return round(float(np.mean(values)), 4) if values else None

    return {
        "text": "".join(segment.text for segment in segments).strip(),
        "language": language,
        "language_probability": None if probability is None else round(float(probability), 4),
        "avg_logprob": mean([s.avg_logprob for s in segments]),
        "no_speech_prob": mean([s.no_speech_prob for s in segments]),
    }


# ---------------------------------------------------------------- the run


def make_row(item: AudioItem, model_id: str, **fields: Any) -> dict[str, Any]:
    """A complete output row (every field of ``ROW_FIELDS``; unknown values null)."""
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(id=item.id, audio_path=item.path, model=model_id, truncated=False)
    row.update(fields)
    return row


def transcribe(
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    options: TranscribeOptions,
    shard: str | None = None,
    retry_errors: bool = False,
    keep_shards: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Transcribe this rank's share of ``input_path`` into ``out`` (or its shard file); return a summary."""
    out = Path(out)
    items = collect_items(input_path)
    rank, world, source = resolve_shard(shard)
    if world == 1 and find_shards(out):
        counts = merge_shards(out, [item.id for item in items], require_complete=False, keep_shards=keep_shards)
        print(f"merged {counts['shards']} shard files into {out} ({counts['rows']} rows)", file=sys.stderr)
    target = out if world == 1 else shard_path(out, rank, world)
    mine = assign(items, rank, world)
    model_id = model_identity(options.model)
    with locked(target) as handle:
        rows = read_results(target)
        if target != out:  # rows a single-process run already wrote count as done too
            rows = _peek_rows(out) + rows
        _check_same_model(target, rows, model_id)
        done = resolve_rows(rows)
        todo = [item for item in mine if item.id not in done or (retry_errors and done[item.id].get("error"))]
        print(
            f"shard {rank}/{world} ({source}): {len(mine)} utterances, {len(mine) - len(todo)} already done -> {target}",
            file=sys.stderr,
        )
        stats = {"transcribed": 0, "errors": 0, "audio_seconds": 0.0, "wall_seconds": 0.0}
        if todo:
            transcriber = WhisperTranscriber(load_whisper(options), options)
            stats = _run(todo, transcriber, handle, options, model_id, progress, desc=f"transcribe {rank}/{world}")
    wall = stats["wall_seconds"]
    return {
        "out": str(target),
        "rank": rank,
        "world_size": world,
        "utterances": len(mine),
        "skipped": len(mine) - len(todo),
        **stats,
        "realtime_factor": round(stats["audio_seconds"] / wall, 2) if wall else None,
    }


def _run(
    todo: Sequence[AudioItem],
    transcriber: WhisperTranscriber,
    handle: IO[bytes],
    options: TranscribeOptions,
    model_id: str,
    progress: bool,
    desc: str,
) -> dict[str, Any]:
    """Decode, transcribe and append ``todo`` in batches; each batch is on disk before the next starts."""
    from tqdm.auto import tqdm

    stats = {"transcribed": 0, "errors": 0, "audio_seconds": 0.0}
    started = time.monotonic()
    decoded = closing(_prefetch(todo, options.max_seconds, lookahead=2 * options.batch_size))
    bar = tqdm(total=len(todo), desc=desc, unit="utt", disable=not progress, dynamic_ncols=True)
    with decoded as pairs, bar:
        while batch := list(islice(pairs, options.batch_size)):
            good = [i for i, (_, (audio, _)) in enumerate(batch) if audio is not None]
            try:
                texts = dict(zip(good, transcriber([batch[i][1][0] for i in good]), strict=True))
            except Exception as e:
                ids = ", ".join(batch[i][0].id for i in good)
                raise RuntimeError(f"transcription failed for utterance(s) {ids}: {e}") from e
            rows = [make_row(item, model_id, **fields, **texts.get(i, {})) for i, (item, (_, fields)) in enumerate(batch)]
            append_rows(handle, rows)
            stats["errors"] += sum(1 for row in rows if row["error"])
            stats["transcribed"] += len(good)
            stats["audio_seconds"] += sum(row["duration"] or 0.0 for row in rows)
            bar.update(len(batch))
            elapsed = time.monotonic() - started
            bar.set_postfix(rtf=f"{stats['audio_seconds'] / max(elapsed, 1e-9):.1f}x", errors=stats["errors"])
    stats["audio_seconds"] = round(stats["audio_seconds"], 3)
    stats["wall_seconds"] = round(time.monotonic() - started, 3)
    return stats


def _peek_rows(path: Path) -> list[dict[str, Any]]:
    """Complete rows of a file that another process may own: read-only, never repaired."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("id"), str):
            rows.append(row)
    return rows


def _check_same_model(path: Path, rows: Sequence[dict[str, Any]], model_id: str) -> None:
    other = next((row["model"] for row in rows if row.get("model") != model_id), None)
    if other is not None:
        raise TranscribeError(
            f"{path} holds transcripts from model {other!r}, but this run uses {model_id!r}; "
            "pass the same --model to resume, or write to another --out"
        )


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The ``meritsl transcribe`` argument parser."""
    p = argparse.ArgumentParser(
        prog="meritsl transcribe",
        description="Transcribe speech with faster-whisper into a JSON-lines file (resumable, shardable).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--input", help="manifest.jsonl from `meritsl prepare`, earlier `meritsl transcribe` output, a folder of audio files, or one audio file")
    p.add_argument("--out", required=True, help="output JSON lines (shards write OUT.shard-K-of-N)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="local CTranslate2 Whisper folder, size name or Hub id")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if ctranslate2 sees a GPU")
    p.add_argument("--compute-type", default=None, help="ctranslate2 compute type; None: int8 on CPU, float16 on CUDA")
    p.add_argument("--batch-size", type=int, default=1, help="> 1: batched inference over several utterances (GPU)")
    p.add_argument("--vad", action="store_true", help="drop non-speech with Silero VAD before decoding")
    p.add_argument("--language", default=DEFAULT_LANGUAGE, help="language code, or 'auto' to detect per utterance")
    p.add_argument("--beam-size", type=int, default=5, help="beam width")
    p.add_argument("--temperature", type=float, default=None, help="None: faster-whisper's fallback schedule")
    p.add_argument("--max-seconds", type=float, default=None, help="transcribe only the first S seconds of a clip")
    p.add_argument("--cpu-threads", type=int, default=0, help="threads per process on CPU; 0: ctranslate2's default")
    p.add_argument("--shard", default=None, help="I/N: this process is rank I of N (default: RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS, LOCAL_RANK/LOCAL_WORLD_SIZE)")
    p.add_argument("--merge", action="store_true", help="merge OUT's shard files into OUT and exit")
    p.add_argument("--keep-shards", action="store_true", help="keep shard files after merging them")
    p.add_argument("--retry-errors", action="store_true", help="retry utterances whose earlier attempt failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``meritsl transcribe``; exit status 0 on success (per-file errors are recorded, not fatal)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.beam_size < 1 or (args.max_seconds is not None and args.max_seconds <= 0):
        parser.error("--batch-size and --beam-size must be >= 1 and --max-seconds > 0")
    try:
        if args.merge:
            expected = [item.id for item in collect_items(args.input)] if args.input else None
            counts = merge_shards(Path(args.out), expected, keep_shards=args.keep_shards)
            print(f"merged {counts['shards']} shards into {args.out}: {counts['rows']} rows, {counts['errors']} errors")
            return 0
        if not args.input:
            parser.error("--input is required (unless --merge)")
        options = TranscribeOptions(
            model=args.model,
            device=args.device,
            compute_type=args.compute_type,
            batch_size=args.batch_size,
            vad=args.vad,
            language=None if args.language == "auto" else args.language,
            beam_size=args.beam_size,
            temperature=args.temperature,
            max_seconds=args.max_seconds,
            cpu_threads=args.cpu_threads,
        )
        summary = transcribe(
            args.input, args.out, options, args.shard, args.retry_errors, args.keep_shards, not args.no_progress
        )
    except (ValueError, FileNotFoundError) as e:  # our input errors are ValueErrors (e.g. TranscribeError)
        print(f"meritsl transcribe: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as e:
        if "libcublas" not in str(e) and "libcudnn" not in str(e):
            raise
        print(
            f"meritsl transcribe: error: {e}\nctranslate2 4.8 needs the CUDA 12 cuBLAS/cuDNN libraries: "
            "pip install nvidia-cublas-cu12 nvidia-cudnn-cu12==9.* and add their lib folders to LD_LIBRARY_PATH",
            file=sys.stderr,
        )
        return 1
    print(
        f"{summary['transcribed']} transcribed, {summary['errors']} failed (rows with an error), "
        f"{summary['skipped']} already done; "
        f"{summary['audio_seconds']:.1f} s of audio in {summary['wall_seconds']:.1f} s "
        f"(real-time factor {summary['realtime_factor'] or 0:.1f}x) -> {summary['out']}"
    )
    return 0
