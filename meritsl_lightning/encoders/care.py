"""CARE (Dutta & Ganapathy, arXiv 2409.05566): the speech encoder whose frozen features MERITS-L uses.

Architecture (as in the authors' code; notes/method.md §3)::

    waveform -> WavLM conv front-end + feature projection + positional conv + layer norm   (frozen)
             -> lower WavLM layers (``shared_layers``, 6 in base)                          (trained: semantic loss only)
             ├─ acoustic branch: the upper WavLM layers -> Linear -> frame-wise descriptors (trained: acoustic loss)
             └─ semantic branch: the upper text-transformer layers (RoBERTa-base 7-12)      (frozen)
                each wrapped by a strided Conv1d down-sampler and a ConvTranspose1d
                up-sampler                                                                  (trained: semantic loss)
                -> mean over time: the utterance vector distilled from a text teacher

Gradient routing: the acoustic branch reads the shared layers' output (and their relative position bias)
detached, so the acoustic loss never reaches the shared layers or the adapters, and the semantic loss never
reaches the acoustic branch. One backward pass over the summed losses gives exactly the authors' routing.
Frozen parts are kept in eval mode (no dropout) while the rest trains.

Downstream features (:meth:`CAREModel.layer_features`): each of the ``1 + shared + branch`` hidden states
(13 in base) of the semantic stream ``[front-end, shared..., semantic...]`` and of the acoustic stream
``[front-end, shared..., acoustic...]`` is mean-pooled over valid frames and concatenated -> ``[B, 13, 2H]``.
The pooled semantic vector of the authors' recipe is the first ``H`` values of the last layer.

The speech model must be a WavLM-base-style (post-layer-norm) model and the text model a BERT-family
encoder (``.encoder.layer``) of the same width.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from data_modules.audio import DEFAULT_SAMPLE_RATE
from meritsl_lightning.encoders.speech import _receptive_field
from meritsl_lightning.nn.pooling import masked_mean


@dataclass
class CAREOutput:
    """What one CARE forward pass returns."""

    acoustic: torch.Tensor  # [B, T, acoustic_dim] frame-wise descriptor predictions
    semantic: torch.Tensor  # [B, H] time-pooled semantic vector (the distillation output)
    frame_mask: torch.Tensor  # [B, T] valid frames
    semantic_layers: list[torch.Tensor] | None = None  # [B, T, H] per hidden state (layer_features only)
    acoustic_layers: list[torch.Tensor] | None = None


class CAREModel(nn.Module):
    """The CARE network (see the module docstring); built from a WavLM and a BERT-family text model."""

    def __init__(
        self,
        speech_model: nn.Module,
        text_model: nn.Module,
        shared_layers: int = 6,
        acoustic_dim: int = 64,
        adapter_kernel: int = 5,
        adapter_stride: int = 3,
    ) -> None:
        super().__init__()
        config = speech_model.config
        if getattr(config, "model_type", "") != "wavlm" or config.do_stable_layer_norm:
            raise ValueError(
                f"CARE builds on a WavLM-base-style (post-layer-norm) speech model; got a {config.model_type} "
                f"with do_stable_layer_norm={getattr(config, 'do_stable_layer_norm', None)}"
            )
        text_layers = getattr(getattr(text_model, "encoder", None), "layer", None)
        if text_layers is None:
            raise ValueError(f"CARE's semantic branch needs a BERT-family text encoder (.encoder.layer); got {type(text_model).__name__}")
        width, text_width = int(config.hidden_size), int(text_model.config.hidden_size)
        if width != text_width:
            raise ValueError(f"the speech model is {width} wide but the text model {text_width}; CARE needs one width (768 in base)")
        total = int(config.num_hidden_layers)
        if not 0 < shared_layers < total:
            raise ValueError(f"shared_layers must be between 1 and {total - 1} (the speech model has {total} layers), got {shared_layers}")
        branch = total - shared_layers
        if len(text_layers) < branch:
            raise ValueError(f"the semantic branch needs {branch} text layers; the text model has {len(text_layers)}")

        self.speech_config = config.to_dict()
        self.text_config = text_model.config.to_dict()
        self.shared_layers, self.branch_layers, self.width = shared_layers, branch, width
        self.acoustic_dim, self.adapter_kernel, self.adapter_stride = acoustic_dim, adapter_kernel, adapter_stride
        self.text_attn_implementation = getattr(text_model.config, "_attn_implementation", None) or "sdpa"
        self.hop = 1
        for stride in config.conv_stride:
            self.hop *= int(stride)
        self.receptive_field = _receptive_field(config.conv_kernel, config.conv_stride)
        self.sample_rate = DEFAULT_SAMPLE_RATE

        # frozen front-end
        self.feature_extractor = speech_model.feature_extractor
        self.feature_projection = speech_model.feature_projection
        self.pos_conv_embed = speech_model.encoder.pos_conv_embed
        self.frontend_norm = speech_model.encoder.layer_norm
        self.frontend_dropout = nn.Dropout(config.hidden_dropout)
        # trained
        self.shared = nn.ModuleList(speech_model.encoder.layers[:shared_layers])
        self.acoustic = nn.ModuleList(speech_model.encoder.layers[shared_layers:])
        self.acoustic_head = nn.Linear(width, acoustic_dim)
        self.down = nn.ModuleList(nn.Conv1d(width, width, adapter_kernel, adapter_stride) for _ in range(branch))
        self.up = nn.ModuleList(
            nn.ConvTranspose1d(width, width, adapter_kernel, adapter_stride, output_padding=adapter_stride - 1)
            for _ in range(branch)
        )
        # frozen text layers
        self.semantic = nn.ModuleList(text_layers[len(text_layers) - branch :])
        for module in self.frozen_modules():
            module.requires_grad_(False)

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, speech_model: str, text_model: str | nn.Module, **options: Any) -> CAREModel:
        """From Hugging Face ids or local folders (WavLM-base and RoBERTa-base in the paper)."""
        from transformers import AutoModel, WavLMModel

        speech = WavLMModel.from_pretrained(speech_model)
        text = text_model if isinstance(text_model, nn.Module) else AutoModel.from_pretrained(text_model, attn_implementation="sdpa")
        return cls(speech, text, **options)

    @classmethod
    def from_configs(cls, speech_config: dict[str, Any], text_config: dict[str, Any], **options: Any) -> CAREModel:
        """The architecture alone (random weights), e.g. to load a CARE checkpoint into."""
        from transformers import AutoConfig, AutoModel, WavLMConfig, WavLMModel

        text_kwargs = {k: v for k, v in text_config.items() if k != "model_type"}
        text = AutoModel.from_config(AutoConfig.for_model(text_config["model_type"], **text_kwargs), attn_implementation="sdpa")
        return cls(WavLMModel(WavLMConfig.from_dict(speech_config)), text, **options)

    def architecture(self) -> dict[str, Any]:
        """Everything ``from_configs`` needs to rebuild this network (stored in CARE checkpoints)."""
        return {
            "speech_config": self.speech_config,
            "text_config": self.text_config,
            "shared_layers": self.shared_layers,
            "acoustic_dim": self.acoustic_dim,
            "adapter_kernel": self.adapter_kernel,
            "adapter_stride": self.adapter_stride,
        }

    def frozen_modules(self) -> list[nn.Module]:
        return [self.feature_extractor, self.feature_projection, self.pos_conv_embed, self.frontend_norm, self.semantic]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role: ``shared`` and ``adapters`` (semantic loss), ``acoustic`` (acoustic loss)."""
        return {
            "shared": list(self.shared.parameters()),
            "adapters": [*self.down.parameters(), *self.up.parameters()],
            "acoustic": [*self.acoustic.parameters(), *self.acoustic_head.parameters()],
        }

    def train(self, mode: bool = True) -> CAREModel:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    # -- shapes -----------------------------------------------------------------------------------------------
    @property
    def num_feature_layers(self) -> int:
        return 1 + self.shared_layers + self.branch_layers

    @property
    def min_samples(self) -> int:
        """Shortest input giving the semantic branch one down-sampled frame."""
        return self.receptive_field + (self.adapter_kernel - 1) * self.hop

    def frame_lengths(self, sample_lengths: torch.Tensor) -> torch.Tensor:
        lengths = sample_lengths.clone()
        for kernel, stride in zip(self.speech_config["conv_kernel"], self.speech_config["conv_stride"], strict=True):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp_min(1)

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, waves: torch.Tensor, lengths: torch.Tensor, return_layers: bool = False) -> CAREOutput:
        """``waves`` [B, N] (zero-padded raw 16 kHz audio), ``lengths`` [B] valid samples."""
        with warnings.catch_warnings():
            # WavLM passes a bool padding mask beside a float position bias; torch flags that, harmlessly.
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            return self._forward(waves, lengths, return_layers)

    def _forward(self, waves: torch.Tensor, lengths: torch.Tensor, return_layers: bool) -> CAREOutput:
        if waves.shape[1] < self.min_samples:
            waves = F.pad(waves, (0, self.min_samples - waves.shape[1]))
        x = self.feature_extractor(waves).transpose(1, 2)
        frames = x.shape[1]
        valid = torch.arange(frames, device=x.device)[None, :] < self.frame_lengths(lengths.to(x.device))[:, None]
        x, _ = self.feature_projection(x)
        x = x * valid.unsqueeze(-1).to(x.dtype)
        x = x + self.pos_conv_embed(x)
        x = self.frontend_dropout(self.frontend_norm(x))
        mask = valid.long()

        shared_states = [x]
        position_bias = None
        for layer in self.shared:
            x, position_bias = layer(x, attention_mask=mask, position_bias=position_bias)
            shared_states.append(x)

        # the acoustic loss must not train the shared layers: the acoustic branch reads them detached
        a, bias = x.detach(), position_bias.detach()
        acoustic_states = []
        for layer in self.acoustic:
            a, bias = layer(a, attention_mask=mask, position_bias=bias)
            acoustic_states.append(a)

        s = x
        semantic_states = []
        for down, layer, up in zip(self.down, self.semantic, self.up, strict=True):
            s = self._semantic_layer(s, valid, down, layer, up)
            semantic_states.append(s)

        return CAREOutput(
            acoustic=self.acoustic_head(a),
            semantic=masked_mean(s, valid),
            frame_mask=valid,
            semantic_layers=[*shared_states, *semantic_states] if return_layers else None,
            acoustic_layers=[*shared_states, *acoustic_states] if return_layers else None,
        )

    def _semantic_layer(self, s: torch.Tensor, valid: torch.Tensor, down: nn.Module, layer: nn.Module, up: nn.Module) -> torch.Tensor:
        frames = s.shape[1]
        s = s * valid.unsqueeze(-1).to(s.dtype)  # padding must not leak into the strided convolution
        short = down(s.transpose(1, 2)).transpose(1, 2)
        short_lengths = (torch.div(valid.sum(1) - self.adapter_kernel, self.adapter_stride, rounding_mode="floor") + 1).clamp(1, short.shape[1])
        short_valid = torch.arange(short.shape[1], device=s.device)[None, :] < short_lengths[:, None]
        out = layer(short, attention_mask=self._text_mask(short_valid, short.dtype))
        out = out[0] if isinstance(out, tuple) else out
        out = up((out * short_valid.unsqueeze(-1).to(out.dtype)).transpose(1, 2)).transpose(1, 2)
        if out.shape[1] < frames:
            out = F.pad(out, (0, 0, 0, frames - out.shape[1]))
        return out[:, :frames]

    def _text_mask(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The padding mask a text layer takes directly: boolean for SDPA, additive for eager attention."""
        keep = valid[:, None, None, :]
        if self.text_attn_implementation == "eager":
            return torch.zeros(keep.shape, dtype=dtype, device=valid.device).masked_fill(~keep, torch.finfo(dtype).min)
        return keep

    def layer_features(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Downstream features ``[B, 1 + shared + branch, 2 * width]``: pooled semantic ++ acoustic streams."""
        out = self(waves, lengths, return_layers=True)
        assert out.semantic_layers is not None and out.acoustic_layers is not None
        pooled = [
            torch.cat([masked_mean(s, out.frame_mask), masked_mean(a, out.frame_mask)], dim=-1)
            for s, a in zip(out.semantic_layers, out.acoustic_layers, strict=True)
        ]
        return torch.stack(pooled, dim=1)
