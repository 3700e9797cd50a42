"""Does a clip show what its prompt says? The prompted colour, moving the prompted way.

The check follows the shape by colour alone: pixels saturated enough to be a shape, whose hue
is nearest the prompted palette entry, form a mask per frame; the mask's centroid is the
shape's position. A frame counts only where the mask looks like one shape: big enough, at most
a tenth of the frame, and compact (its pixels' RMS distance from the centroid under 0.15 of
the frame), so colour noise scattered over a frame never passes. A line fitted to the centroids over the first third of the clip (where a
training clip never bounces, see `clips`) gives the motion: the clip passes when it moved at
least ``min_shift`` pixels the prompted way and more that way than sideways.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .vocabulary import COLOURS, DIRECTIONS, parse_prompt

_PALETTE = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
# Backgrounds stay under about 0.15 saturation (max - min of RGB); shapes are far above.
_MIN_SATURATION = 0.3
# A drawn shape covers 1% to 6% of the frame, with an RMS radius under 0.1 of its side.
_MAX_AREA_SHARE = 0.1
_MAX_SPREAD = 0.15


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


def centroid_track(mask: torch.Tensor, min_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids ``[F, 2]`` (x, y in pixels) of ``mask`` ``[F, H, W]``, and which frames show
    one shape: at least ``min_pixels`` pixels, at most a tenth of the frame, compact. The
    centroid of any other frame is meaningless."""
    frames, height, width = mask.shape
    weight = mask.float()
    area = weight.sum((1, 2))
    xs = torch.arange(width, dtype=torch.float32, device=mask.device) + 0.5
    ys = torch.arange(height, dtype=torch.float32, device=mask.device) + 0.5
    x = (weight.sum(1) * xs).sum(-1) / area.clamp_min(1.0)
    y = (weight.sum(2) * ys).sum(-1) / area.clamp_min(1.0)
    squared = (xs[None, None, :] - x[:, None, None]).square() + (
        ys[None, :, None] - y[:, None, None]
    ).square()
    spread = ((weight * squared).sum((1, 2)) / area.clamp_min(1.0)).sqrt()
    visible = (
        (area >= min_pixels)
        & (area <= _MAX_AREA_SHARE * height * width)
        & (spread <= _MAX_SPREAD * min(height, width))
    )
    return torch.stack([x, y], -1), visible


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
    centres, visible = centroid_track(mask, min_pixels=max(4, round(0.002 * height * width)))
    seen = int(visible.sum())
    verdict = {"prompt": prompt, "visible_frames": seen, "window_frames": last + 1}
    if seen < max(2, (last + 2) // 2):
        return MotionVerdict(
            passed=False, reason=f"no {attributes.colour} shape", along=0.0, across=0.0, **verdict
        )
    t = torch.arange(last + 1, dtype=torch.float32)[visible]
    points = centres[visible].cpu()
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
