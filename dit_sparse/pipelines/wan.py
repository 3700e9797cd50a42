"""Wan 2.1 / 2.2 (`WanTransformer3DModel`): video self-attention is each block's ``attn1``."""

from __future__ import annotations

from typing import Any

import torch

from ..layout import TokenLayout
from .registry import (
    PipelineDefaults,
    TokenFactors,
    VideoSizeRule,
    forward_argument,
    register_adapter,
)

# Wan's VAE makes one latent frame of 4 pixel frames (the first alone) and one latent of 8x8
# pixels; the transformer's (1, 2, 2) patches make one token of 2x2 latents.
_TOKENS = TokenFactors(frames=4, pixels=16)


class WanAdapter:
    """Text-to-video and image-to-video Wan; no text tokens in self-attention."""

    transformer_class = "WanTransformer3DModel"
    family = "wan"
    size_rule = VideoSizeRule(frame_step=_TOKENS.frames, spatial_multiple=_TOKENS.pixels)
    token_factors = _TOKENS
    defaults = PipelineDefaults(frames=81, height=480, width=832, steps=50)

    def attention_modules(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return [(f"blocks.{i}.attn1", block.attn1) for i, block in enumerate(transformer.blocks)]

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout:
        hidden = forward_argument(args, kwargs, "hidden_states", 0)
        p_t, p_h, p_w = transformer.config.patch_size
        _, _, frames, height, width = hidden.shape
        return TokenLayout(frames // p_t, height // p_h, width // p_w)

    def cache_fields(self, config_name: str) -> dict[str, Any]:
        """Fields diffusers' step-cache configs need for Wan (`dit_sparse.caches`).

        TaylorSeer's default patterns fully match modules ending in ``attn``; Wan's are
        ``attn1`` (self) and ``attn2`` (cross), so it would hook nothing. FasterCache splits
        a forward's batch into unconditional and conditional halves unless told the model is
        guidance-distilled; Wan's pipelines run the two branches as separate forwards, so that
        split fails (diffusers 0.42.1), and its unconditional-branch skipping stays off.
        """
        if config_name == "TaylorSeerCacheConfig":
            return dict(cache_identifiers=[r"blocks\.\d+\.attn1", r"blocks\.\d+\.attn2"])
        if config_name == "FasterCacheConfig":
            return dict(is_guidance_distilled=True)
        return {}


register_adapter(WanAdapter())
