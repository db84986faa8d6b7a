"""LightningModules, one per training stage."""

from meritsl_lightning.models.base import BaseStageModule
from meritsl_lightning.models.context import ContextModule
from meritsl_lightning.models.fusion import FusionModule
from meritsl_lightning.models.text_pretrain import TextPretrainModule
from meritsl_lightning.models.utterance import SpeechUtteranceModule, TextUtteranceModule

__all__ = ["BaseStageModule", "ContextModule", "FusionModule", "SpeechUtteranceModule", "TextPretrainModule", "TextUtteranceModule"]
