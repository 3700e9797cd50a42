"""Offline presets: pipelines built from small configs in-process, with random weights.

A preset with random weights is for smoke tests and speed measurements, never for looks or
quality claims: its videos are noise-like, whatever the method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .text import HashTextEncoder, HashTokenizer


@dataclass(frozen=True)
class Preset:
    """A named pipeline recipe, with the video size it is meant to run at."""

    name: str
    family: str
    description: str
    build: Callable[[], object]
    frames: int
    height: int
    width: int
    steps: int
    random_weights: bool = True


def _tiny_wan():
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=32,
        in_channels=16,
        out_channels=16,
        text_dim=64,
        freq_dim=64,
        ffn_dim=256,
        num_layers=4,
        rope_max_seq_len=256,
    )
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    return WanPipeline(
        tokenizer=HashTokenizer(),
        text_encoder=HashTextEncoder(dim=64),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )


PRESETS: dict[str, Preset] = {
    "tiny-wan": Preset(
        name="tiny-wan",
        family="wan",
        description="WanPipeline, 4 layers x 4 heads x 32 dims, random weights (smoke tests, speed)",
        build=_tiny_wan,
        frames=17,
        height=64,
        width=64,
        steps=4,
    ),
}


def build_preset(name: str) -> object:
    """Build the preset pipeline ``name`` in float32 on the CPU (move it with ``.to``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name].build()
