"""Does a clip show what its prompt says? The prompted colour, moving the prompted way.

The check follows the shape by colour alone: pixels saturated enough to be a shape, whose hue
is nearest the prompted palette entry, form a mask per frame. The shape is where that mask is
densest (`blob_track`): a frame shows it when some window a tenth of the frame wide is at
least half full, so colour noise scattered over a frame never counts, and its position is the
centroid of the mask near that window. Frames wrap around (the world is a torus: what leaves
through one edge comes back through the opposite one, as ``training/shapes_data.py`` draws
it), so the track is unwrapped (`unwrapped`) before a line fitted to its positions over the
first third of the clip gives the motion: the clip passes when it moved at least ``min_shift``
pixels the prompted way and more that way than sideways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .vocabulary import COLOURS, DIRECTIONS, parse_prompt

_PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
# Backgrounds stay under about 0.15 saturation (max - min of RGB); shapes are far above.
_MIN_SATURATION = 0.3
# A shape's radius is at least 0.08 of the frame, so it fills a window a tenth of the frame
# wide; scattered pixels of its colour (colour noise, speckles a model leaves) fill little of
# any window. Pixels within a fifth of the frame of the fullest window make up the shape.
_WINDOW_SHARE = 0.1
_MIN_DENSITY = 0.5
_RADIUS_SHARE = 0.2


def wrapped(offset: torch.Tensor, extent: float | torch.Tensor) -> torch.Tensor:
    """Offsets on a ring of ``extent`` pixels, folded into ``[-extent/2, extent/2)``."""
    return (offset + extent / 2).remainder(extent) - extent / 2


@dataclass(frozen=True)
class MotionVerdict:
    """The outcome of `check_motion` for one clip.

    ``along`` and ``across`` are the fitted displacement, in pixels, over the checked window:
    along the prompted direction (positive = the prompted way) and perpendicular to it.
    """

    prompt: str
    passed: bool
    reason: str
    visible_frames: int
    window_frames: int
    along: float
    across: float


def colour_mask(frames: torch.Tensor, colour: str) -> torch.Tensor:
    """bool ``[F, H, W]``: pixels of ``frames`` (``[F, H, W, 3]`` in [0, 1]) of ``colour``."""
    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    frames = frames.float()
    brightest = frames.amax(-1, keepdim=True)
    saturated = (brightest - frames.amin(-1, keepdim=True)).squeeze(-1) >= _MIN_SATURATION
    # Compare hues with brightness divided out, so a dim red is still red.
    hue = frames / brightest.clamp_min(1e-3)
    palette = _PALETTE.to(frames.device)
    palette = palette / palette.amax(-1, keepdim=True)
    nearest = torch.cdist(hue.reshape(-1, 3), palette).argmin(-1).reshape(saturated.shape)
    return saturated & (nearest == list(COLOURS).index(colour))


def min_blob_pixels(height: int, width: int) -> int:
    """The fewest mask pixels near its densest window that count as a shape in a frame:
    0.2% of the frame, at least 4 (a shape covers far more; colour speckles less)."""
    return max(4, round(0.002 * height * width))


def blob_track(mask: torch.Tensor, min_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``[F, 2]`` (x, y in pixels) of the densest blob of ``mask`` ``[F, H, W]``,
    and which frames show one: the blob's densest window at least half full and at least
    ``min_pixels`` pixels near it. Positions of other frames are meaningless.

    The position is the centroid of the mask pixels within a fifth of the frame of the
    densest window's centre, so stray pixels elsewhere do not pull it.
    """
    frames, height, width = mask.shape
    size = min(height, width)
    window = max(3, round(_WINDOW_SHARE * size) | 1)
    weight = mask.float()
    # The frame is a torus: a shape leaving through one edge is whole again
    # across it, so windows and distances wrap around.
    pad = window // 2
    density = F.avg_pool2d(F.pad(weight[:, None], (pad, pad, pad, pad), mode="circular"), window, 1)
    peak, index = density[:, 0].flatten(1).max(-1)
    xs = torch.arange(width, dtype=torch.float32, device=mask.device) + 0.5
    ys = torch.arange(height, dtype=torch.float32, device=mask.device) + 0.5
    px = xs[index % width][:, None]
    py = ys[index // width][:, None]
    ox, oy = wrapped(xs[None] - px, width), wrapped(ys[None] - py, height)  # [F, W], [F, H]
    near = ox[:, None, :].square() + oy[:, :, None].square()
    weight = weight * (near <= (_RADIUS_SHARE * size) ** 2)
    area = weight.sum((1, 2))
    x = px[:, 0] + (weight.sum(1) * ox).sum(-1) / area.clamp_min(1.0)
    y = py[:, 0] + (weight.sum(2) * oy).sum(-1) / area.clamp_min(1.0)
    visible = (peak >= _MIN_DENSITY) & (area >= min_pixels)
    return torch.stack([x.remainder(width), y.remainder(height)], -1), visible


def unwrapped(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Positions ``[N, 2]`` (x, y) on the torus to a continuous track: each step between
    consecutive points is taken as the shortest one around the ring."""
    extent = torch.tensor([float(width), float(height)])
    steps = wrapped(points.diff(dim=0), extent)
    return torch.cat([points[:1], points[:1] + steps.cumsum(0)], 0)


def check_motion(
    frames: np.ndarray | torch.Tensor,
    prompt: str,
    *,
    window: float = 1.0 / 3.0,
    min_shift: float = 1.0,
) -> MotionVerdict:
    """Whether ``frames`` (``[F, H, W, 3]`` in [0, 1]) show ``prompt``'s colour and direction.

    ``window`` is the leading share of the clip checked (at least 3 frames); the shape must be
    visible in at least half of those frames and move at least ``min_shift`` pixels along the
    prompted direction, and more along it than across it.
    """
    video = torch.as_tensor(np.asarray(frames)) if not torch.is_tensor(frames) else frames
    if video.dim() != 4 or video.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got {tuple(video.shape)}")
    attributes = parse_prompt(prompt)
    count, height, width = video.shape[:3]
    last = min(count - 1, max(2, round((count - 1) * window)))
    mask = colour_mask(video[: last + 1], attributes.colour)
    centres, visible = blob_track(mask, min_blob_pixels(height, width))
    seen = int(visible.sum())
    verdict = {"prompt": prompt, "visible_frames": seen, "window_frames": last + 1}
    if seen < max(2, (last + 2) // 2):
        return MotionVerdict(
            passed=False, reason=f"no {attributes.colour} shape", along=0.0, across=0.0, **verdict
        )
    t = torch.arange(last + 1, dtype=torch.float32)[visible]
    points = unwrapped(centres[visible].cpu(), height, width)
    t_centred = t - t.mean()
    velocity = (t_centred[:, None] * (points - points.mean(0))).sum(0) / t_centred.square().sum()
    direction = torch.tensor(DIRECTIONS[attributes.direction], dtype=torch.float32)
    side = torch.stack([-direction[1], direction[0]])
    along = float(velocity @ direction) * last
    across = float(velocity @ side) * last
    if along < min_shift:
        reason = f"moved {along:.1f} px {attributes.direction}, need >= {min_shift}"
    elif along <= abs(across):
        reason = f"moved more sideways ({abs(across):.1f} px) than {attributes.direction}"
    else:
        reason = "ok"
    return MotionVerdict(
        passed=reason == "ok", reason=reason, along=along, across=across, **verdict
    )


def pass_rate(verdicts: list[MotionVerdict]) -> float:
    """Share of verdicts that passed (0 for none)."""
    return sum(v.passed for v in verdicts) / len(verdicts) if verdicts else 0.0
