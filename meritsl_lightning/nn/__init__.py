"""Plain torch building blocks (no Lightning)."""

from meritsl_lightning.nn.co_attention import CoAttentionBlock, CoAttentionFusion
from meritsl_lightning.nn.context_encoder import ContextEncoder
from meritsl_lightning.nn.heads import SpeechUtteranceHead, activation
from meritsl_lightning.nn.pooling import LayerWeightedSum, masked_mean

__all__ = [
    "CoAttentionBlock",
    "CoAttentionFusion",
    "ContextEncoder",
    "LayerWeightedSum",
    "SpeechUtteranceHead",
    "activation",
    "masked_mean",
]
