"""Training data of ``wan-shapes``: procedural clips of a coloured shape moving over a textured
background that wraps around, and the latent statistics the autoencoder normalises with.

Everything is drawn with tensor operations on whatever device the generator lives on, so a
training loop makes its batches on the GPU as it goes. A clip's randomness beyond its named
attributes (exact speed, size, start, drift, tones, texture scale) comes from the generator.

Motion: the frame is a torus. The shape starts anywhere and moves at a constant velocity, the
named way plus a small sideways drift (at most a third of the speed) that keeps tracks from
being axis-aligned; what leaves through one edge comes back through the opposite one. So where
a shape is says nothing about which way it goes, at any frame: only the prompt does. (With
walls, a shape's direction depends on where it is, since it bounces off them, and Wan knows
positions only relative to each other (RoPE), so it cannot place a shape by its prompt: models
trained on bouncing shapes moved them away from the nearer wall, whatever the prompt said.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from dit_sparse.pipelines.shapes import PixelSpaceVideoAutoencoder
from dit_sparse.synthetic.motion import wrapped
from dit_sparse.synthetic.vocabulary import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    SPEEDS,
    ClipAttributes,
    vocabulary_size,
)

_DIRECTION_STEPS = torch.tensor(list(DIRECTIONS.values()), dtype=torch.float32)
_SPEED_RANGES = torch.tensor(list(SPEEDS.values()), dtype=torch.float32)
_PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
_CIRCLE, _SQUARE, _TRIANGLE = (SHAPES.index(s) for s in ("circle", "square", "triangle"))
_STRIPED, _CHECKERED, _DOTTED = (BACKGROUNDS.index(b) for b in ("striped", "checkered", "dotted"))
_RADIUS_RANGE = (0.08, 0.13)  # shape size (circle radius) in frame widths
_MAX_DRIFT = 1.0 / 3.0  # sideways speed as a share of the named speed
# Attribute fields in `ClipAttributes.index` order (colour most significant) and their sizes.
_FIELDS = ("colour", "shape", "direction", "speed", "background")
_SIZES = (len(COLOURS), len(SHAPES), len(DIRECTIONS), len(SPEEDS), len(BACKGROUNDS))


class RenderedClips(NamedTuple):
    """Drawn clips: ``video`` float32 ``[B, 3, F, H, W]`` in [-1, 1], and ``motion`` float32
    ``[B, 2, F, H, W]``, the shape's (x, y) step per frame in pixels times its coverage of each
    pixel (zero on the background), what the autoencoder's motion channels hold."""

    video: torch.Tensor
    motion: torch.Tensor


@dataclass(frozen=True)
class ClipBatch:
    """Attribute indices of a batch of clips, int64 ``[B]`` each, in the vocabulary's order."""

    colour: torch.Tensor
    shape: torch.Tensor
    direction: torch.Tensor
    speed: torch.Tensor
    background: torch.Tensor

    def __len__(self) -> int:
        return self.colour.shape[0]

    @property
    def index(self) -> torch.Tensor:
        """int64 ``[B]``: each clip's `ClipAttributes.index` (to look up its prompt embedding)."""
        index = torch.zeros_like(self.colour)
        for name, size in zip(_FIELDS, _SIZES):
            index = index * size + getattr(self, name)
        return index

    def attributes(self) -> list[ClipAttributes]:
        return [ClipAttributes.from_index(int(i)) for i in self.index.tolist()]

    def prompts(self) -> list[str]:
        return [a.prompt for a in self.attributes()]

    @classmethod
    def from_attributes(
        cls, attributes: list[ClipAttributes], device: torch.device | str = "cpu"
    ) -> ClipBatch:
        index = torch.tensor([a.index for a in attributes], dtype=torch.long, device=device)
        return cls.from_index(index)

    @classmethod
    def from_index(cls, index: torch.Tensor) -> ClipBatch:
        """The batch whose clips have the vocabulary indices ``index`` (int64 ``[B]``)."""
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < vocabulary_size():
            raise ValueError(f"attribute indices must be in [0, {vocabulary_size()})")
        digits = {}
        for name, size in reversed(list(zip(_FIELDS, _SIZES))):
            index, digits[name] = index.div(size, rounding_mode="floor"), index.remainder(size)
        return cls(**digits)


def sample_clip_batch(count: int, generator: torch.Generator) -> ClipBatch:
    """``count`` clips with every attribute drawn uniformly, on the generator's device."""
    index = torch.randint(vocabulary_size(), (count,), generator=generator, device=generator.device)
    return ClipBatch.from_index(index)


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator):
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def _tracks(batch: ClipBatch, frames: int, height: int, width: int, g: torch.Generator):
    """Centres ``[B, F]`` (x, y) in pixels, wrapped into the frame; radii ``[B]``; and each
    clip's constant step ``[B, 2]`` (x, y) in pixels per frame."""
    device = g.device
    count = len(batch)
    size = float(min(height, width))
    radius = _uniform((count,), *_RADIUS_RANGE, g) * size
    low_high = _SPEED_RANGES.to(device)[batch.speed]
    speed = low_high[:, 0] + (low_high[:, 1] - low_high[:, 0]) * torch.rand(
        count, generator=g, device=device
    )
    direction = _DIRECTION_STEPS.to(device)[batch.direction]  # [B, 2]
    horizontal = direction[:, 0] != 0
    extent = torch.where(horizontal, float(width), float(height))  # along the motion
    speed_px = speed * extent
    drift = _uniform((count,), -_MAX_DRIFT, _MAX_DRIFT, g) * speed_px
    sideways = torch.stack([-direction[:, 1], direction[:, 0]], 1)
    step = direction * speed_px[:, None] + sideways * drift[:, None]
    start = torch.rand(count, 2, generator=g, device=device)
    start = start * torch.tensor([float(width), float(height)], device=device)
    t = torch.arange(frames, device=device, dtype=torch.float32)
    x = (start[:, :1] + step[:, :1] * t).remainder(float(width))
    y = (start[:, 1:] + step[:, 1:] * t).remainder(float(height))
    return x, y, radius, step


