import sys
from pathlib import Path

import pytest
import torch

# Tests of training code import its modules as the training scripts do (the library never does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))


@pytest.fixture(scope="session")
def tiny_wan():
    """The tiny-wan preset pipeline (fp32, CPU); tests must leave it as they found it."""
    from dit_sparse.pipelines.presets import build_preset

    pipe = build_preset("tiny-wan")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_pipe(pipe, guidance=5.0, seed=0, steps=3, frames=9, height=32, width=32, latent=False):
    """The video as a tensor ([frames, H, W, 3]), or with ``latent`` the latents (no VAE)."""
    out = pipe(
        prompt="a red ball rolls left",
        num_frames=frames,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent" if latent else "np",
    )
    return out.frames if latent else torch.from_numpy(out.frames[0])
