"""Test cases for the model adapters: one description per adapter family (its tiny preset,
transformer inputs built by hand, the layout they must give, how its pipeline turns guidance
on and off) and helpers. A plain module rather than a conftest: tests/test_*.py import the
top-level ``conftest`` by name, which a second conftest.py would shadow."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from dit_sparse import BlockPlan, TokenLayout
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.methods import SparseMethod, resolve_method
from dit_sparse.pipelines.presets import build_preset

SPARSE_METHODS = ("radial", "svg", "adaspa", "svg2")
FRAME_METHODS = ("radial", "svg")  # built on frames: they refuse single images


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator)


def _hunyuan_inputs(pipe, g: torch.Generator, batch: int) -> dict[str, Any]:
    mask = torch.zeros(batch, 24, dtype=torch.long)
    mask[:, :13] = 1  # 13 valid text tokens, 11 padding
    return dict(
        hidden_states=_randn(g, batch, 4, 3, 8, 8),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=_randn(g, batch, 24, 32),
        encoder_attention_mask=mask,
        pooled_projections=_randn(g, batch, 32),
        guidance=torch.full((batch,), 6000.0),
    )


def _cogvideox_inputs(pipe, g: torch.Generator, batch: int) -> dict[str, Any]:
    # 3 latent frames of 16x16 latents, 2x2 patches; rotary embeddings as the pipeline makes them.
    return dict(
        hidden_states=_randn(g, batch, 3, 4, 16, 16),
        encoder_hidden_states=_randn(g, batch, 20, 32),
        timestep=torch.full((batch,), 500),
        image_rotary_emb=pipe._prepare_rotary_positional_embeddings(128, 128, 3, "cpu"),
    )


def _ltx_inputs(pipe, g: torch.Generator, batch: int) -> dict[str, Any]:
    return dict(
        hidden_states=_randn(g, batch, 3 * 8 * 8, 8),
        encoder_hidden_states=_randn(g, batch, 20, 32),
        timestep=torch.full((batch,), 500.0),
        encoder_attention_mask=torch.ones(batch, 20, dtype=torch.long),
        num_frames=3,
        height=8,
        width=8,
        rope_interpolation_scale=(8 / 25, 32, 32),
    )


def _flux_inputs(pipe, g: torch.Generator, batch: int) -> dict[str, Any]:
    image_ids = pipe._prepare_latent_image_ids(batch, 16, 16, "cpu", torch.float32)
    return dict(
        hidden_states=_randn(g, batch, 16 * 16, 16),
        encoder_hidden_states=_randn(g, batch, 24, 32),
        pooled_projections=_randn(g, batch, 32),
        timestep=torch.full((batch,), 0.5),
        img_ids=image_ids,
        txt_ids=torch.zeros(24, 3),
        guidance=torch.full((batch,), 3.5),
    )


def _wan_inputs(pipe, g: torch.Generator, batch: int) -> dict[str, Any]:
    return dict(
        hidden_states=_randn(g, batch, 16, 3, 16, 16),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=_randn(g, batch, 20, 64),
    )


@dataclass(frozen=True)
class Family:
    """An adapter family as the tests see it.

    ``inputs(pipe, generator, batch)``: transformer forward keywords; ``layout``: what the
    adapter must read from them, computed by hand. ``guided``/``unguided``: pipeline keywords
    with guidance on and off; ``branches``: the cache-context names each produces.
    """

    name: str
    preset: str
    transformer_class: str
    inputs: Callable[[Any, torch.Generator, int], dict[str, Any]]
    layout: TokenLayout
    pipe_size: dict[str, int]
    guided: dict[str, Any]
    unguided: dict[str, Any]
    branches: tuple[tuple[str, ...], tuple[str, ...]]  # (guided, unguided)
    attention_modules: tuple[str, ...]


FAMILIES = {
    family.name: family
    for family in (
        Family(
            name="hunyuan_video",
            preset="tiny-hunyuan",
            transformer_class="HunyuanVideoTransformer3DModel",
            inputs=_hunyuan_inputs,
            layout=TokenLayout(3, 8, 8, text_len=24, text_first=False),
            pipe_size=dict(num_frames=5, height=32, width=32),
            # HunyuanVideo's guidance_scale is embedded; true CFG needs a negative prompt.
            guided=dict(true_cfg_scale=4.0, negative_prompt="blurry"),
            unguided=dict(),
            branches=(("cond", "uncond"), ("cond",)),
            attention_modules=(
                "transformer_blocks.0.attn",
                "transformer_blocks.1.attn",
                "single_transformer_blocks.0.attn",
                "single_transformer_blocks.1.attn",
            ),
        ),
        Family(
            name="cogvideox",
            preset="tiny-cogvideox",
            transformer_class="CogVideoXTransformer3DModel",
            inputs=_cogvideox_inputs,
            layout=TokenLayout(3, 8, 8, text_len=20, text_first=True),
            pipe_size=dict(num_frames=5, height=32, width=32),
            guided=dict(guidance_scale=6.0),
            unguided=dict(guidance_scale=1.0),
            branches=(("cond_uncond",), ("cond_uncond",)),
            attention_modules=("transformer_blocks.0.attn1", "transformer_blocks.1.attn1"),
        ),
        Family(
            name="ltx",
            preset="tiny-ltx",
            transformer_class="LTXVideoTransformer3DModel",
            inputs=_ltx_inputs,
            layout=TokenLayout(3, 8, 8),
            pipe_size=dict(num_frames=9, height=64, width=64),
            guided=dict(guidance_scale=3.0),
            unguided=dict(guidance_scale=1.0),
            branches=(("cond_uncond",), ("cond_uncond",)),
            attention_modules=("transformer_blocks.0.attn1", "transformer_blocks.1.attn1"),
        ),
        Family(
            name="flux",
            preset="tiny-flux",
            transformer_class="FluxTransformer2DModel",
            inputs=_flux_inputs,
            layout=TokenLayout(1, 16, 16, text_len=24, text_first=True),
            pipe_size=dict(height=64, width=64),
            # Flux's guidance_scale is embedded; true CFG needs a negative prompt.
            guided=dict(true_cfg_scale=4.0, negative_prompt="blurry"),
            unguided=dict(),
            branches=(("cond", "uncond"), ("cond",)),
            attention_modules=(
                "transformer_blocks.0.attn",
                "transformer_blocks.1.attn",
                "single_transformer_blocks.0.attn",
                "single_transformer_blocks.1.attn",
            ),
        ),
        Family(
            name="wan",
            preset="tiny-wan",
            transformer_class="WanTransformer3DModel",
            inputs=_wan_inputs,
            layout=TokenLayout(3, 8, 8),
            pipe_size=dict(num_frames=5, height=32, width=32),
            guided=dict(guidance_scale=5.0),
            unguided=dict(guidance_scale=1.0),
            branches=(("cond", "uncond"), ("cond",)),
            attention_modules=tuple(f"blocks.{i}.attn1" for i in range(4)),
        ),
    )
}


# Every test of every family: ``@each_family`` then a ``family`` argument.
each_family = pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))


@functools.cache
def preset_pipe(preset: str):
    """The preset pipeline (fp32, CPU), built once per session; tests leave it clean."""
    pipe = build_preset(preset)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def forward(transformer: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def sparse_method(name: str, **options: Any) -> SparseMethod:
    """The method ``name`` with no dense warm-up (every call sparse), or skip the test if its
    module is not in this checkout yet."""
    try:
        return resolve_method(name, dense_steps=0, dense_layers=0, **options)
    except ImportError as err:
        pytest.skip(f"method {name!r} cannot be imported in this checkout: {err}")


@dataclass
class LayoutSpy(SparseMethod):
    """Dense, recording the layout of every call it sees."""

    name = "layout-spy"

    layouts: list[TokenLayout] = field(default_factory=list)

    def runs_dense(self, call) -> bool:
        self.layouts.append(call.layout)
        return True


@dataclass
class FullPlan(SparseMethod):
    """A sparse-path method whose plan keeps every block: its output is full attention."""

    name = "full-plan"

    def attend(self, q, k, v, call):
        call.info.update(kind="full-plan", density=1.0)
        plan = BlockPlan.dense(1, q.shape[1], q.shape[2], block_q=16, block_k=16)
        return block_sparse_attention(q, k, v, plan, scale=call.scale)
