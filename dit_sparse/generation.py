"""Run one generation the same way for the CLI and the benchmarks, and save its frames."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .utils import atomic_output, check_writable

OUTPUT_SUFFIXES = (".mp4", ".png")


@dataclass(frozen=True)
class GenerationRequest:
    """One clip: prompt, size (pixels), steps, guidance and seed."""

    prompt: str
    negative_prompt: str | None = None
    frames: int = 17
    height: int = 64
    width: int = 64
    steps: int = 4
    guidance: float | None = None
    seed: int = 0


@dataclass
class GenerationResult:
    frames: np.ndarray  # float32 [F, H, W, 3] in [0, 1]
    seconds: float


def _is_image_pipeline(pipe) -> bool:
    return "num_frames" not in inspect.signature(pipe.__call__).parameters


def generate(
    pipe,
    request: GenerationRequest,
    progress: bool = True,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> GenerationResult:
    """Run ``pipe`` for ``request``; wall time measured with the device synchronised.

    The initial latents come from a generator seeded with ``request.seed`` on the pipeline's
    device, so two runs with the same seed start from the same noise. ``on_step(index,
    latents)`` is called after each denoising step (the pipeline's ``callback_on_step_end``);
    an exception it raises ends the generation.
    """
    device = pipe._execution_device
    generator = torch.Generator(device=device).manual_seed(request.seed)
    kwargs = dict(
        prompt=request.prompt,
        height=request.height,
        width=request.width,
        num_inference_steps=request.steps,
        generator=generator,
        output_type="np",
    )
    if request.negative_prompt is not None:
        kwargs["negative_prompt"] = request.negative_prompt
    if request.guidance is not None:
        kwargs["guidance_scale"] = request.guidance
    if on_step is not None:

        def callback(pipe, index, timestep, tensors):
            on_step(index, tensors["latents"])
            return tensors

        kwargs.update(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
    image = _is_image_pipeline(pipe)
    if not image:
        kwargs["num_frames"] = request.frames
    pipe.set_progress_bar_config(disable=not progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    output = pipe(**kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    frames = output.images if image else output.frames
    frames = np.asarray(frames[0], dtype=np.float32)
    if image:
        frames = frames[None]
    return GenerationResult(frames=frames, seconds=seconds)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def check_output_path(path: str | Path, frames: int) -> None:
    """Raise ``ValueError`` unless ``frames`` frames can be saved at ``path`` by `save_frames`:
    a suffix it writes (.png for one frame only) in a folder that exists and takes files.
    The messages read after the path's name: ``"must end in .mp4 ..."``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES or (suffix == ".png" and frames != 1):
        raise ValueError(f"must end in .mp4 (.png only for one frame), got {str(path)!r}")
    check_writable(path)


def save_frames(frames: np.ndarray, path: str | Path, fps: int = 16) -> None:
    """Write ``[F, H, W, 3]`` frames as mp4 (or png for one frame), whole or not at all."""
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    data = to_uint8(frames)
    with atomic_output(path) as tmp:
        if suffix == ".png":
            if len(data) != 1:
                raise ValueError(f"png holds one frame, got {len(data)}; use .mp4")
            imageio.imwrite(tmp, data[0])
        elif suffix == ".mp4":
            # FFMPEG named: without imageio-ffmpeg, imageio would hand an mp4 to another writer.
            imageio.mimwrite(
                tmp,
                list(data),
                format="FFMPEG",
                fps=fps,
                codec="libx264",
                quality=8,
                macro_block_size=1,
            )
        else:
            raise ValueError(f"output must end in .mp4 (or .png for one frame), got {path.name!r}")
