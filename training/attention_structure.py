"""Report how concentrated ``wan-shapes``' attention is, per layer, beside random weights.

For a few evaluation prompts at the default size, every self-attention call is measured with
`attention_probe.AttentionMassProbe`: the share of 64-token key blocks that hold
90% of each query block's attention, and (``--svg``) how Sparse VideoGen classifies each head.
The same transformer config with random weights is measured too, as the diffuse baseline.
Writes JSON and prints a Markdown table::

    python training/attention_structure.py --svg --out training/attention_structure.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from attention_probe import AttentionMassProbe, summarize_probe
from diffusers import WanTransformer3DModel

import dit_sparse
from dit_sparse.pipelines.shapes import MODEL_DIR, assemble_pipeline, load_wan_shapes
from dit_sparse.synthetic import evaluation_prompts


def measure(pipe, probe: AttentionMassProbe, args: argparse.Namespace) -> dict:
    pipe.set_progress_bar_config(disable=True)
    with dit_sparse.attached(pipe, probe) as handle:
        pipe(
            prompt=evaluation_prompts(args.prompts),
            num_frames=args.frames,
            height=args.height,
            width=args.width,
            num_inference_steps=args.steps,
            generator=torch.Generator(pipe._execution_device).manual_seed(0),
            output_type="latent",
        )
        return summarize_probe(handle.records())


def markdown(results: dict) -> str:
    trained, random = results["trained"]["layers"], results["random_weights"]["layers"]
    svg = "svg_temporal_share" in trained[0]
    header = "| layer | mass share, trained | mass share, random weights |"
    rule = "|---:|---:|---:|"
    if svg:
        header += " SVG temporal heads, trained |"
        rule += "---:|"
    lines = [header, rule]
    for mine, theirs in zip(trained, random):
        line = f"| {mine['layer']} | {mine['mass_share']:.3f} | {theirs['mass_share']:.3f} |"
        if svg:
            heads = mine["svg_temporal_per_head"]
            line += f" {sum(heads):.1f} of {len(heads)} |"
        lines.append(line)
    lines.append(
        f"| all | {results['trained']['mass_share']:.3f} | "
        f"{results['random_weights']['mass_share']:.3f} |" + (" |" if svg else "")
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(MODEL_DIR))
    parser.add_argument("--frames", type=int, default=61)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="evaluation prompts, one batch")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--mass", type=float, default=0.9)
    parser.add_argument("--svg", action="store_true", help="also record SVG's head kinds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args()

    start = time.perf_counter()
    pipe = load_wan_shapes(args.model_dir).to(args.device)
    probe = AttentionMassProbe(block_size=args.block_size, mass=args.mass, svg=args.svg)
    results = {"settings": {k: v for k, v in vars(args).items() if k != "out"}}
    results["trained"] = measure(pipe, probe, args)
    torch.manual_seed(0)
    random_transformer = WanTransformer3DModel.from_config(pipe.transformer.config)
    baseline = assemble_pipeline(random_transformer, pipe.vae, pipe.scheduler).to(args.device)
    results["random_weights"] = measure(baseline, probe, args)
    results["seconds"] = round(time.perf_counter() - start, 1)
    table = markdown(results)
    results["table"] = table
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
