"""The CARE network: shapes of the downstream recipe, gradient routing, frozen parts, padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from meritsl_lightning.encoders.care import CAREModel
from meritsl_lightning.tiny_models import build_tiny_roberta, build_tiny_wavlm

WIDTH = 16


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("care-parts")
    wavlm = build_tiny_wavlm(root / "wavlm", hidden_size=WIDTH, num_layers=4, stable_layer_norm=False)
    roberta = build_tiny_roberta(root / "roberta", ["a short text", "another short text"] * 4, hidden_size=WIDTH, num_layers=3)
    return wavlm, roberta


@pytest.fixture()
def care(tiny_parts: tuple[Path, Path]) -> CAREModel:
    torch.manual_seed(0)
    return CAREModel.from_pretrained(str(tiny_parts[0]), str(tiny_parts[1]), shared_layers=2, acoustic_dim=8)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(3, 24000) * 0.1, torch.tensor([24000, 16000, 4000])


def test_downstream_features_follow_the_recipe(care: CAREModel) -> None:
    waves, lengths = _batch()
    care.eval()
    with torch.no_grad():
        feats = care.layer_features(waves, lengths)
        out = care(waves, lengths)
    # 1 front-end + 2 shared + 2 branch hidden states; semantic ++ acoustic widths
    assert feats.shape == (3, 5, 2 * WIDTH)
    # the pooled semantic vector is the semantic half of the last layer
    torch.testing.assert_close(feats[:, -1, :WIDTH], out.semantic)
    # the front-end and shared layers are common to both streams
    torch.testing.assert_close(feats[:, :3, :WIDTH], feats[:, :3, WIDTH:])
    assert not torch.allclose(feats[:, -1, :WIDTH], feats[:, -1, WIDTH:])
    assert out.acoustic.shape[:2] == out.frame_mask.shape and out.acoustic.shape[2] == 8
    assert out.frame_mask.sum(1).tolist() == care.frame_lengths(lengths).tolist()


def test_padding_does_not_change_an_utterance(care: CAREModel) -> None:
    waves, lengths = _batch()
    care.eval()
    with torch.no_grad():
        batched = care.layer_features(waves, lengths)
        alone = care.layer_features(waves[2:, :4000], lengths[2:])
    torch.testing.assert_close(batched[2:], alone, atol=1e-4, rtol=1e-4)


def _grads(params: list[torch.nn.Parameter]) -> float:
    return sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)


def test_acoustic_loss_leaves_shared_layers_and_adapters_untouched(care: CAREModel) -> None:
    care.train()
    waves, lengths = _batch()
    care(waves, lengths).acoustic.pow(2).mean().backward()
    groups = care.parameter_groups()
    assert _grads(groups["acoustic"]) > 0
    assert _grads(groups["shared"]) == 0.0
    assert _grads(groups["adapters"]) == 0.0


def test_semantic_loss_trains_shared_layers_and_adapters_only(care: CAREModel) -> None:
    care.train()
    waves, lengths = _batch()
    care(waves, lengths).semantic.pow(2).mean().backward()
    groups = care.parameter_groups()
    assert _grads(groups["shared"]) > 0
    assert _grads(groups["adapters"]) > 0
    assert _grads(groups["acoustic"]) == 0.0


def test_front_end_and_text_layers_are_frozen_and_stay_in_eval_mode(care: CAREModel) -> None:
    care.train()
    waves, lengths = _batch()
    out = care(waves, lengths)
    (out.semantic.pow(2).mean() + out.acoustic.pow(2).mean()).backward()
    for module in care.frozen_modules():
        assert not module.training
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    trainable = {id(p) for group in care.parameter_groups().values() for p in group}
    assert trainable == {id(p) for p in care.parameters() if p.requires_grad}


def test_architecture_round_trips_through_configs(care: CAREModel) -> None:
    rebuilt = CAREModel.from_configs(**care.architecture())
    rebuilt.load_state_dict(care.state_dict())
    waves, lengths = _batch()
    care.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.layer_features(waves, lengths), care.layer_features(waves, lengths))


def test_wrong_building_blocks_are_refused(tiny_parts: tuple[Path, Path], tmp_path: Path) -> None:
    stable = build_tiny_wavlm(tmp_path / "stable", hidden_size=WIDTH, num_layers=4)
    with pytest.raises(ValueError, match="post-layer-norm"):
        CAREModel.from_pretrained(str(stable), str(tiny_parts[1]))
    wide = build_tiny_roberta(tmp_path / "wide", ["some text"] * 4, hidden_size=2 * WIDTH)
    with pytest.raises(ValueError, match="16 wide but the text model 32"):
        CAREModel.from_pretrained(str(tiny_parts[0]), str(wide), shared_layers=2)
    with pytest.raises(ValueError, match="shared_layers must be between 1 and 3"):
        CAREModel.from_pretrained(str(tiny_parts[0]), str(tiny_parts[1]), shared_layers=4)
