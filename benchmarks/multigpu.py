"""Sparse attention under diffusers' Ulysses context parallelism: equal to one GPU, and faster.

    torchrun --nproc-per-node 2 benchmarks/multigpu.py [--check 1.3b] [--speed 14b] [--out PATH]
    torchrun --nproc-per-node 2 benchmarks/multigpu.py --tiny   # CPU + gloo: a smoke test

Random weights in bf16 (speed only; see e2e.py for how the models are built). Two parts:

- equality: on the ``--check`` model every method (dense steps and layers off, so every call is
  sparse) runs two steps (AdaSpa: a search, then a reuse of its plan) on one GPU, then again
  with the heads split over all GPUs; the largest difference is reported beside dense's own
  (which is bf16 rounding: the all-to-all changes nothing but the order of work);
- speed: on the ``--speed`` model, one transformer forward (a steady-state step: Radial's static
  plan, SVG with its profiling, AdaSpa reusing its plan) on one GPU, then on all of them;
  scaling efficiency = t(1 GPU) / (N * t(N GPUs)).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from common import median, timed, write_results
from e2e import MODELS, build_transformer, make_inputs, tiny_spec

import dit_sparse
from dit_sparse.parallel import init_ulysses

METHODS = ("dense", "radial", "svg", "adaspa")
ALL_SPARSE = {"dense_steps": 0, "dense_layers": 0}
CHECK_STEPS = (10, 11)  # AdaSpa searches at its first sparse step and reuses the plan next
SPEED_STEP = 30  # past every method's dense warm-up and AdaSpa's search steps


def forward(transformer, inputs, step: int, num_steps: int = 50) -> torch.Tensor:
    with transformer.cache_context("cond", step_index=step, num_inference_steps=num_steps):
        return transformer(**inputs)[0]


def split_heads(transformer, world: int, device: torch.device) -> None:
    from diffusers import ContextParallelConfig

    mesh = dist.device_mesh.init_device_mesh(
        device.type, (1, world), mesh_dim_names=("ring", "ulysses")
    )
    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world, mesh=mesh))


def check_equality(spec, world: int, device: torch.device) -> dict:
    """Outputs of every method on one GPU against the same with the heads split."""
    torch.manual_seed(0)  # the same random weights on every rank
    transformer = build_transformer(spec, device, torch.bfloat16)
    inputs = make_inputs(spec, device, torch.bfloat16)

    def run_all() -> dict[str, torch.Tensor]:
        outputs = {}
        for name in METHODS:
            options = {} if name == "dense" else ALL_SPARSE
            with dit_sparse.attached(transformer, name, **options):
                outputs[name] = torch.stack([forward(transformer, inputs, s) for s in CHECK_STEPS])
        return outputs

    single = run_all()
    split_heads(transformer, world, device)
    split = run_all()
    result = {}
    for name in METHODS:
        diff = (split[name].float() - single[name].float()).abs()
        result[name] = {
            "max_abs_diff": diff.max().item(),
            "rel_l2_diff": (diff.norm() / single[name].float().norm()).item(),
        }
    return result


def time_forwards(transformer, inputs, device, repeats: int) -> dict[str, float]:
    """Median seconds of one steady-state forward per method (one untimed warm-up each)."""
    seconds = {}
    for name in METHODS:
        with dit_sparse.attached(transformer, name):
            runs = [
                timed(lambda step=SPEED_STEP + i: forward(transformer, inputs, step), device)[0]
                for i in range(1 + repeats)
            ]
        seconds[name] = median(runs[1:])
    return seconds


def measure_speed(spec, world: int, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    transformer = build_transformer(spec, device, torch.bfloat16)
    inputs = make_inputs(spec, device, torch.bfloat16)
    one = time_forwards(transformer, inputs, device, repeats)  # every rank alone, in parallel
    split_heads(transformer, world, device)
    many = time_forwards(transformer, inputs, device, repeats)
    return {
        name: {
            "seconds_1gpu": one[name],
            f"seconds_{world}gpu": many[name],
            "speedup": one[name] / many[name],
            "scaling_efficiency": one[name] / (world * many[name]),
            "speedup_vs_dense_1gpu": one["dense"] / many[name],
        }
        for name in METHODS
    }


def table(body: dict, world: int) -> str:
    lines = [
        f"| method | max abs diff {world} vs 1 GPU | s/forward, 1 GPU | s/forward, {world} GPUs | speedup | scaling efficiency |",
        "|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        check, speed = body["equality"][name], body["speed"][name]
        lines.append(
            f"| {name} | {check['max_abs_diff']:.2e} | {speed['seconds_1gpu']:.2f} | "
            f"{speed[f'seconds_{world}gpu']:.2f} | {speed['speedup']:.2f}x | {speed['scaling_efficiency']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", default="1.3b", choices=sorted(MODELS))
    parser.add_argument("--speed", default="14b", choices=sorted(MODELS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (gloo)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        parser.error("launch with torchrun --nproc-per-node N (N >= 2)")
    rank, device_name = init_ulysses(world, "cpu" if args.tiny else "cuda")
    device = torch.device(device_name)
    check_spec = tiny_spec(args.check) if args.tiny else MODELS[args.check]
    speed_spec = tiny_spec(args.speed) if args.tiny else MODELS[args.speed]
    body = {
        "world_size": world,
        "random_weights": True,
        "note": "random weights: speed and equality only, no quality claim",
        "check_model": {
            "name": check_spec.name,
            "layout": check_spec.layout.describe(),
            "steps": CHECK_STEPS,
        },
        "speed_model": {
            "name": speed_spec.name,
            "layout": speed_spec.layout.describe(),
            "step": SPEED_STEP,
        },
        "equality": check_equality(check_spec, world, device),  # its model is freed on return
        "speed": measure_speed(speed_spec, world, device, args.repeats),
    }
    if rank == 0:
        gpu = "cpu" if args.tiny else torch.cuda.get_device_name(device).split()[-1].lower()
        out = args.out or f"benchmarks/results/multigpu-{gpu}.json"
        write_results(Path(out), device, body)
        print(table(body, world))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
