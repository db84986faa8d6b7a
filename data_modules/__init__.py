"""Corpora as data modules (one file per corpus), the manifest schema and the shared base.

Re-exports are lazy so that parsers (``meritsl prepare``) load without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ERCDataModule": "data_modules.base",
    "SplitData": "data_modules.base",
    "IEMOCAPDataModule": "data_modules.iemocap",
    "MELDDataModule": "data_modules.meld",
    "CMUMOSIDataModule": "data_modules.cmu_mosi",
    "MSPPodcastDataModule": "data_modules.msp_podcast",
    "SilverDataModule": "data_modules.silver",
    "CAREPretrainDataModule": "data_modules.care_pretrain",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
