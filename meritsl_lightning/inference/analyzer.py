"""Analysing conversations turn by turn: Stage I once per turn, then Stage II/III over the turns so far.

``Conversation.add`` encodes a new turn (decoding its audio, transcribing it when it has no transcript, and
running the frozen Stage I encoders) and keeps only its embeddings; a turn is never encoded again.
``predict_all`` (offline) and ``predict_latest`` (streaming) run the context and fusion models over the kept
embeddings, so the newest turn's prediction while streaming equals the offline prediction for that prefix.
A turn whose audio is missing, corrupt or silent is reported with its problem and left out of the context.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from data_modules.audio import AudioError, audio_duration, load_audio
from meritsl_lightning.inference.chain import Chain, TurnPrediction
from meritsl_lightning.inference.turns import TurnInput

ASR_SAMPLE_RATE = 16000


class TurnProblem(ValueError):
    """Why one turn cannot be analysed (it is reported and left out of the context)."""


@dataclass
class TurnResult:
    """A turn as analysed: where it is, what was said, and its prediction or the problem that excluded it."""

    conversation: str
    turn: int  # position in the conversation as given, from 0
    turn_id: str
    start: float | None
    end: float | None
    audio_path: str | None
    transcript: str | None = None
    transcript_source: str | None = None  # "given" or "asr"
    error: str | None = None
    note: str | None = None
    prediction: TurnPrediction | None = None
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


class Transcriber:
    """faster-whisper on one turn's 16 kHz audio (the model is loaded on first use)."""

    def __init__(self, model: str, device: str = "auto", language: str | None = "en", beam_size: int = 5) -> None:
        from meritsl_lightning.pseudo_labels.transcribe import TranscribeOptions

        self.options = TranscribeOptions(model=model, device=device, language=language, beam_size=beam_size)
        self._transcriber: Any = None

    def load(self) -> None:
        from meritsl_lightning.pseudo_labels.transcribe import WhisperTranscriber, load_whisper

        if self._transcriber is None:
            self._transcriber = WhisperTranscriber(load_whisper(self.options), self.options)

    def __call__(self, wave: torch.Tensor) -> str:
        self.load()
        return self._transcriber([wave.numpy().astype(np.float32, copy=False)])[0]["text"]


def rms_dbfs(wave: torch.Tensor) -> float:
    power = float(wave.double().pow(2).mean()) if wave.numel() else 0.0
    return 10 * math.log10(power) if power > 0 else -math.inf


@dataclass
class Timing:
    """Where the time goes (seconds), for the turns/s report."""

    turns: int = 0
    audio: float = 0.0
    asr: float = 0.0
    stage1: float = 0.0
    context: float = 0.0

    @property
    def total(self) -> float:
        return self.audio + self.asr + self.stage1 + self.context


