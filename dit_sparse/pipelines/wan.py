"""Wan 2.1 / 2.2 (`WanTransformer3DModel`): video self-attention is each block's ``attn1``."""

from __future__ import annotations

from typing import Any

import torch

from ..layout import TokenLayout
from .registry import VideoSizeRule, forward_argument, register_adapter


class WanAdapter:
    """Text-to-video and image-to-video Wan; no text tokens in self-attention."""

    transformer_class = "WanTransformer3DModel"
    family = "wan"
    size_rule = VideoSizeRule(frame_step=4, spatial_multiple=16)

    def attention_modules(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return [(f"blocks.{i}.attn1", block.attn1) for i, block in enumerate(transformer.blocks)]

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout:
        hidden = forward_argument(args, kwargs, "hidden_states", 0)
        p_t, p_h, p_w = transformer.config.patch_size
        _, _, frames, height, width = hidden.shape
        return TokenLayout(frames // p_t, height // p_h, width // p_w)


register_adapter(WanAdapter())