def _shape_alpha(batch: ClipBatch, x, y, radius, height: int, width: int) -> torch.Tensor:
    """Coverage ``[B, F, H, W]`` in [0, 1], antialiased over about one pixel."""
    device = x.device
    px = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    py = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    dx = wrapped(px[None, None, None, :] - x[:, :, None, None], width)
    dy = wrapped(py[None, None, :, None] - y[:, :, None, None], height)
    r = radius[:, None, None, None]
    circle = torch.sqrt(dx.square() + dy.square()) - r
    # Squares and triangles are scaled to roughly the circle's area.
    square = torch.maximum(dx.abs(), dy.abs()) - 0.89 * r
    # An equilateral triangle, apex up: the largest of its three edge distances.
    cos30 = math.sqrt(3.0) / 2.0
    triangle = (
        torch.maximum(torch.maximum(cos30 * dx - 0.5 * dy, -cos30 * dx - 0.5 * dy), dy) - 0.7 * r
    )
    shape = batch.shape[:, None, None, None]
    distance = torch.where(
        shape == _CIRCLE, circle, torch.where(shape == _SQUARE, square, triangle)
    )
    return torch.clamp(0.5 - distance, 0.0, 1.0)


def _backgrounds(batch: ClipBatch, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """Static low-saturation textures ``[B, 3, H, W]`` in [0, 1]."""
    device = g.device
    count = len(batch)
    px = torch.arange(width, device=device, dtype=torch.float32)[None, None, :] + 0.5
    py = torch.arange(height, device=device, dtype=torch.float32)[None, :, None] + 0.5
    period = _uniform((count, 1, 1), 6.0, 14.0, g)
    phase = _uniform((count, 2, 1, 1), 0.0, 1.0, g)
    angle = _uniform((count, 1, 1), 0.0, math.pi, g)
    coordinate = (px * torch.cos(angle) + py * torch.sin(angle)) / period + phase[:, 0]
    stripes = 0.5 + 0.5 * torch.tanh(3.0 * torch.sin(2 * math.pi * coordinate))
    cells = torch.floor(px / period + phase[:, 0]) + torch.floor(py / period + phase[:, 1])
    checks = cells.remainder(2.0)
    nearest_x = (px / period + phase[:, 0]).remainder(1.0) - 0.5
    nearest_y = (py / period + phase[:, 1]).remainder(1.0) - 0.5
    dots = torch.clamp(
        0.5 + period * (0.25 - torch.sqrt(nearest_x.square() + nearest_y.square())), 0.0, 1.0
    )
    kind = batch.background[:, None, None]
    pattern = torch.where(
        kind == _STRIPED,
        stripes,
        torch.where(
            kind == _CHECKERED, checks, torch.where(kind == _DOTTED, dots, torch.zeros_like(dots))
        ),
    )
    # Two tones: a grey with a faint tint, and the same shifted lighter or darker.
    base = _uniform((count, 1, 1, 1), 0.15, 0.5, g) + _uniform((count, 3, 1, 1), -0.05, 0.05, g)
    contrast = _uniform((count, 1, 1, 1), 0.12, 0.25, g)
    contrast = contrast * torch.where(_uniform((count, 1, 1, 1), 0.0, 1.0, g) < 0.5, -1.0, 1.0)
    grain = 0.02 * torch.randn((count, 1, height, width), generator=g, device=device)
    return torch.clamp(base + contrast * pattern[:, None] + grain, 0.0, 1.0)


def render_clips(
    batch: ClipBatch,
    frames: int,
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    shape: bool = True,
) -> RenderedClips:
    """Draw ``batch`` (`RenderedClips`: the video and its motion field) on the generator's
    device.

    ``shape=False`` draws the same clips without their shape (the generator advances alike),
    so the difference of the two is the shape's own signal.
    """
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"need frames >= 1 and height, width >= 8; got {frames}x{height}x{width}")
    device = generator.device
    background = _backgrounds(batch, height, width, generator)
    x, y, radius, step = _tracks(batch, frames, height, width, generator)
    alpha = _shape_alpha(batch, x, y, radius, height, width)[:, None]  # [B, 1, F, H, W]
    alpha = alpha if shape else torch.zeros_like(alpha)
    count = len(batch)
    # Each clip's colour varies a little in brightness and hue around its palette entry.
    colour = _PALETTE.to(device)[batch.colour] * _uniform((count, 1), 0.85, 1.0, generator)
    colour = torch.clamp(colour + _uniform((count, 3), -0.04, 0.04, generator), 0.0, 1.0)
    video = background[:, :, None] * (1 - alpha) + colour[:, :, None, None, None] * alpha
    motion = step[:, :, None, None, None] * alpha
    return RenderedClips(video * 2.0 - 1.0, motion)


def to_frames(videos: torch.Tensor) -> torch.Tensor:
    """``[B, 3, F, H, W]`` in [-1, 1] (as drawn) to ``[B, F, H, W, 3]`` in [0, 1] (as generated)."""
    return ((videos.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1)


def latent_statistics(
    autoencoder: PixelSpaceVideoAutoencoder,
    videos: torch.Tensor,
    motion: torch.Tensor | None = None,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``videos``' raw latents, rounded to 1e-4
    (``motion``: their motion fields, for an autoencoder with motion channels)."""
    latents = autoencoder.encode(videos.float(), motion).transpose(0, 1).flatten(1)
    mean, std = latents.mean(1), latents.std(1)
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]
