"""Figures and videos of a bench run: the speed (or density) / quality Pareto plot, per-frame PSNR curves and
side-by-side videos (dense | method | error heatmap).

Figures use matplotlib's object API on the Agg canvas (no pyplot, no display needed) and are
written whole or not at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..generation import save_frames
from ..utils import atomic_output
from .harness import RunRecord, SettingSummary

# A mean absolute error of this much (a quarter of the [0, 1] range) or more shows as the
# hottest colour of the heatmap; one fixed scale keeps heatmaps of different methods comparable.
ERROR_FULL_SCALE = 0.25


def slug(text: str) -> str:
    """``radial(decay_factor=0.5)`` -> ``radial_decay_factor-0.5``: safe in a file name."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text.replace("=", "-")).strip("_")


def _save(figure: Figure, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")


def _ceiling(values: list[float]) -> float | None:
    """Where infinite values (identical videos) are drawn: above every finite one."""
    if math.inf not in values:
        return None
    return max((v for v in values if math.isfinite(v)), default=0.0) + 10.0


def _drawn(values: list[float], ceiling: float | None) -> list[float]:
    return [ceiling if v == math.inf else v for v in values]


# (summary field, axis label) of each quality panel, drawn when some setting has a value.
QUALITY_AXES = (
    ("psnr", "PSNR vs dense, dB (higher is better)"),
    ("ssim", "SSIM vs dense (higher is better)"),
    ("lpips", "LPIPS vs dense (lower is better)"),
)
# x-axes `pareto_figure` can draw: (summary field, axis label); dense sits at 1.0 on both.
X_AXES = {
    "speedup": ("speedup", "end-to-end speedup vs dense"),
    "density": ("mean_density", "attention density (share of token pairs computed; dense = 1)"),
}


def plot_pareto(
    summaries: list[SettingSummary],
    path: str | Path,
    note: str | None,
    x: str = "speedup",
    highlight: Collection[str] = (),
) -> None:
    """Write `pareto_figure` to ``path``."""
    _save(pareto_figure(summaries, note, x, highlight), path)


def pareto_figure(
    summaries: list[SettingSummary],
    note: str | None,
    x: str = "speedup",
    highlight: Collection[str] = (),
) -> Figure:
    """Quality against ``x`` (``"speedup"``: measured end to end, where the timing means
    something; ``"density"``: the share of attention computed, which holds on any device), one
    labelled point per method setting and one panel per quality metric that has values. The
    settings labelled in ``highlight`` (tuned ones) are drawn as large red stars."""
    field, x_label = X_AXES[x]
    points = [s for s in summaries if not s.setting.is_dense and getattr(s, field) is not None]
    panels = [
        (metric, label)
        for metric, label in QUALITY_AXES
        if any(getattr(s, metric) is not None for s in points)
    ]
    figure = Figure(figsize=(5.5 * max(1, len(panels)), 4.5))
    if not panels:  # nothing was scored: say so instead of drawing empty axes
        figure.text(0.5, 0.5, "no method setting has quality numbers", ha="center", va="center")
    grid = figure.subplots(1, len(panels), squeeze=False)[0] if panels else []
    for axes, (metric, label) in zip(grid, panels):
        axes.axvline(1.0, color="grey", linestyle="--", linewidth=1, label="dense")
        shown = [s for s in points if getattr(s, metric) is not None]
        ceiling = _ceiling([getattr(s, metric) for s in shown])
        values = _drawn([getattr(s, metric) for s in shown], ceiling)
        xs = [getattr(s, field) for s in shown]
        marked = [s.setting.label in highlight for s in shown]
        plain = [(px, py) for px, py, m in zip(xs, values, marked) if not m]
        stars = [(px, py) for px, py, m in zip(xs, values, marked) if m]
        if plain:
            axes.scatter(*zip(*plain), zorder=3)
        if stars:
            axes.scatter(*zip(*stars), marker="*", s=220, color="red", zorder=4, label="tuned")
        for summary, x_value, value in zip(shown, xs, values):
            text = summary.setting.label + (" (inf)" if value == ceiling else "")
            axes.annotate(text, (x_value, value), textcoords="offset points", xytext=(4, 4))
        axes.set_xlabel(x_label)
        axes.set_ylabel(label)
        axes.margins(x=0.2, y=0.15)  # room for the labels beside the points
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    title = "speed vs quality" if x == "speedup" else "attention density vs quality"
    figure.suptitle(title + (f"\n{note}" if note else ""))
    return figure


def plot_psnr_per_frame(records: list[RunRecord], path: str | Path, note: str | None) -> None:
    """PSNR of every frame, one line per method setting (runs of one case)."""
    figure = Figure(figsize=(8, 4.5))
    axes = figure.subplots()
    scored = [r for r in records if r.metrics is not None]
    ceiling = _ceiling([v for r in scored for v in r.metrics.psnr])
    for record in scored:
        values = _drawn(record.metrics.psnr, ceiling)
        axes.plot(range(len(values)), values, marker=".", label=record.setting.label)
    if ceiling is not None:
        axes.axhline(ceiling, color="grey", linestyle=":", linewidth=1, label="inf (identical)")
    axes.set_xlabel("frame")
    axes.set_ylabel("PSNR vs dense, dB")
    axes.grid(alpha=0.3)
    if scored:
        axes.legend(loc="best", fontsize="small")
        axes.set_title(scored[0].case.slug + (f"\n{note}" if note else ""), fontsize="medium")
    _save(figure, path)


def error_heatmap(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """``float [F, H, W, 3]``: mean absolute RGB error per pixel in the inferno colour map."""
    from matplotlib import colormaps

    error = np.abs(test - reference).mean(axis=-1) / ERROR_FULL_SCALE
    return colormaps["inferno"](np.clip(error, 0.0, 1.0))[..., :3].astype(np.float32)


def _label_strip(width: int, height: int, titles: list[str], note: str | None) -> np.ndarray:
    """``float [height, width, 3]``: panel titles (and ``note`` in red) rendered on black."""
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="black")
    canvas = FigureCanvasAgg(figure)
    rows = 2 if note else 1
    size = 0.45 * height / rows * 72 / dpi  # points, so that a line fills ~60% of its row
    for index, title in enumerate(titles):
        x = (index + 0.5) / len(titles)
        figure.text(x, 1 - 0.5 / rows, title, color="white", ha="center", va="center", size=size)
    if note:
        figure.text(0.5, 0.25, note, color="#ff5050", ha="center", va="center", size=size)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0
    strip = np.zeros((height, width, 3), np.float32)  # figure sizes may round by a pixel
    strip[: pixels.shape[0], : pixels.shape[1]] = pixels[:height, :width]
    return strip


def write_side_by_side(
    path: str | Path,
    reference: np.ndarray,
    test: np.ndarray,
    label: str,
    note: str | None = None,
    fps: int = 16,
) -> None:
    """An mp4 of ``dense | label | |error|`` under a title strip, one frame per input frame."""
    frames, height, width, _ = reference.shape
    panels = np.concatenate([reference, test, error_heatmap(reference, test)], axis=2)
    # Even strip height: H.264 in yuv420p needs even frame sizes.
    strip_height = 2 * max(8, round(height / 24)) * (2 if note else 1)
    titles = ["dense", label, f"|error| x{1 / ERROR_FULL_SCALE:g}"]
    strip = _label_strip(3 * width, strip_height, titles, note)
    video = np.concatenate([np.broadcast_to(strip, (frames, *strip.shape)), panels], axis=1)
    save_frames(video, path, fps=fps)
