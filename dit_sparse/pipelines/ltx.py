"""LTX-Video (`LTXVideoTransformer3DModel`): video self-attention in ``attn1``, text only in the
cross-attention ``attn2``, which dit_sparse leaves alone.

The latents reach the transformer already packed into ``[B, S, C]`` tokens, so the token grid
comes from the ``num_frames``, ``height`` and ``width`` arguments (latent sizes, which are the
token grid: every released LTX-Video has 1x1x1 patches).
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


class LTXVideoAdapter:
    """LTXPipeline and LTXImageToVideoPipeline; no text tokens in self-attention."""

    transformer_class = "LTXVideoTransformer3DModel"
    family = "ltx"
    # The VAE compresses 32x in space and 8x in time (8n + 1 frames -> n + 1 latents).
    size_rule = VideoSizeRule(frame_step=8, spatial_multiple=32)
    defaults = PipelineDefaults(frames=161, height=512, width=704, steps=50)

    def attention_modules(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return block_modules(transformer, ("transformer_blocks", "attn1"))

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout:
        hidden = forward_argument(args, kwargs, "hidden_states", 0)
        grid = [
            forward_argument(args, kwargs, name, position)
            for name, position in (("num_frames", 4), ("height", 5), ("width", 6))
        ]
        if any(size is None for size in grid):
            raise ValueError(
                "LTX-Video: dit_sparse reads the token grid from the transformer's num_frames, "
                "height and width arguments; this call passes video_coords instead "
                "(LTXConditionPipeline), whose tokens need not form one grid. Supported: "
                "LTXPipeline, LTXImageToVideoPipeline."
            )
        layout = TokenLayout(*(int(size) for size in grid))
        if layout.seq_len != hidden.shape[1]:
            raise ValueError(
                f"LTX-Video: num_frames x height x width = {layout.describe()}, but the "
                f"transformer got {hidden.shape[1]} tokens"
            )
        return layout


register_adapter(LTXVideoAdapter())
