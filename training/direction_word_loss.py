"""Does a ``wan-shapes`` model use the direction word? Its loss with the word swapped, per noise.

For drawn 17-frame clips of the evaluation prompts, noised to each level, the flow-matching
loss (MSE of the predicted velocity) with the clip's own prompt, with the same prompt naming
the opposite direction, and with the empty prompt. A model that uses the word loses more with
the wrong one wherever the noisy clip leaves the direction open. CPU, about a minute::

    python training/direction_word_loss.py --out training/direction_word_loss.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from motion_speed import drawn_clips
from records import append_json_record

from dit_sparse.pipelines.shapes import MODEL_DIR, load_wan_shapes
from dit_sparse.synthetic import evaluation_prompts, parse_prompt

NOISE_LEVELS = (0.3, 0.6, 0.8, 0.9, 0.94, 0.96, 0.98, 0.99, 1.0)
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def with_opposite_direction(prompt: str) -> str:
    direction = parse_prompt(prompt).direction
    return prompt.replace(f" {direction} ", f" {OPPOSITE[direction]} ")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(MODEL_DIR))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--noise-draws", type=int, default=2, help="noise draws per level")
    parser.add_argument("--out", help="add the results to this JSON file (a list of runs)")
    args = parser.parse_args()

    pipe = load_wan_shapes(args.model_dir)
    model, vae = pipe.transformer, pipe.vae
    prompts = evaluation_prompts(args.prompts)
    drawn = vae.normalize(vae.encode(*drawn_clips(prompts, 17, seed=7)))
    texts = {
        name: pipe.encode_prompt(
            variant, do_classifier_free_guidance=False, max_sequence_length=512, device="cpu"
        )[0]
        for name, variant in (
            ("own", prompts),
            ("opposite_direction", [with_opposite_direction(p) for p in prompts]),
            ("empty", [""] * len(prompts)),
        )
    }
    levels = []
    for sigma in NOISE_LEVELS:
        loss = dict.fromkeys(texts, 0.0)
        for draw in range(args.noise_draws):
            noise = torch.randn(drawn.shape, generator=torch.Generator().manual_seed(100 + draw))
            noisy = (1 - sigma) * drawn + sigma * noise
            timestep = torch.full((len(prompts),), 1000.0 * sigma)
            for name, text in texts.items():
                velocity = model(noisy, timestep=timestep, encoder_hidden_states=text)[0]
                error = (velocity - (noise - drawn)).square().mean().item()
                loss[name] += error / args.noise_draws
        levels.append(
            {
                "sigma": sigma,
                "loss_own_prompt": round(loss["own"], 5),
                "extra_loss_opposite_direction": round(loss["opposite_direction"] - loss["own"], 5),
                "extra_loss_empty_prompt": round(loss["empty"] - loss["own"], 5),
            }
        )
        print(levels[-1], flush=True)
    result = {
        "model_dir": Path(args.model_dir).name,
        "frames": 17,
        "prompts": len(prompts),
        "noise_draws": args.noise_draws,
        "levels": levels,
    }
    if args.out:
        append_json_record(args.out, result)


if __name__ == "__main__":
    main()
