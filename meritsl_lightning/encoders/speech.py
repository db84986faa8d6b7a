"""Frozen speech encoders behind one interface, and batched feature extraction over a corpus.

Every encoder maps a list of 16 kHz mono waveforms to time-pooled per-utterance features
``[B, L, D]`` (L pooled layers of width D). Encoders are frozen: always in eval mode, no gradients.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF
from torch import nn
from tqdm.auto import tqdm

from data_modules.audio import (
    DEFAULT_SAMPLE_RATE,
    AudioError,
    audio_duration,
    crop_center,
    load_audio,
    pad_waves,
)

# Files whose bytes define a local Hugging Face model's behaviour (hashed into its identity).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SETTINGS_FILES = ("config.json", "preprocessor_config.json", "model.safetensors.index.json")


class SpeechEncoder(nn.Module, ABC):
    """A frozen utterance-level speech encoder: waveforms -> ``[B, num_layers, feature_dim]``."""

    sample_rate: int = DEFAULT_SAMPLE_RATE
    num_layers: int
    feature_dim: int
    max_seconds: float | None = None  # longer inputs are centre-cropped (see encoders.audio)
    # > 0: the first ``pooled_dim`` values of the last layer are the encoder's own utterance vector, which the
    # Stage I head takes as a direct input beside the layer-weighted sum (CARE's pooled semantic vector)
    pooled_dim: int = 0

    @abstractmethod
    def identity(self) -> str:
        """A stable string identifying weights and settings (used in cache keys)."""

    @abstractmethod
    def forward(self, waveforms: list[torch.Tensor], pad_to_multiple_of: int = 1) -> torch.Tensor:
        """Time-pooled features ``[B, L, D]`` of 1-D waveforms at ``sample_rate``.

        ``pad_to_multiple_of`` (samples) rounds the padded batch length up so that shapes repeat;
        it never changes an utterance's features beyond numerical noise.
        """

    def train(self, mode: bool = True) -> SpeechEncoder:
        # Frozen: a parent module's .train() must not switch on dropout in here.
        return super().train(False)


class FilterbankEncoder(SpeechEncoder):
    """Weight-free encoder: per-band mean and std over time of Kaldi log-mel filterbanks (and their deltas).

    Absolute levels are kept (no mean or variance normalisation): loudness is an emotion cue.
    """

    def __init__(
        self,
        n_mels: int = 40,
        deltas: bool = True,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        max_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.deltas = deltas
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.num_layers = 1
        self.feature_dim = 2 * n_mels * (2 if deltas else 1)
        self._min_samples = int(math.ceil(frame_length_ms * sample_rate / 1000))
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def identity(self) -> str:
        return (
            f"filterbank-v1:n_mels={self.n_mels}:deltas={int(self.deltas)}:frame={self.frame_length_ms}/"
            f"{self.frame_shift_ms}ms:sr={self.sample_rate}:max_seconds={self.max_seconds}"
        )

    def forward(self, waveforms: list[torch.Tensor], pad_to_multiple_of: int = 1) -> torch.Tensor:
        with torch.inference_mode():
            pooled = torch.stack([self._utterance(w) for w in waveforms])
        return pooled.unsqueeze(1).clone()

    def _utterance(self, wave: torch.Tensor) -> torch.Tensor:
        wave = wave.detach().to(self._device_probe.device, torch.float32).flatten()
        if self.max_seconds is not None:
            wave = crop_center(wave, int(round(self.max_seconds * self.sample_rate)))
        if wave.numel() < self._min_samples:
            wave = nn.functional.pad(wave, (0, self._min_samples - wave.numel()))
        # Kaldi conventions expect 16-bit sample values; the log energies then sit in Kaldi's usual range.
        feats = kaldi.fbank(
            wave.unsqueeze(0) * 32768.0,
            num_mel_bins=self.n_mels,
            frame_length=self.frame_length_ms,
            frame_shift=self.frame_shift_ms,
            sample_frequency=self.sample_rate,
            dither=0.0,
        )  # [T, n_mels]
        stats = [feats.mean(0), feats.std(0, unbiased=False)]
        if self.deltas:
            delta = AF.compute_deltas(feats.T).T
            stats += [delta.mean(0), delta.std(0, unbiased=False)]
        return torch.cat(stats)


class HFSpeechEncoder(SpeechEncoder):
    """A Hugging Face self-supervised speech model (WavLM, HuBERT, wav2vec 2.0) from a hub id or local folder.

    Every hidden state (the embedding output and each transformer layer) is mean-pooled over the
    utterance's valid frames; padding never enters the pooled vector.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        layers: str | Sequence[int] = "all",
        max_seconds: float | None = 30.0,
        revision: str | None = None,
        use_attention_mask: bool | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel  # deferred: importing transformers costs seconds

        self.source = str(model_name_or_path)
        self.revision = revision
        try:
            self.model = AutoModel.from_pretrained(self.source, revision=revision)
        except (OSError, ValueError) as e:
            raise OSError(
                f"cannot load speech encoder {self.source!r} (expected a local model folder or a Hugging Face id): {e}"
            ) from e
        if not hasattr(self.model, "_get_feat_extract_output_lengths"):
            raise ValueError(
                f"{self.source!r} is a {type(self.model).__name__}, not a raw-waveform speech encoder "
                "(expected WavLM, HuBERT, wav2vec 2.0 or similar)"
            )
        self.model.eval().requires_grad_(False)
        self.feature_extractor = _load_feature_extractor(self.source, revision)
        config = self.model.config
        self.sample_rate = int(getattr(self.feature_extractor, "sampling_rate", DEFAULT_SAMPLE_RATE))
        self.max_seconds = max_seconds
        self.layers = _select_layers(layers, config.num_hidden_layers + 1, self.source)
        self.num_layers = len(self.layers)
        self.feature_dim = int(config.hidden_size)
        # Follow the model's own convention: group-norm models (e.g. wav2vec2-base) were trained unmasked.
        if use_attention_mask is None:
            use_attention_mask = bool(getattr(self.feature_extractor, "return_attention_mask", True))
        self.use_attention_mask = use_attention_mask
        self._min_samples = _receptive_field(config.conv_kernel, config.conv_stride)
        self._identity: str | None = None

    def identity(self) -> str:
        if self._identity is None:
            if Path(self.source).is_dir():
                weights = "sha256=" + _hash_model_folder(Path(self.source))
            else:
                commit = getattr(self.model.config, "_commit_hash", None) or self.revision or "unpinned"
                weights = f"{self.source}@{commit}"
            self._identity = (
                f"hf-meanpool-v1:{weights}:layers={','.join(map(str, self.layers))}:"
                f"max_seconds={self.max_seconds}:mask={int(self.use_attention_mask)}:sr={self.sample_rate}"
            )
        return self._identity

    def forward(self, waveforms: list[torch.Tensor], pad_to_multiple_of: int = 1) -> torch.Tensor:
        arrays = [self._prepare(w) for w in waveforms]
        values, mask = self._pad(arrays, pad_to_multiple_of)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            pooled = self._pooled_states(values.to(device), mask.to(device))
        return pooled.clone()

    def _prepare(self, wave: torch.Tensor) -> np.ndarray:
        wave = wave.detach().to("cpu", torch.float32).flatten()
        if self.max_seconds is not None:
            wave = crop_center(wave, int(round(self.max_seconds * self.sample_rate)))
        if wave.numel() < self._min_samples:  # shorter than one output frame: pad so the utterance has one
            wave = nn.functional.pad(wave, (0, self._min_samples - wave.numel()))
        return wave.numpy()

    def _pad(self, arrays: list[np.ndarray], multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-pad to one length (a multiple of ``multiple``); apply the model's input normalisation."""
        if self.feature_extractor is not None:
            inputs = self.feature_extractor(
                arrays,
                sampling_rate=self.sample_rate,
                padding=True,
                pad_to_multiple_of=multiple if multiple > 1 else None,
                return_attention_mask=True,
                return_tensors="pt",
            )
            return inputs["input_values"], inputs["attention_mask"]
        values, lengths = pad_waves([torch.from_numpy(a) for a in arrays], multiple)
        mask = (torch.arange(values.shape[1])[None, :] < lengths[:, None]).long()
        return values, mask

    def _pooled_states(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = self.model._get_feat_extract_output_lengths(mask.sum(-1)).clamp(min=1)
        with warnings.catch_warnings():
            # WavLM passes a bool padding mask beside a float position bias; torch flags that, harmlessly.
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            out = self.model(
                values,
                attention_mask=mask if self.use_attention_mask else None,
                output_hidden_states=True,
            )
        states = out.hidden_states
        valid = torch.arange(states[0].shape[1], device=values.device)[None, :] < frames[:, None]
        weights = (valid.float() / frames[:, None].float()).unsqueeze(-1)  # [B, T, 1]
        # Pool layer by layer: stacking all hidden states first would hold L full sequences at once.
        return torch.stack([(states[i].float() * weights).sum(1) for i in self.layers], dim=1)


# A prefixed spec "<kind>:<argument>" picks an encoder family; families in other modules register
# themselves on import ("care": a pre-trained CARE checkpoint, encoders/care_speech.py).
SPEECH_ENCODERS: dict[str, Callable[..., SpeechEncoder]] = {"hf": HFSpeechEncoder}
_FAMILY_MODULES = {"care": "meritsl_lightning.encoders.care_speech"}


def build_speech_encoder(spec: str, **options: Any) -> SpeechEncoder:
    """``"filterbank"`` -> FilterbankEncoder; ``"<kind>:<arg>"`` -> a registered family (``hf:<id>``,
    ``care:<checkpoint>``); else a Hugging Face id or folder."""
    if spec == "filterbank":
        return FilterbankEncoder(**options)
    kind, sep, argument = spec.partition(":")
    if sep and kind in _FAMILY_MODULES and kind not in SPEECH_ENCODERS:
        importlib.import_module(_FAMILY_MODULES[kind])
    if sep and kind in SPEECH_ENCODERS:
        return SPEECH_ENCODERS[kind](argument, **options)
    return HFSpeechEncoder(spec, **options)


def extract_features(
    encoder: SpeechEncoder,
    items: Sequence[Any],
    device: str | torch.device = "cpu",
    max_batch_seconds: float = 64.0,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    length_step_seconds: float = 0.5,
    num_workers: int = 2,
) -> torch.Tensor:
    """Encode every item (``(audio_path, start, end)`` or an object with those attributes) -> ``[N, L, D]``.

    Items are length-sorted and batched by padded seconds (lengths rounded up to
    ``length_step_seconds`` so that batch shapes repeat); audio for the next batch is loaded in
    ``num_workers`` threads while the current one runs. Rows come back in the items' order, on CPU,
    in float32. Under CUDA, the forward runs in bf16 autocast unless ``dtype`` says otherwise.
    """
    device = torch.device(device)
    refs = [_AudioRef.of(item, i) for i, item in enumerate(items)]
    out = torch.zeros(len(refs), encoder.num_layers, encoder.feature_dim)
    if not refs:
        return out
    encoder.to(device)
    cap = encoder.max_seconds if encoder.max_seconds is not None else math.inf
    durations = [min(audio_duration(r.path, r.start, r.end), cap) if r.path else 0.0 for r in refs]
    step = max(length_step_seconds, 0.0)
    batches = _plan_batches(durations, max_batch_seconds, step)
    step_samples = max(int(round(step * encoder.sample_rate)), 1)

    pool = ThreadPoolExecutor(max_workers=max(num_workers, 1))
    try:
        with tqdm(total=len(refs), disable=not progress, unit="utt", desc="speech features") as bar:
            for batch, waves in _prefetch(pool, batches, refs, encoder):
                with torch.inference_mode(), _autocast(device, dtype):
                    feats = encoder(waves, pad_to_multiple_of=step_samples)
                out[batch] = feats.float().cpu()
                bar.update(len(batch))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


class _AudioRef:
    """Where one item's audio lives, and a name for error messages."""

    def __init__(
        self, path: str | os.PathLike | None, start: float | None, end: float | None, name: str
    ) -> None:
        self.path, self.start, self.end, self.name = path, start, end, name

    @classmethod
    def of(cls, item: Any, index: int) -> _AudioRef:
        if isinstance(item, (tuple, list)):
            if len(item) != 3:
                raise ValueError(f"item #{index}: expected (audio_path, start, end), got {item!r}")
            path, start, end = item
            return cls(path, start, end, f"#{index} ({path})")
        name = getattr(item, "utt_id", None) or f"#{index}"
        return cls(
            getattr(item, "audio_path", None), getattr(item, "start", None), getattr(item, "end", None), name
        )

    def load(self, sample_rate: int, max_seconds: float | None) -> torch.Tensor:
        if not self.path:
            raise AudioError(f"item {self.name}: no audio path")
        try:
            return load_audio(
                self.path, self.start, self.end, sample_rate=sample_rate, max_seconds=max_seconds
            )
        except AudioError as e:
            raise AudioError(f"item {self.name}: {e}") from e


def _plan_batches(durations: Sequence[float], max_batch_seconds: float, step: float) -> list[list[int]]:
    """Length-sorted batches whose padded size (count x rounded longest) stays within the budget."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        padded = math.ceil(durations[i] / step) * step if step > 0 else durations[i]
        if current and (len(current) + 1) * padded > max_batch_seconds:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _prefetch(
    pool: ThreadPoolExecutor, batches: list[list[int]], refs: list[_AudioRef], encoder: SpeechEncoder
) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """Yield each batch with its loaded audio, loading the following batch in the background."""

    def submit(batch: list[int]) -> list[Future[torch.Tensor]]:
        return [pool.submit(refs[i].load, encoder.sample_rate, encoder.max_seconds) for i in batch]

    pending = submit(batches[0])
    for k, batch in enumerate(batches):
        waves = [f.result() for f in pending]
        if k + 1 < len(batches):
            pending = submit(batches[k + 1])
        yield batch, waves


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None and device.type == "cuda":
        dtype = torch.bfloat16
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _select_layers(layers: str | Sequence[int], available: int, source: str) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all' or a list of hidden-state indices, got {layers!r}")
        return list(range(available))
    chosen = [int(i) for i in layers]
    bad = [i for i in chosen if not -available <= i < available]
    if bad or not chosen:
        raise ValueError(
            f"{source!r} has hidden states 0..{available - 1}; cannot select layers {list(layers)}"
        )
    return [i % available for i in chosen]


def _receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Input samples needed for one output frame of a conv stack."""
    field = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        field = (field - 1) * stride + kernel
    return field


def _load_feature_extractor(source: str, revision: str | None) -> Any | None:
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(source, revision=revision)
    except (OSError, ValueError):
        return None  # no preprocessor_config.json: plain zero padding, no input normalisation


def _hash_model_folder(folder: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in _SETTINGS_FILES)
    )
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
