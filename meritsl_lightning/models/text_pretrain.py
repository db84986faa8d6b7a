"""LLM-supervised text pre-training (paper Sec. II): RoBERTa trained on LLM silver labels ("RoBERTa-FT")."""

from __future__ import annotations

from meritsl_lightning.checkpoints import TEXT_PRETRAIN_STAGE
from meritsl_lightning.models.utterance import TextUtteranceModule


class TextPretrainModule(TextUtteranceModule):
    """LLM-supervised text pre-training (paper Sec. II): the Stage I text network trained on silver labels.

    Same encoder, pooling and head as Stage I text; trained on ``SilverDataModule`` (3 classes). Stage I
    text then starts from its checkpoint (``model_name_or_path: .../best.ckpt``) with a fresh head.
    """

    stage = TEXT_PRETRAIN_STAGE
