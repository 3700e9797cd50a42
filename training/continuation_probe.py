"""Given part of a drawn clip, does a ``wan-shapes`` model keep or continue its motion?

Two probes on drawn clips of the evaluation prompts (17 frames), sampled the way `WanPipeline`
samples (Euler steps on the model's own schedule, classifier-free guidance), but by hand so a
part of the clip can be held:

- ``--from-noise 0.5,0.9``: the drawn clip noised to that level, then sampled to the end
  (SDEdit). Up to which noise level does the model keep the drawn motion?
- ``--first-frame replace``: latent frame 0 is the drawn one, noised to each step's level
  (inpainting); the rest starts from noise. Does the model continue the shape the prompted way
  from where it is? ``--first-frame clean`` holds frame 0 clean with its tokens at timestep 0,
  Wan 2.2's image-to-video conditioning (for a model trained with per-frame noise levels).

With nothing held, `sample` gives `WanPipeline`'s frames to within 1e-5 (checked on the shipped
model, 9 frames of 32x32, 4 steps). Each setting is summarised like `motion_speed.summarise`
(pass rate, median steps per speed). CPU: about 4 minutes a setting for 16 clips::

    python training/continuation_probe.py --from-noise 0.9,0.95,0.98 --first-frame replace \
        --out training/continuation_probe.json
    python training/continuation_probe.py --from-noise 1.0 --out training/continuation_probe.json
"""

from __future__ import annotations

import argparse
import json

import torch
from motion_speed import drawn_clips, sampling_record, summarise
from records import append_json_record
from shapes_data import to_frames

from dit_sparse.pipelines.shapes import MODEL_DIR, load_wan_shapes
from dit_sparse.synthetic import evaluation_prompts


@torch.no_grad()
def sample(
    pipe,
    start: torch.Tensor,
    sigmas: list[float],
    prompts: list[str],
    guidance: float,
    first: torch.Tensor | None = None,
    first_mode: str = "replace",
) -> torch.Tensor:
    """Euler flow steps from ``start`` (normalised latents at ``sigmas[0]``) down to 0; with
    ``first``, latent frame 0 is held to it as ``first_mode`` says. Returns frames [0, 1]."""
    model, vae = pipe.transformer, pipe.vae
    count, frames = start.shape[0], start.shape[2]
    cond, uncond = pipe.encode_prompt(
        prompts, negative_prompt=[""] * count, max_sequence_length=512, device=start.device
    )
    patch = model.config.patch_size
    tokens = (start.shape[3] // patch[1]) * (start.shape[4] // patch[2])
    first_noise = torch.randn(start[:, :, :1].shape, generator=torch.Generator().manual_seed(1))
    x = start.clone()
    for sigma, following in zip(sigmas[:-1], sigmas[1:]):
        timestep = torch.full((count, frames), 1000.0 * sigma)
        if first is not None and first_mode == "clean":
            x[:, :, :1], timestep[:, 0] = first, 0.0
        elif first is not None:
            x[:, :, :1] = (1 - sigma) * first + sigma * first_noise
        timestep = timestep.repeat_interleave(tokens, dim=1)
        v_cond, v_uncond = (
            model(x, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]
            for text in (cond, uncond)
        )
        x = x + (following - sigma) * (v_uncond + guidance * (v_cond - v_uncond))
    if first is not None:
        x[:, :, :1] = first
    video = vae.decode(vae.denormalize(x), return_dict=False)[0]
    return to_frames(video)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(MODEL_DIR))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--from-noise", help="comma-separated noise levels to start from")
    parser.add_argument("--first-frame", choices=("replace", "clean"))
    parser.add_argument("--out", help="add the results to this JSON file (a list of runs)")
    args = parser.parse_args()
    if not args.from_noise and not args.first_frame:
        parser.error("give --from-noise or --first-frame")

    pipe = load_wan_shapes(args.model_dir)
    vae = pipe.vae
    prompts = evaluation_prompts(args.prompts)
    videos, motion = drawn_clips(prompts, args.frames, seed=7)
    drawn = vae.normalize(vae.encode(videos, motion))
    noise = torch.randn(drawn.shape, generator=torch.Generator().manual_seed(0))
    pipe.scheduler.set_timesteps(args.steps)
    sigmas = pipe.scheduler.sigmas.tolist()
    result = {
        **sampling_record(args, pipe, prompts),
        "drawn": summarise(to_frames(videos), prompts),
    }
    if args.first_frame:
        frames = sample(
            pipe, noise, sigmas, prompts, args.guidance, drawn[:, :, :1], args.first_frame
        )
        result[f"first_frame_{args.first_frame}"] = summarise(frames, prompts)
        print(args.first_frame, result[f"first_frame_{args.first_frame}"], flush=True)
    for level in [float(v) for v in (args.from_noise or "").split(",") if v]:
        # The sampler's own levels from the first at or below ``level``: its last steps.
        tail = [s for s in sigmas[:-1] if s <= level] + [0.0]
        start = (1 - tail[0]) * drawn + tail[0] * noise
        frames = sample(pipe, start, tail, prompts, args.guidance)
        result[f"from_noise_{level}"] = {
            "start_sigma": round(tail[0], 4),
            "steps": len(tail) - 1,
            **summarise(frames, prompts),
        }
        print(level, result[f"from_noise_{level}"], flush=True)
    print(json.dumps(result, indent=2))
    if args.out:
        append_json_record(args.out, result)


if __name__ == "__main__":
    main()
