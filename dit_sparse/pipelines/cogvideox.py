"""CogVideoX 1.0 and 1.5 (`CogVideoXTransformer3DModel`): joint attention, text first.

Each block's ``attn1`` attends over ``[text, video]``. Its processor calls
``F.scaled_dot_product_attention`` itself, with no mask: the prompt's padding tokens (T5,
226 of them in all) are attended like any other text token. CogVideoX 1.5 also patches time
(``patch_size_t = 2``), on latents the pipeline pads to an even number of frames.
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


class CogVideoXAdapter:
    """Text-to-video and image-to-video CogVideoX; text tokens before the video tokens."""

    transformer_class = "CogVideoXTransformer3DModel"
    family = "cogvideox"
    # The VAE turns 4n + 1 frames into n + 1 latents; 8x VAE times 2x patches: 16 pixels.
    size_rule = VideoSizeRule(frame_step=4, spatial_multiple=16)
    defaults = PipelineDefaults(frames=49, height=480, width=720, steps=50)

    def attention_modules(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return block_modules(transformer, ("transformer_blocks", "attn1"))

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout:
        hidden = forward_argument(args, kwargs, "hidden_states", 0)
        text = forward_argument(args, kwargs, "encoder_hidden_states", 1)
        p, p_t = transformer.config.patch_size, transformer.config.patch_size_t or 1
        _, frames, _, height, width = hidden.shape  # CogVideoX latents are [B, F, C, H, W]
        return TokenLayout(
            frames // p_t, height // p, width // p, text_len=text.shape[1], text_first=True
        )


register_adapter(CogVideoXAdapter())
