"""At which noise level could an ideal detector that knows a clip's shape first find it, in one
latent frame and over its whole track?

A hypothesis for why ``wan-shapes`` teleports its shapes: in flow matching, ``x_s = (1 - s) x0 +
s noise``, the shape's signal in the normalised latents (the clip minus the same clip drawn
without the shape) has energy ``E``; a matched filter finds it against the unit noise with SNR
``(1 - s) / s * sqrt(E)``. The whole track (every latent frame together) reaches a given SNR at
a much higher noise level than one latent frame alone. If a sampler crosses the band between
the two in a step or two, the track may never be decided as a whole, each frame settling its
shape on its own. This measures the band on drawn clips and counts the training draws and the
20 sampling steps inside it for a few schedule shifts. CPU, a few seconds::

    python training/shape_detectability.py --out training/shape_detectability.json
"""

from __future__ import annotations

import argparse
import json

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from shapes_data import render_clips, sample_clip_batch

from dit_sparse.pipelines.shapes import MODEL_DIR, PixelSpaceVideoAutoencoder
from dit_sparse.utils import atomic_write_text

SNR_LEVELS = (3.0, 5.0)
SHIFTS = (3.0, 6.0, 12.0)
FRAMES, SIZE, CLIPS, STEPS = 61, 64, 64, 20


def noise_level_at(snr: float, energy: float) -> float:
    """The ``s`` at which ``(1 - s) / s * sqrt(energy) == snr``."""
    return energy**0.5 / (energy**0.5 + snr)


def training_share_above(level: float, shift: float) -> float:
    """Share of training draws ``s = shift u / (1 + (shift - 1) u)``, ``u ~ U(0, 1)``, above
    ``level``."""
    return 1.0 - level / (shift - (shift - 1.0) * level)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    autoencoder = PixelSpaceVideoAutoencoder.from_config(
        PixelSpaceVideoAutoencoder.load_config(MODEL_DIR / "vae")
    )
    signal = []
    for shape in (True, False):
        generator = torch.Generator().manual_seed(0)
        batch = sample_clip_batch(CLIPS, generator)
        drawn = render_clips(batch, FRAMES, SIZE, SIZE, generator, shape=shape)
        signal.append(autoencoder.normalize(autoencoder.encode(*drawn)))
    energy = (signal[0] - signal[1]).square().sum((1, 3, 4))  # [clips, latent frames]
    # Latent frame 0 holds one pixel frame four times, the others four distinct frames each:
    # the per-frame figure is for the latter, which make up the track.
    frame_energy = energy[:, 1:].median().item()
    track_energy = energy.sum(1).median().item()
    sampler_sigmas = {}
    for shift in SHIFTS:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(STEPS)
        sampler_sigmas[str(shift)] = scheduler.sigmas[:-1]
    bands = {}
    for snr in SNR_LEVELS:
        low, high = noise_level_at(snr, frame_energy), noise_level_at(snr, track_energy)
        schedules = {}
        for shift in SHIFTS:
            sigmas = sampler_sigmas[str(shift)]
            schedules[str(shift)] = {
                "training_share_in_band": round(
                    training_share_above(low, shift) - training_share_above(high, shift), 3
                ),
                "sampling_steps_in_band": int(((sigmas >= low) & (sigmas < high)).sum()),
            }
        bands[str(snr)] = {
            "one_latent_frame_sigma": round(low, 4),
            "whole_track_sigma": round(high, 4),
            "shifts": schedules,
        }
        print(
            f"SNR {snr}: one latent frame at s = {low:.3f}, the whole track at s = {high:.3f}; "
            + ", ".join(
                f"shift {k}: {v['training_share_in_band']:.1%} of training draws, "
                f"{v['sampling_steps_in_band']} of {STEPS} steps in between"
                for k, v in schedules.items()
            )
        )
    result = {
        "clips": CLIPS,
        "frames": FRAMES,
        "size": SIZE,
        "median_shape_energy": {
            "per_latent_frame": round(frame_energy, 1),
            "whole_track": round(track_energy, 1),
        },
        "snr": bands,
        "first_sampler_sigmas": {
            shift: [round(float(s), 3) for s in sigmas[:8]]
            for shift, sigmas in sampler_sigmas.items()
        },
    }
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
