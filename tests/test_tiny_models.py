"""Tiny offline models: they reload through the Auto classes, deterministically, and are built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer  # noqa: E402

from meritsl_lightning.tiny_models import RECIPE_FILE, build_tiny_roberta, build_tiny_wavlm  # noqa: E402

CORPUS = [
    "I can't believe you did that to me, I'm furious!",
    "Oh wow, that's wonderful news, congratulations to both of you.",
    "I'm so sad that he left without saying goodbye.",
    "Okay. Whatever you think is fine.",
    "Are you serious? That is absolutely amazing!",
    "Leave me alone, I don't want to talk about it.",
] * 5


def load(folder: Path) -> tuple:
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def encode(model, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_roberta(tmp_path_factory.mktemp("models") / "roberta", CORPUS)


def test_roberta_reloads_offline_and_is_deterministic(roberta_dir: Path, tmp_path: Path) -> None:
    model, tokenizer = load(roberta_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    again, again_tok = load(build_tiny_roberta(tmp_path / "again", CORPUS))
    assert again_tok.get_vocab() == tokenizer.get_vocab()
    texts = CORPUS[:3]
    assert torch.equal(encode(model, tokenizer, texts), encode(again, again_tok, texts))
    other, other_tok = load(build_tiny_roberta(tmp_path / "other", CORPUS, seed=1))
    assert not torch.allclose(encode(model, tokenizer, texts), encode(other, other_tok, texts))


def test_roberta_tokenises_corpus_words_into_few_pieces(roberta_dir: Path) -> None:
    _, tokenizer = load(roberta_dir)
    assert tokenizer.pad_token_id == 1 and tokenizer.cls_token_id == 0 and tokenizer.sep_token_id == 2
    words = {w for text in CORPUS for w in text.split()}
    pieces = [len(tokenizer.tokenize(" " + w)) for w in words]
    assert sum(pieces) / len(pieces) <= 1.5
    assert tokenizer.unk_token_id not in tokenizer(" ".join(CORPUS))["input_ids"]


def test_roberta_fits_its_longest_input(roberta_dir: Path) -> None:
    model, tokenizer = load(roberta_dir)
    assert tokenizer.model_max_length == 128
    hidden = encode(model, tokenizer, [" ".join(CORPUS)])
    assert hidden.shape == (1, 128, 64)


def test_builders_are_idempotent(roberta_dir: Path, tmp_path: Path) -> None:
    weights = roberta_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_roberta(roberta_dir, CORPUS) == roberta_dir
    assert weights.stat().st_mtime_ns == stamp
    build_tiny_roberta(roberta_dir, CORPUS, hidden_size=32)  # a different recipe rebuilds
    assert AutoModel.from_pretrained(roberta_dir).config.hidden_size == 32
    build_tiny_roberta(roberta_dir, CORPUS)  # restore for the other tests of this module
    assert (roberta_dir / RECIPE_FILE).is_file()


def test_wavlm_reloads_offline(tmp_path: Path) -> None:
    folder = build_tiny_wavlm(tmp_path / "wavlm")
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert extractor.sampling_rate == 16000 and extractor.return_attention_mask
    twin = AutoModel.from_pretrained(build_tiny_wavlm(tmp_path / "twin"))
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.eval()(wave).last_hidden_state
        assert out.shape == (1, 50, 32)  # 20 ms frames
        assert torch.equal(out, twin.eval()(wave).last_hidden_state)