class Analyzer:
    """Turns -> Stage I embeddings -> per-turn predictions with one loaded chain."""

    def __init__(self, chain: Chain, asr: Transcriber | None = None, silence_db: float = -60.0) -> None:
        self.chain = chain
        self.asr = asr
        self.silence_db = silence_db
        self.uses_text = "text" in chain.modalities
        self.uses_speech = "audio" in chain.modalities
        self.timing = Timing()

    def needs_asr(self, turn: TurnInput) -> bool:
        return self.uses_text and turn.text is None

    def encode(self, turn: TurnInput, position: int) -> TurnResult:
        """Decode, transcribe if needed and embed one turn; a bad turn comes back with ``error`` set."""
        result = TurnResult(turn.conversation, position, turn.turn_id, turn.start, turn.end, turn.audio_path, note=turn.note)
        try:
            wave = None
            if self.uses_speech or self.needs_asr(turn):
                wave = self._audio(turn)
                if result.start is None or result.end is None:
                    result.end = len(wave) / ASR_SAMPLE_RATE  # a duration; the conversation places it in time
            elif turn.audio_path and (result.start is None or result.end is None):
                result.end = audio_duration(turn.audio_path) or None
            if turn.text is not None:
                result.transcript, result.transcript_source = turn.text, "given"
            if self.uses_text:
                result.transcript, result.transcript_source = self._text(turn, wave)
                t0 = time.perf_counter()
                result.embeddings["text"] = self.chain.embed_text(result.transcript)
                self.timing.stage1 += time.perf_counter() - t0
            if self.uses_speech:
                assert wave is not None
                t0 = time.perf_counter()
                if self.chain.speech_sample_rate != ASR_SAMPLE_RATE:
                    wave = self._audio(turn, self.chain.speech_sample_rate)
                result.embeddings["audio"] = self.chain.embed_speech(wave)
                self.timing.stage1 += time.perf_counter() - t0
        except TurnProblem as e:
            result.error = str(e)
            result.embeddings.clear()
        self.timing.turns += 1
        return result

    def _audio(self, turn: TurnInput, rate: int = ASR_SAMPLE_RATE) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            if turn.wave is not None:
                wave = turn.wave if rate == ASR_SAMPLE_RATE else _resample(turn.wave, rate)
            elif turn.audio_path is None:
                raise TurnProblem(turn.note or "the turn has no audio file")
            else:
                try:
                    wave = load_audio(turn.audio_path, sample_rate=rate)
                except AudioError as e:
                    raise TurnProblem(str(e)) from e
            if not torch.isfinite(wave).all():
                raise TurnProblem(f"{turn.audio_path or turn.turn_id}: audio has non-finite samples")
            level = rms_dbfs(wave)
            if level < self.silence_db:
                where = turn.audio_path or f"{turn.start:.2f}-{turn.end:.2f} s"
                raise TurnProblem(f"{where}: silent audio (RMS {level:.1f} dBFS, below --silence-db {self.silence_db:g})")
            return wave
        finally:
            self.timing.audio += time.perf_counter() - t0

    def _text(self, turn: TurnInput, wave: torch.Tensor | None) -> tuple[str, str]:
        if turn.text is not None:
            return turn.text, "given"
        if self.asr is None:
            raise TurnProblem("no transcript, and no --asr-model to transcribe it")
        assert wave is not None
        t0 = time.perf_counter()
        text = self.asr(wave).strip()
        self.timing.asr += time.perf_counter() - t0
        if not text:
            raise TurnProblem("the speech recogniser found no words (empty transcript)")
        return text, "asr"

    def predict(self, results: list[TurnResult]) -> list[TurnPrediction]:
        """Stage II/III over the usable turns of ``results`` (in order); one prediction per usable turn."""
        usable = [r for r in results if r.error is None]
        t0 = time.perf_counter()
        predictions = self.chain.predict({m: [r.embeddings[m] for r in usable] for m in self.chain.modalities})
        self.timing.context += time.perf_counter() - t0
        return predictions


def _resample(wave: torch.Tensor, rate: int) -> torch.Tensor:
    import torchaudio.functional as AF

    return AF.resample(wave, ASR_SAMPLE_RATE, rate)


class Conversation:
    """The turns of one conversation so far, each encoded once."""

    def __init__(self, analyzer: Analyzer, name: str) -> None:
        self.analyzer = analyzer
        self.name = name
        self.results: list[TurnResult] = []
        self.clock = 0.0  # where the next turn without a time span starts (back to back after the last)

    def add(self, turn: TurnInput) -> TurnResult:
        result = self.analyzer.encode(turn, len(self.results))
        if turn.start is None and result.end is not None:
            # a folder of turn files has no times: lay the turns end to end by their durations
            result.start, result.end = self.clock, self.clock + result.end
        if result.end is not None:
            self.clock = max(self.clock, result.end)
        self.results.append(result)
        return result

    def predict_all(self) -> list[TurnResult]:
        """Offline: every usable turn sees the whole conversation."""
        usable = [r for r in self.results if r.error is None]
        for r, p in zip(usable, self.analyzer.predict(self.results), strict=True):
            r.prediction = p
        return self.results

    def predict_latest(self) -> TurnResult:
        """Streaming: the newest turn's prediction from the conversation so far (earlier ones keep theirs)."""
        latest = self.results[-1]
        if latest.error is None:
            latest.prediction = self.analyzer.predict(self.results)[-1]
        return latest
