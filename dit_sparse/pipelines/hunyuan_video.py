"""HunyuanVideo (`HunyuanVideoTransformer3DModel`) and HunyuanVideo 1.5
(`HunyuanVideo15Transformer3DModel`): joint attention over video tokens, then text tokens.

Each block's processor appends the text tokens after the video tokens, in the dual-stream
blocks (``transformer_blocks.i.attn``) and in HunyuanVideo's single-stream blocks
(``single_transformer_blocks.i.attn``) alike. The prompt is padded to a fixed length, valid
tokens first, and the model passes a boolean mask that hides the padding: from every query
in HunyuanVideo (``[B, 1, 1, S]``), from queries and keys in 1.5 (``[B, 1, S, S]``). The
runtime runs the method on the valid tokens only (`dit_sparse.text_padding`).
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


def _video_grid(transformer: torch.nn.Module, hidden: torch.Tensor) -> tuple[int, int, int]:
    """Tokens along (frames, height, width) of a ``[B, C, F, H, W]`` latent after patching."""
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
    _, _, frames, height, width = hidden.shape
    return frames // p_t, height // p, width // p


class HunyuanVideoAdapter:
    """HunyuanVideo T2V and I2V: 20 dual-stream and 40 single-stream blocks, text last."""

    transformer_class = "HunyuanVideoTransformer3DModel"
    family = "hunyuan_video"
    size_rule = VideoSizeRule(frame_step=4, spatial_multiple=16)
    defaults = PipelineDefaults(frames=129, height=720, width=1280, steps=50)

    def attention_modules(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return block_modules(
            transformer, ("transformer_blocks", "attn"), ("single_transformer_blocks", "attn")
        )

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout:
        hidden = forward_argument(args, kwargs, "hidden_states", 0)
        text = forward_argument(args, kwargs, "encoder_hidden_states", 2)
        return TokenLayout(*_video_grid(transformer, hidden), text_len=text.shape[1])


class HunyuanVideo15Adapter:
    """HunyuanVideo 1.5: one stream of blocks; the text segment holds the image-embedding,
    ByT5 and Qwen tokens (valid ones first), after the video."""

    transformer_class = "HunyuanVideo15Transformer3DModel"
    family = "hunyuan_video15"
    size_rule = VideoSizeRule(frame_step=4, spatial_multiple=16)

    def attention_modules(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        return block_modules(transformer, ("transformer_blocks", "attn"))

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout:
        hidden = forward_argument(args, kwargs, "hidden_states", 0)
        segments = [
            forward_argument(args, kwargs, name, position)
            for name, position in (
                ("encoder_hidden_states", 2),
                ("encoder_hidden_states_2", 5),
                ("image_embeds", 7),
            )
        ]
        text_len = sum(segment.shape[1] for segment in segments)
        return TokenLayout(*_video_grid(transformer, hidden), text_len=text_len)


register_adapter(HunyuanVideoAdapter())
register_adapter(HunyuanVideo15Adapter())
