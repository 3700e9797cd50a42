"""Seeing a block mask: drawing it to PNG (`dit-sparse masks`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .utils import atomic_output


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
