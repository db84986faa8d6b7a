"""MELD (``MELD.Raw`` + the ``*_sent_emo.csv`` label files) as a data module: emotion (7) or sentiment (3)."""

from __future__ import annotations

from typing import Literal

from data_modules.base import ERCDataModule
from data_modules.errors import InvalidInput
from data_modules.manifest import ParseResult
from data_modules.meld_parser import DEFAULT_MAX_SECONDS, PROTOCOLS, parse_meld


class MELDDataModule(ERCDataModule):
    """MELD from the release folders (or a manifest written by ``meritsl prepare meld``).

    Splits are MELD's own: train, validation (MELD's dev) and test; dialogues are ``train/dia12``.
    ``csv_dir`` is searched first for the label CSVs (e.g. the UTF-8 copies of the MELD repository when
    the archive's copies are older). Utterances whose clip is missing or corrupt are kept with
    ``audio_ok=False``: text stages use them, speech stages mask them. ``max_seconds`` is where clips
    count as long in the parse report; the crop itself happens where audio is loaded (the speech
    encoder's ``max_seconds`` option, centre crop).
    """

    corpus = "meld"
    protocols = {name: list(spec.labels) for name, spec in PROTOCOLS.items()}

    def __init__(
        self,
        root: str | None = None,
        protocol: Literal["meld7", "meld3"] = "meld7",
        csv_dir: str | None = None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        manifest: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_error: Literal["fail", "skip"] = "fail",
        text_only: bool = False,
        predict_split: str = "test",
        bucket_multiplier: int = 50,
        transcripts: str | None = None,
        transcripts_splits: list[str] | None = None,
    ) -> None:
        super().__init__(
            protocol, manifest, batch_size, eval_batch_size, num_workers, on_error, text_only, predict_split, bucket_multiplier,
            transcripts=transcripts,
            transcripts_splits=transcripts_splits,
        )
        if root is None and manifest is None:
            raise InvalidInput("MELDDataModule needs root (the MELD.Raw folder, or a folder holding the CSVs) or manifest")
        self.root = root
        self.csv_dir = csv_dir
        self.max_seconds = max_seconds

    def parse(self) -> ParseResult:
        assert self.root is not None
        return parse_meld(
            self.root,
            protocol=self.protocol,
            on_error=self.on_error,
            text_only=self.text_only,
            csv_dir=self.csv_dir,
            max_seconds=self.max_seconds,
        )
