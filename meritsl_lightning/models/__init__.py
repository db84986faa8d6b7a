"""LightningModules, one per training stage, plus the pre-training modules (text, CARE)."""

from meritsl_lightning.models.base import BaseStageModule
from meritsl_lightning.models.care import CAREPretrainModule
from meritsl_lightning.models.context import ContextModule
from meritsl_lightning.models.fusion import FusionModule
from meritsl_lightning.models.joint import JointContextFusionModule, JointTextFinetuneModule
from meritsl_lightning.models.text_pretrain import TextPretrainModule
from meritsl_lightning.models.utterance import SpeechUtteranceModule, TextUtteranceModule

__all__ = [
    "BaseStageModule",
    "CAREPretrainModule",
    "ContextModule",
    "FusionModule",
    "JointContextFusionModule",
    "JointTextFinetuneModule",
    "SpeechUtteranceModule",
    "TextPretrainModule", "TextUtteranceModule",
]
