"""Flux (`FluxTransformer2DModel`): images, joint attention over text then image tokens.

Every dual-stream block (``transformer_blocks.i.attn``) and single-stream block
(``single_transformer_blocks.i.attn``) attends over ``[text, image]``, with no mask (the T5
prompt's padding is attended). An image is a layout of one frame: methods built on frames
(Radial, Sparse VideoGen) refuse it; AdaSpa takes it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..layout import TokenLayout
from .registry import (
    PipelineDefaults,
    VideoSizeRule,
    block_modules,
    forward_argument,
    register_adapter,
)


class FluxAdapter:
    """FLUX.1 dev / schnell and the pipelines that keep one image grid (Fill, Control)."""

    transformer_class = "FluxTransformer2DModel"
    family = "flux"
    # 8x VAE times 2x2 packing.
    size_rule = VideoSizeRule(spatial_multiple=16, single_frame=True)
    defaults = PipelineDefaults(frames=1, height=1024, width=1024, steps=28)

    def attention_modules(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return block_modules(
            transformer, ("transformer_blocks", "attn"), ("single_transformer_blocks", "attn")
        )

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout:
        hidden = forward_argument(args, kwargs, "hidden_states", 0)
        text = forward_argument(args, kwargs, "encoder_hidden_states", 1)
        image_ids = forward_argument(args, kwargs, "img_ids", 4)
        # The packed tokens are row-major; img_ids holds each one's (0, row, column).
        rows, cols = (int(n) + 1 for n in image_ids.reshape(-1, 3)[:, 1:].amax(0).round().tolist())
        if rows * cols != hidden.shape[1]:
            raise ValueError(
                f"Flux: img_ids span a {rows}x{cols} grid but the transformer got "
                f"{hidden.shape[1]} image tokens; dit_sparse takes one image grid (not the "
                "reference-image tokens of Flux Kontext)"
            )
        return TokenLayout(1, rows, cols, text_len=text.shape[1], text_first=True)


register_adapter(FluxAdapter())
