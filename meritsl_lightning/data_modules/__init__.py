"""Corpora as data modules (one file per corpus), the manifest schema and the shared base."""

from meritsl_lightning.data_modules.base import ERCDataModule, SplitData
from meritsl_lightning.data_modules.iemocap import IEMOCAPDataModule

__all__ = ["ERCDataModule", "IEMOCAPDataModule", "SplitData"]
