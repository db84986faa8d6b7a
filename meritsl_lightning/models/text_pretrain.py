"""LLM-supervised text pre-training (paper Sec. II): RoBERTa trained on LLM silver labels ("RoBERTa-FT")."""

from __future__ import annotations

import torch

from meritsl_lightning.encoders.text import TextEncoder, TextPooling
from meritsl_lightning.models.checkpoints import CheckpointMismatch, read_stage_checkpoint
from meritsl_lightning.models.utterance import TextUtteranceModule


class TextPretrainModule(TextUtteranceModule):
    """LLM-supervised text pre-training (paper Sec. II): the Stage I text network trained on silver labels.

    Same encoder, pooling and head as Stage I text; trained on ``SilverDataModule`` (3 classes). Stage I
    text then starts from its checkpoint (``model_name_or_path: .../best.ckpt``) with a fresh head.
    """

    stage = "text_pretrain"


def pretrained_text_encoder(
    checkpoint: str, pooling: TextPooling, max_length: int, strict_pooling: bool = True
) -> TextEncoder:
    """The encoder of a ``TextPretrainModule`` checkpoint (its base architecture rebuilt, its weights loaded).

    ``strict_pooling=False`` allows a pooling other than the one it was trained with (its dense layer is
    then not used), e.g. mean-pooled states as a CARE teacher.
    """
    meta = read_stage_checkpoint(checkpoint, role="model_name_or_path", stages=(TextPretrainModule.stage,))
    blob = torch.load(meta.path, map_location="cpu", weights_only=True)
    hparams = blob["hyper_parameters"]
    if strict_pooling and hparams["pooling"] != pooling:
        raise CheckpointMismatch(
            f"model_name_or_path: {checkpoint} was pre-trained with pooling {hparams['pooling']!r}, not {pooling!r}"
        )
    encoder = TextEncoder(hparams["model_name_or_path"], pooling, max_length)
    state = {k.removeprefix("encoder."): v for k, v in blob["state_dict"].items() if k.startswith("encoder.")}
    if encoder.dense is None:
        state = {k: v for k, v in state.items() if not k.startswith("dense.")}
    encoder.load_state_dict(state)
    return encoder
