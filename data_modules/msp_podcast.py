"""MSP-Podcast as a data module: every utterance with audio, for transcription, pseudo-labelling and CARE."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from data_modules.base import ERCDataModule
from data_modules.errors import InvalidInput
from data_modules.manifest import ParseResult, Utterance
from data_modules.msp_podcast_parser import PROTOCOLS, parse_msp_podcast


class MSPPodcastDataModule(ERCDataModule):
    """MSP-Podcast from the release folder (or a manifest written by ``meritsl prepare msp_podcast``).

    Conversations are podcasts (segments in segment order). Splits follow the release: ``train``,
    ``validation`` (Development), ``test1``/``test2``/``test3``, plus any unmapped value and
    ``unassigned`` (see ``msp_podcast_parser``). ``test_split`` names the release test set served as
    ``test`` (``trainer.test``); the others stay reachable through ``split_data``. MERITS-L pre-training
    uses every utterance; its own 80/20 split is made on the silver labels (``SilverDataModule``).
    Labels are the 10 consensus classes (protocol ``msp_all``), used for agreement reports only.
    """

    corpus = "msp_podcast"
    protocols = {name: list(spec.labels) for name, spec in PROTOCOLS.items()}

    def __init__(
        self,
        root: str | None = None,
        protocol: Literal["msp_all"] = "msp_all",
        test_split: str | None = "test1",
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
            raise InvalidInput("MSPPodcastDataModule needs root (the MSP-PODCAST-Publish-1.xx folder) or manifest")
        if test_split == "test":
            test_split = None  # already served as "test"
        self.root = root
        self.test_split = test_split

    def parse(self) -> ParseResult:
        assert self.root is not None
        return parse_msp_podcast(self.root, protocol=self.protocol, on_error=self.on_error, text_only=self.text_only)

    def assign_splits(self, rows: list[Utterance]) -> list[Utterance]:
        if self.test_split is None:
            return rows
        if any(u.split == "test" for u in rows):
            raise InvalidInput(f"test_split={self.test_split!r}: the rows already have a 'test' split; set test_split=None")
        return [replace(u, split="test") if u.split == self.test_split else u for u in rows]
