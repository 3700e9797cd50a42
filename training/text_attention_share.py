"""How much of ``wan-shapes``' cross-attention goes to the prompt's words, and how much to padding?

`WanPipeline` pads every prompt with zero embeddings to ``max_sequence_length`` (512 by
default), and Wan's cross-attention has no padding mask, so each padding token takes a share of
every query's attention. For 4 evaluation prompts and random latents (61 frames of 64x64) at
two noise levels, this records per layer and head the mean share of text attention on the
prompt's words, and per layer each word's weight (heads and queries averaged, first prompt).
CPU, about half a minute::

    python training/text_attention_share.py --out training/text_attention_share.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dit_sparse.pipelines.shapes import MODEL_DIR, load_wan_shapes
from dit_sparse.synthetic import evaluation_prompts

NOISE_LEVELS = (0.95, 0.5)


def word_attention(attn, hidden: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """fp32 ``[B, H, L]``: cross-attention weight per text token, averaged over queries."""
    q = attn.norm_q(attn.to_q(hidden))
    k = attn.norm_k(attn.to_k(text))
    heads = attn.heads
    q = q.unflatten(-1, (heads, -1)).transpose(1, 2)
    k = k.unflatten(-1, (heads, -1)).transpose(1, 2)
    weights = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
    return weights.mean(2).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(MODEL_DIR))
    parser.add_argument("--text-length", type=int, default=512, help="padded prompt length")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    pipe = load_wan_shapes(args.model_dir)
    transformer = pipe.transformer
    prompts = evaluation_prompts(4)
    words = [len(p.split()) for p in prompts]
    with torch.no_grad():
        text, _ = pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=args.text_length
        )
    seen: dict[int, torch.Tensor] = {}

    def record(layer: int):
        def hook(module, inputs, output):
            seen[layer] = word_attention(module, inputs[0], inputs[1])

        return hook

    for layer, block in enumerate(transformer.blocks):
        block.attn2.register_forward_hook(record(layer))
    latents = torch.randn(len(prompts), 48, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    results = {"prompts": prompts, "text_length": args.text_length, "noise_levels": {}}
    for sigma in NOISE_LEVELS:
        with torch.no_grad():
            transformer(
                hidden_states=latents,
                timestep=torch.full((len(prompts),), 1000.0 * sigma),
                encoder_hidden_states=text,
                return_dict=False,
            )
        layers = []
        for layer in range(len(transformer.blocks)):
            weights = seen[layer]  # [B, H, L]
            share = torch.stack([weights[b, :, :n].sum(-1) for b, n in enumerate(words)])
            layers.append(
                {
                    "word_share_per_head": [round(x, 4) for x in share.mean(0).tolist()],
                    "first_prompt_word_weights": [
                        round(x, 4) for x in weights[0, :, : words[0]].mean(0).tolist()
                    ],
                    "one_padding_token_weight": round(float(weights[0, :, words[0]].mean()), 4),
                }
            )
        shares = [s for entry in layers for s in entry["word_share_per_head"]]
        results["noise_levels"][str(sigma)] = {
            "layers": layers,
            "heads_with_padding_over_94_percent": sum(s < 0.06 for s in shares),
            "heads": len(shares),
        }
        print(
            f"noise {sigma}: padding takes > 94% in {sum(s < 0.06 for s in shares)} of "
            f"{len(shares)} heads"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
