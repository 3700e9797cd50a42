"""Seeing a block mask: drawing it to PNG, and the token layout of a model at a pixel size."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .layout import TokenLayout
from .pipelines.registry import size_rule_for
from .utils import atomic_output

# family -> (pixel frames per latent frame, pixels per token side): VAE factor x patch size.
TOKEN_FACTORS: dict[str, tuple[int, int]] = {
    "wan": (4, 16),  # VAE 4x8x8, patch (1, 2, 2)
}


def layout_for(
    family: str,
    frames: int,
    height: int,
    width: int,
    *,
    text_len: int = 0,
    text_first: bool = False,
) -> TokenLayout:
    """The self-attention token layout of ``family`` generating ``frames`` x ``height`` x
    ``width`` pixels: for Wan ``(frames - 1) // 4 + 1`` latent frames of
    ``height // 16`` x ``width // 16`` tokens (81 x 480 x 832 -> 21 x 30 x 52).

    ``text_len``/``text_first`` place text tokens for joint-attention models.
    """
    if family not in TOKEN_FACTORS:
        raise ValueError(f"unknown model family {family!r}; accepted: {', '.join(TOKEN_FACTORS)}")
    rule = size_rule_for(family)
    if rule is not None:
        rule.check(frames, height, width)
    frame_step, pixels = TOKEN_FACTORS[family]
    return TokenLayout(
        (frames - 1) // frame_step + 1,
        height // pixels,
        width // pixels,
        text_len=text_len,
        text_first=text_first,
    )


def draw_block_mask(
    mask: torch.Tensor,
    path: str | os.PathLike,
    title: str,
    *,
    density: float | None = None,
) -> Path:
    """Draw ``bool[nq, nk]`` (query blocks down, key blocks across) to the PNG ``path``.

    The title gets a second line with the density: ``density`` if given (e.g. the token-pair
    share of a plan with a ragged last block), else the share of blocks kept. The file is
    replaced only once the whole image is written.
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        raise TypeError(f"mask must be a 2-d bool tensor, got {_describe(mask)}")
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    nq, nk = mask.shape
    kept = int(mask.sum())
    share = kept / mask.numel() if density is None else density
    # At least one pixel per block across the axes (about 5.8 of the 7.5 inches), so no
    # block is lost to resampling.
    fig = Figure(figsize=(7.5, 7.5), dpi=max(100, -(-max(nq, nk) // 5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(
        mask.cpu().numpy(),
        cmap=ListedColormap(["#ffffff", "#1f3b73"]),
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_xlabel(f"key block ({nk})")
    ax.set_ylabel(f"query block ({nq})")
    ax.set_title(f"{title}\ndensity {share:.3f} ({kept:,} of {mask.numel():,} blocks computed)")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return Path(path)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dim()}-d {value.dtype} tensor"
    return type(value).__name__
