"""CMU-MOSI (the raw archive's ``Raw/`` folder) as a data module: binary (MERITS-L) or regression (MSA)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Literal

from data_modules.base import ERCDataModule
from data_modules.cmu_mosi_parser import PROTOCOLS, load_video_list, parse_cmu_mosi
from data_modules.errors import InvalidInput
from data_modules.manifest import ParseResult, Utterance

log = logging.getLogger(__name__)


class CMUMOSIDataModule(ERCDataModule):
    """CMU-MOSI from the raw archive (or a manifest written by ``meritsl prepare cmu_mosi``).

    One conversation per video. ``protocol="mosi2"`` (MERITS-L/HCAM, weighted F1) classifies the has-0
    binary label (score < 0 negative, >= 0 positive); ``"mosi_regression"`` predicts the score in [-3, 3].
    Splits: the CMU-MultimodalSDK standard folds (52 / 10 / 31 videos), or ``video_list`` (a JSON or text
    file of train/validation/test video ids, e.g. a Poria et al. partition), which also re-splits a manifest.
    """

    corpus = "cmu_mosi"
    protocols = {name: list(spec.labels) for name, spec in PROTOCOLS.items()}
    regression_protocols = frozenset(name for name, spec in PROTOCOLS.items() if spec.target == "score")

    def __init__(
        self,
        root: str | None = None,
        protocol: Literal["mosi2", "mosi_regression"] = "mosi2",
        video_list: str | None = None,
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
            protocol,
            manifest,
            batch_size,
            eval_batch_size,
            num_workers,
            on_error,
            text_only,
            predict_split,
            bucket_multiplier,
            transcripts=transcripts,
            transcripts_splits=transcripts_splits,
        )
        if root is None and manifest is None:
            raise InvalidInput("CMUMOSIDataModule needs root (the folder holding Raw/) or manifest")
        self.root = root
        self.video_list = video_list

    def parse(self) -> ParseResult:
        assert self.root is not None
        return parse_cmu_mosi(
            self.root,
            protocol=self.protocol,
            on_error=self.on_error,
            text_only=self.text_only,
            video_list=self.video_list,
        )

    def assign_splits(self, rows: list[Utterance]) -> list[Utterance]:
        if not (self.manifest and self.video_list):
            return rows  # parse() has already split by the folds or the video list
        split_of = {v: split for split, videos in load_video_list(self.video_list).items() for v in videos}
        unlisted = sorted({u.dialogue_id for u in rows} - set(split_of))
        if unlisted:
            log.warning(
                "%d videos of %s are in no split of %s and are left out: %s",
                len(unlisted),
                self.manifest,
                self.video_list,
                " ".join(unlisted[:10]) + (" ..." if len(unlisted) > 10 else ""),
            )
        return [replace(u, split=split_of[u.dialogue_id]) for u in rows if u.dialogue_id in split_of]
