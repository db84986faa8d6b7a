"""Corpora as data modules (one file per corpus), the manifest schema and the shared base.

Re-exports are lazy so that parsers (``meritsl prepare``) load without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ERCDataModule": "meritsl_lightning.data_modules.base",
    "SplitData": "meritsl_lightning.data_modules.base",
    "IEMOCAPDataModule": "meritsl_lightning.data_modules.iemocap",
    "MELDDataModule": "meritsl_lightning.data_modules.meld",
    "CMUMOSIDataModule": "meritsl_lightning.data_modules.cmu_mosi",
    "MSPPodcastDataModule": "meritsl_lightning.data_modules.msp_podcast",
    "SilverDataModule": "meritsl_lightning.data_modules.silver",
    "CAREPretrainDataModule": "meritsl_lightning.data_modules.care_pretrain",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
