"""Plain torch blocks: shapes, and that padding never changes the output for real utterances."""

from __future__ import annotations

import torch

from meritsl_lightning.nn import (
    CoAttentionFusion,
    ContextEncoder,
    LayerWeightedSum,
    SpeechUtteranceHead,
    masked_mean,
)


def _padded(x: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, k, d = x.shape
    padded = torch.cat([x, torch.randn(b, extra, d) * 100], dim=1)  # garbage in the padding
    mask = torch.zeros(b, k + extra, dtype=torch.bool)
    mask[:, :k] = True
    return padded, mask


def test_context_encoder_ignores_padding() -> None:
    torch.manual_seed(0)
    enc = ContextEncoder(6, hidden_size=4, num_heads=2, dropout=0.0).eval()
    x = torch.randn(2, 5, 6)
    out = enc(x, torch.ones(2, 5, dtype=torch.bool))
    padded, mask = _padded(x, 3)
    out_padded = enc(padded, mask)
    assert out.shape == (2, 5, 8) and out_padded.shape == (2, 8, 8)
    torch.testing.assert_close(out_padded[:, :5], out)


def test_context_encoder_uses_the_conversation() -> None:
    torch.manual_seed(0)
    enc = ContextEncoder(6, hidden_size=4, num_heads=2, dropout=0.0).eval()
    x = torch.randn(1, 4, 6)
    mask = torch.ones(1, 4, dtype=torch.bool)
    changed = x.clone()
    changed[0, 3] += 1.0  # only the last utterance changes ...
    assert not torch.allclose(enc(x, mask)[0, 0], enc(changed, mask)[0, 0])  # ... the first one's output moves


def test_co_attention_ignores_padding_and_mixes_modalities() -> None:
    torch.manual_seed(0)
    fusion = CoAttentionFusion(6, 5, num_classes=4, dim=8, num_heads=2, num_layers=2, dropout=0.0).eval()
    text, audio = torch.randn(2, 3, 6), torch.randn(2, 3, 5)
    full = torch.ones(2, 3, dtype=torch.bool)
    logits = fusion(text, audio, full)
    assert logits.shape == (2, 3, 4)
    padded_text, mask = _padded(text, 2)
    padded_audio, _ = _padded(audio, 2)
    torch.testing.assert_close(fusion(padded_text, padded_audio, mask)[:, :3], logits)
    assert not torch.allclose(fusion(text, audio + 1.0, full), logits)  # audio reaches the output


def test_speech_head_standardises_without_removing_loudness() -> None:
    torch.manual_seed(0)
    head = SpeechUtteranceHead(num_layers=2, feature_dim=3, num_classes=4, projection_dim=5, embedding_dim=6).eval()
    features = torch.randn(10, 2, 3) * 5 + 7
    head.set_feature_stats(features)
    standard = (features - head.feature_mean) / head.feature_std
    torch.testing.assert_close(standard.mean(0), torch.zeros(2, 3), atol=1e-5, rtol=0)
    logits, emb = head(features)
    assert logits.shape == (10, 4) and emb.shape == (10, 6)
    assert not torch.allclose(head.embedding(features + 1.0), emb)  # a uniform level shift is kept


def test_layer_weights_and_masked_mean() -> None:
    pool = LayerWeightedSum(3)
    x = torch.arange(6.0).reshape(1, 3, 2)
    torch.testing.assert_close(pool(x), x.mean(1))  # uniform weights at initialisation
    values = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(values, torch.tensor([[True, True, False]])).item() == 2.0
