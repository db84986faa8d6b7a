"""Tiny randomly initialised models saved as ordinary Hugging Face folders (for tests and the offline demo).

Each builder is deterministic for a given seed and recipe, and idempotent: a folder whose
``tiny_recipe.json`` matches the requested recipe is reused as it is. The marker is written last,
so an interrupted build is redone on the next call.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RECIPE_FILE = "tiny_recipe.json"
ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4, as in RoBERTa


def build_tiny_roberta(
    out_dir: str | os.PathLike,
    texts: Sequence[str],
    hidden_size: int = 64,
    num_layers: int = 2,
    heads: int = 2,
    vocab_size: int = 1000,
    max_positions: int = 130,
    seed: int = 0,
) -> Path:
    """A RoBERTa (byte-level BPE trained on ``texts``) saved with its tokenizer; loads with AutoModel/AutoTokenizer."""
    if not texts:
        raise ValueError("build_tiny_roberta needs at least one text to train the tokenizer on")
    out = Path(out_dir)
    recipe = {
        "kind": "roberta",
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "heads": heads,
        "vocab_size": vocab_size,
        "max_positions": max_positions,
        "seed": seed,
        "texts_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
    }
    if _is_built(out, recipe):
        return out
    out.mkdir(parents=True, exist_ok=True)

    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=list(ROBERTA_SPECIAL_TOKENS)
    )
    bpe.save_model(str(out))  # vocab.json + merges.txt
    # transformers 5: building RobertaTokenizer(Fast) from vocab_file/merges_file keywords silently yields an
    # empty 5-token vocabulary; loading the saved files through from_pretrained reads them correctly.
    tokenizer = RobertaTokenizer.from_pretrained(str(out), model_max_length=max_positions - 2)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=max_positions,  # RoBERTa positions start after the pad id: max_positions - 2 tokens
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RobertaModel(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _mark_built(out, recipe)
    return out


def build_tiny_wavlm(
    out_dir: str | os.PathLike,
    hidden_size: int = 32,
    num_layers: int = 2,
    heads: int = 2,
    conv_dim: Sequence[int] = (32, 32, 32),
    conv_kernel: Sequence[int] = (10, 8, 4),
    conv_stride: Sequence[int] = (5, 8, 8),
    seed: int = 0,
    stable_layer_norm: bool = True,
) -> Path:
    """A WavLM (20 ms frames, like the real one) with a Wav2Vec2FeatureExtractor; loads with AutoModel offline.

    It uses layer-norm conv features and attention masks (the WavLM-large convention), so an
    utterance's features do not depend on how much padding its batch adds. ``stable_layer_norm=False``
    gives WavLM-base's post-layer-norm encoder (what CARE builds on).
    """
    out = Path(out_dir)
    recipe = {
        "kind": "wavlm",
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "heads": heads,
        "conv_dim": list(conv_dim),
        "conv_kernel": list(conv_kernel),
        "conv_stride": list(conv_stride),
        "seed": seed,
    }
    if not stable_layer_norm:  # only then, so that existing tiny WavLM folders keep their recipe
        recipe["stable_layer_norm"] = False
    if _is_built(out, recipe):
        return out
    out.mkdir(parents=True, exist_ok=True)

    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    config = WavLMConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        conv_dim=list(conv_dim),
        conv_kernel=list(conv_kernel),
        conv_stride=list(conv_stride),
        feat_extract_norm="layer",
        do_stable_layer_norm=stable_layer_norm,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_buckets=32,
        max_bucket_distance=100,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WavLMModel(config)
    model.save_pretrained(out)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(out)
    _mark_built(out, recipe)
    return out


def _is_built(out: Path, recipe: dict[str, Any]) -> bool:
    marker = out / RECIPE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == recipe
    except json.JSONDecodeError:
        return False


def _mark_built(out: Path, recipe: dict[str, Any]) -> None:
    (out / RECIPE_FILE).write_text(json.dumps(recipe, indent=1) + "\n")


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_causal_lm(out_dir: str | os.PathLike, texts: Sequence[str], vocab_size: int = 300, seed: int = 0) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer (trained on ``texts``) and a ChatML chat template."""
    out = Path(out_dir)
    recipe = {"kind": "llama", "vocab_size": vocab_size, "seed": seed, "texts_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()}
    if _is_built(out, recipe):
        return out
    out.mkdir(parents=True, exist_ok=True)

    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>", eos_token="<|im_end|>")
    tok.chat_template = CHATML_TEMPLATE
    tok.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(out)
    _mark_built(out, recipe)
    return out
