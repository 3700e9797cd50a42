"""Generate clips for shapes prompts with a pipeline and check each against its prompt."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .motion import MotionVerdict, check_motion, pass_rate


@dataclass(frozen=True)
class MotionEvaluation:
    """Verdicts of one evaluation, and the generated frames (``[N, F, H, W, 3]`` in [0, 1])."""

    verdicts: list[MotionVerdict]
    frames: np.ndarray

    @property
    def rate(self) -> float:
        """Share of clips that passed `check_motion`."""
        return pass_rate(self.verdicts)


def evaluate_motion(
    pipe,
    prompts: list[str],
    *,
    frames: int,
    height: int,
    width: int,
    steps: int,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> MotionEvaluation:
    """Generate one clip per prompt (in batches) and check it with `check_motion`.

    Batch ``j`` starts from a generator seeded ``seed + j`` on the pipeline's device, so a
    fixed ``batch_size`` repeats the same clips. ``guidance`` None keeps the pipeline's default.
    """
    if not prompts:
        raise ValueError("need at least one prompt")
    device = pipe._execution_device
    options = {} if guidance is None else {"guidance_scale": guidance}
    clips = []
    for j, start in enumerate(range(0, len(prompts), batch_size)):
        output = pipe(
            prompt=prompts[start : start + batch_size],
            num_frames=frames,
            height=height,
            width=width,
            num_inference_steps=steps,
            generator=torch.Generator(device).manual_seed(seed + j),
            output_type="np",
            **options,
        )
        clips.append(np.asarray(output.frames, dtype=np.float32))
    video = np.concatenate(clips)
    verdicts = [check_motion(clip, prompt) for clip, prompt in zip(video, prompts)]
    return MotionEvaluation(verdicts=verdicts, frames=video)
