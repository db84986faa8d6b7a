"""A tiny randomly initialised Whisper converted to CTranslate2, loadable offline by faster-whisper.

For tests and the offline demo: it exercises the real loading and decoding code, and emits garbage
text. Building is deterministic for a seed and idempotent (the recipe marker of ``tiny_models`` is
written last, so an interrupted build is redone).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from meritsl_lightning.tiny_models import RECIPE_FILE, _is_built, _mark_built

TEXT_VOCAB_MULTILINGUAL = 50257  # the real Whisper text vocabulary size; ctranslate2 expects it when multilingual
NUM_LANGUAGES = 99  # Whisper before large-v3 (large-v3 adds "yue")
NUM_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>
TASK_TOKENS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")
BUILD_FILES = {"model.bin", "config.json", "vocabulary.json", "tokenizer.json", "preprocessor_config.json", RECIPE_FILE}
TOKENIZER_CORPUS = (
    "the quick brown fox jumps over the lazy dog. i am so happy today, this is wonderful news! "
    "that is terrible, i can not believe you did that again. we will meet at the station at nine. "
    "what do you think about the weather? it is fine, thank you very much."
)


def build_tiny_whisper_ct2(out_dir: str | os.PathLike, multilingual: bool = False, seed: int = 0) -> Path:
    """Build (or reuse) a tiny random Whisper in CTranslate2 form at ``out_dir``; return the folder."""
    out = Path(out_dir)
    recipe = {"kind": "whisper-ct2", "multilingual": multilingual, "seed": seed, "d_model": 64, "layers": 2}
    if _is_built(out, recipe):
        return out
    from ctranslate2.converters import TransformersConverter

    foreign = sorted(p.name for p in out.iterdir() if p.name not in BUILD_FILES) if out.is_dir() else []
    if foreign:  # the converter replaces the whole folder; never delete what is not ours
        raise FileExistsError(f"{out}: not a tiny Whisper folder (holds {', '.join(foreign[:5])}); pick an empty one")
    with tempfile.TemporaryDirectory(prefix="tiny-whisper-hf-") as hf_dir:
        _build_hf_whisper(Path(hf_dir), multilingual, seed)
        TransformersConverter(hf_dir, copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
            str(out), quantization="int8", force=True
        )
    _check_vocabulary(out)
    _mark_built(out, recipe)
    return out


def _build_hf_whisper(hf_dir: Path, multilingual: bool, seed: int) -> None:
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    tokenizer, languages = _tokenizer(multilingual)
    ids = tokenizer.convert_tokens_to_ids
    sot, eot, no_ts = ids("<|startoftranscript|>"), ids("<|endoftext|>"), ids("<|notimestamps|>")
    if ids("<|0.00|>") != no_ts + 1:  # faster-whisper derives the timestamp base this way
        raise RuntimeError("tiny Whisper tokenizer: <|0.00|> must directly follow <|notimestamps|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,  # faster-whisper always feeds 30 s windows
        max_target_positions=448,
        decoder_start_token_id=sot,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        suppress_tokens=[],
        begin_suppress_tokens=[ids("Ġ"), eot],  # the default ids belong to the real vocabulary
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config)
    gen = model.generation_config
    gen.decoder_start_token_id = sot
    gen.no_timestamps_token_id = no_ts
    gen.is_multilingual = multilingual
    if multilingual:
        gen.lang_to_id = {f"<|{code}|>": ids(f"<|{code}|>") for code in languages}
        gen.task_to_id = {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")}
    # otherwise transformers 5 rebuilds it from the model config and generate(language=...) fails
    gen._from_model_config = False
    model.save_pretrained(hf_dir)
    feature_extractor = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(hf_dir)
    # transformers 5's processor writes processor_config.json only; the converter needs this file
    feature_extractor.save_pretrained(hf_dir)


def _tokenizer(multilingual: bool) -> tuple[Any, list[str]]:
    """A byte-level BPE Whisper tokenizer with Whisper's special tokens in Whisper's order."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AddedToken, WhisperTokenizer
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TOKENIZER_CORPUS], vocab_size=400, min_frequency=1)  # includes all 256 byte symbols
    model_state = json.loads(bpe.to_str())["model"]
    vocab = dict(sorted(model_state["vocab"].items(), key=lambda kv: kv[1]))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_state["merges"]]
    if multilingual:
        # ctranslate2 marks a model multilingual by the presence of the empty token
        vocab.setdefault("", len(vocab))
        for i in range(len(vocab), TEXT_VOCAB_MULTILINGUAL):
            vocab[f"<filler{i}>"] = i
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    languages = list(LANGUAGES)[:NUM_LANGUAGES] if multilingual else []
    specials = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{c}|>" for c in languages), *TASK_TOKENS]
    specials += [f"<|{i * 0.02:.2f}|>" for i in range(NUM_TIMESTAMPS)]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    return tokenizer, languages


def _check_vocabulary(ct2_dir: Path) -> None:
    # with no tokenizer in the HF folder the converter exits cleanly and writes a broken vocabulary
    vocab_file = ct2_dir / "vocabulary.json"
    tokenizer_file = ct2_dir / "tokenizer.json"
    if not vocab_file.is_file() or not tokenizer_file.is_file():
        raise RuntimeError(f"{ct2_dir}: conversion wrote no vocabulary.json/tokenizer.json")
    vocabulary = json.loads(vocab_file.read_text())
    added = json.loads(tokenizer_file.read_text())["added_tokens"]
    sot = next(t["id"] for t in added if t["content"] == "<|startoftranscript|>")
    if vocabulary[sot] != "<|startoftranscript|>":
        raise RuntimeError(
            f"{vocab_file}: token {sot} is {vocabulary[sot]!r}, expected '<|startoftranscript|>' (broken conversion)"
        )
