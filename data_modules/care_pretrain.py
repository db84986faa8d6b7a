"""Speech with transcripts for CARE pre-training: random fixed-length crops plus their cached targets."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from data_modules.audio import AudioError, audio_duration, load_audio, num_frames, pad_waves
from data_modules.batching import BucketBatchSampler, ResumableDataLoader
from data_modules.errors import InputNotFound, InvalidInput
from data_modules.manifest import DefectLog, read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechText:
    """One pre-training utterance: its audio file and its transcript."""

    id: str
    audio_path: str
    text: str


@dataclass
class CARETargets:
    """Cached regression targets of a split, row-aligned with its ``SpeechText`` list."""

    teacher: torch.Tensor  # [N, D] utterance embeddings of the text teacher
    descriptors: torch.Tensor  # [total frames, A] float16, utterances one after the other
    offsets: torch.Tensor  # [N + 1] row i's frames are descriptors[offsets[i]:offsets[i + 1]]


class CAREPretrainDataModule(LightningDataModule):
    """``path``: the ``meritsl transcribe`` output (``transcripts.jsonl``: id, audio_path, text, error) or a
    manifest from ``meritsl prepare`` (MSP-Podcast: its release transcripts).

    Rows without audio, with a transcription error or an empty transcript are left out and counted
    (``skipped``, logged); a malformed line or a missing audio file fails naming the file and line unless
    ``on_error="skip"``. A random ``validation_fraction`` is held out. Training batches are random
    ``crop_seconds`` crops starting on the encoder's frame grid (shorter utterances are zero-padded);
    validation uses each utterance's first ``crop_seconds``. The model attaches the cached targets
    (``attach_targets``) and the frame hop (``configure_crops``) before the loaders are built.
    """

    def __init__(
        self,
        path: str,
        validation_fraction: float = 0.05,
        split_seed: int = 0,
        crop_seconds: float = 5.0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_error: Literal["fail", "skip"] = "fail",
        bucket_multiplier: int = 50,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__()
        if not 0.0 < validation_fraction < 1.0:
            raise InvalidInput(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.path = path
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        self.crop_seconds = crop_seconds
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.on_error = on_error
        self.bucket_multiplier = bucket_multiplier
        self.sample_rate = sample_rate
        self.hop = 320
        self.skipped: dict[str, int] = {}
        self._splits: dict[str, list[SpeechText]] | None = None
        self._durations: dict[str, list[float]] = {}
        self._targets: dict[str, CARETargets] = {}

    # -- rows -------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        rows = self.read_rows()
        if len(rows) < 2:
            raise InvalidInput(f"{self.path}: {len(rows)} usable utterance(s); CARE pre-training needs at least 2")
        order = list(range(len(rows)))
        random.Random(self.split_seed).shuffle(order)
        n_val = max(1, round(len(rows) * self.validation_fraction))
        val = set(order[:n_val])
        self._splits = {
            "train": [r for i, r in enumerate(rows) if i not in val],
            "validation": [r for i, r in enumerate(rows) if i in val],
        }
        for split, items in self._splits.items():
            self._durations[split] = [audio_duration(r.audio_path) for r in items]
        log.info("CARE pre-training rows: %s; skipped %s", {k: len(v) for k, v in self._splits.items()}, self.skipped)

    def read_rows(self) -> list[SpeechText]:
        path = Path(self.path)
        if not path.is_file():
            raise InputNotFound(f"CARE pre-training data not found: {path} (write it with `meritsl transcribe` or `meritsl prepare`)")
        defects = DefectLog(self.on_error)
        skipped = {"no_audio": 0, "transcription_error": 0, "empty_text": 0, "malformed": 0, "missing_audio_file": 0}
        raw = self._manifest_rows(path) if _is_manifest(path) else self._transcript_rows(path, defects, skipped)
        rows: list[SpeechText] = []
        for lineno, row in raw:
            if not row.audio_path:
                skipped["no_audio"] += 1
            elif not row.text.strip():
                skipped["empty_text"] += 1
            elif not Path(row.audio_path).is_file():
                defects.add(row.id, path, f"audio file {row.audio_path} does not exist", lineno)
                skipped["missing_audio_file"] += 1
            else:
                rows.append(row)
        self.skipped = {k: v for k, v in skipped.items() if v}
        if self.skipped:
            log.warning("%s: left out %s", path, ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.skipped.items()))
        return rows

    @staticmethod
    def _manifest_rows(path: Path) -> list[tuple[int | None, SpeechText]]:
        return [(None, SpeechText(u.utt_id, u.audio_path or "", u.text or "")) for u in read_manifest(path) if u.audio_ok]

    @staticmethod
    def _transcript_rows(path: Path, defects: DefectLog, skipped: dict[str, int]) -> list[tuple[int | None, SpeechText]]:
        rows: list[tuple[int | None, SpeechText]] = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    item = str(obj["id"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    defects.add(f"line {lineno}", path, f"malformed transcript row ({e})", lineno)
                    skipped["malformed"] += 1
                    continue
                if obj.get("error"):
                    skipped["transcription_error"] += 1
                    continue
                audio = obj.get("audio_path") or ""
                if audio and not Path(audio).is_absolute():
                    audio = str(path.parent / audio)
                rows.append((lineno, SpeechText(item, audio, obj.get("text") or "")))
        return rows

    def split_rows(self, split: str) -> list[SpeechText]:
        if self._splits is None:
            self.setup()
        assert self._splits is not None
        if split not in self._splits:
            raise KeyError(f"CARE pre-training has splits {sorted(self._splits)}, not {split!r}")
        return self._splits[split]

    def split_names(self) -> list[str]:
        return ["train", "validation"]

    # -- targets and crops (set by the model) -----------------------------------------------------------------
    def configure_crops(self, hop: int) -> None:
        """Crop starts fall on the encoder's frame grid (``hop`` samples) so cached descriptor frames line up."""
        self.hop = hop

    def attach_targets(self, split: str, targets: CARETargets) -> None:
        n = len(self.split_rows(split))
        if targets.teacher.shape[0] != n or targets.offsets.numel() != n + 1:
            raise ValueError(f"{split}: targets for {targets.teacher.shape[0]} rows, but the split has {n}")
        self._targets[split] = targets

    # -- loaders ----------------------------------------------------------------------------------------------
    def _dataset(self, split: str, train: bool) -> CropDataset:
        if split not in self._targets:
            raise RuntimeError(f"no targets attached for split {split!r}; the CARE module attaches them in setup()")
        return CropDataset(self.split_rows(split), self._targets[split], self.crop_samples, self.hop, self.sample_rate, train)

    @property
    def crop_samples(self) -> int:
        # a whole number of frames, so a crop's descriptor frames are exactly its own
        return max(1, round(self.crop_seconds * self.sample_rate / self.hop)) * self.hop

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self._dataset(split, train)
        crop = self.crop_seconds
        lengths = [round(min(d, crop) * 100) for d in self._durations[split]]  # bucket by cropped length
        sampler = RandomSampler(dataset) if train else SequentialSampler(dataset)
        batches = BucketBatchSampler(
            sampler, self.batch_size if train else self.eval_batch_size, drop_last=False, lengths=lengths,
            bucket_multiplier=self.bucket_multiplier, shuffle=train, item_seeds=train,
        )  # fmt: skip
        return ResumableDataLoader(
            dataset, batch_sampler=batches, collate_fn=collate_crops, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", False)


def _is_manifest(path: Path) -> bool:
    """A manifest row has ``utt_id``; a transcript row has ``id``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return "utt_id" in json.loads(line)
                except json.JSONDecodeError:
                    return False
    return False


class CropDataset(Dataset):
    """Item i: a crop of utterance i's audio, its descriptor frames and its teacher vector."""

    def __init__(
        self, rows: list[SpeechText], targets: CARETargets, crop_samples: int, hop: int, sample_rate: int, train: bool
    ) -> None:
        self.rows, self.targets = rows, targets
        self.crop_samples, self.hop, self.sample_rate, self.train = crop_samples, hop, sample_rate, train

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        # training items carry their own crop seed (see BucketBatchSampler.item_seeds): resumable, worker-independent
        i, seed = item if isinstance(item, tuple) else (item, None)
        row = self.rows[i]
        try:
            wave = load_audio(row.audio_path, sample_rate=self.sample_rate)
        except AudioError as e:
            raise AudioError(f"CARE pre-training item {row.id} ({row.audio_path}): {e}") from e
        first, last = int(self.targets.offsets[i]), int(self.targets.offsets[i + 1])
        spare_frames = max(0, (wave.numel() - self.crop_samples) // self.hop)
        start = 0
        if self.train and spare_frames:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            start = int(torch.randint(0, spare_frames + 1, (), generator=generator).item())
        wave = wave[start * self.hop : start * self.hop + self.crop_samples]
        frames = num_frames(self.crop_samples, self.hop)
        acoustic = self.targets.descriptors[first + start : min(last, first + start + frames)]
        return {"wave": wave, "acoustic": acoustic.float(), "teacher": self.targets.teacher[i].float(), "index": i}


def collate_crops(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    waves, lengths = pad_waves([it["wave"] for it in items])
    frames = max(it["acoustic"].shape[0] for it in items)
    acoustic = torch.zeros(len(items), frames, items[0]["acoustic"].shape[1])
    for b, it in enumerate(items):
        acoustic[b, : it["acoustic"].shape[0]] = it["acoustic"]
    return {
        "waves": waves,
        "lengths": lengths,
        "acoustic": acoustic,
        "acoustic_lengths": torch.tensor([it["acoustic"].shape[0] for it in items]),
        "teacher": torch.stack([it["teacher"] for it in items]),
        "index": torch.tensor([it["index"] for it in items]),
    }
