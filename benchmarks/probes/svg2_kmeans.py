"""GPU probe: what SVG2's clustering and planning cost next to its sparse attention, at Wan 480p
(12 heads x 32,760 tokens) and 720p (40 heads x 75,600), bf16, D = 128, on
`attention_layer.py`'s structured inputs.

    python benchmarks/probes/svg2_kmeans.py --out OUT.json     # one GPU, about a minute
    python benchmarks/probes/svg2_kmeans.py --tiny --out OUT.json   # CPU: a test of the script

Per layout, each a mean of back-to-back calls (`attention_layer.mean_seconds`):

- ``iteration``: one Lloyd iteration of q (the default query clusters) and of k (key
  clusters), by the torch reference (`lloyd_step_reference`) and by `lloyd_step` (Triton),
  and the Triton assignment alone with each tile config of `ASSIGN_TRIALS`; how often the two
  paths' labels agree;
- ``svg2``: a warm step of the default method (centroids from the step before): ``cluster``
  (``kmeans_iter_step`` iterations of q and k), ``arrange`` (cluster pairs and plan),
  ``kernel`` (the call ``attend`` makes: the kernel on the original q, k, v with the plan's
  ``perm`` and ``key_perm``, `SVG2Arrangement.sorting_plan`), ``kernel_presorted`` (the
  kernel on q, k, v sorted beforehand, with the plan without permutations), ``permute``
  (``kernel - kernel_presorted``: what sorting costs inside the kernel, the K/V gather pass
  and the gathered Q loads and scattered stores; noise can make it slightly negative), the
  whole ``attend``, and a layer's first clustering (``kmeans_iter_init`` iterations, one
  call);
- ``attention_0.2``: the kernel on a random block plan of density 0.2, the yardstick of the
  overhead share ``(cluster + arrange + permute, a negative permute as 0) / attention_0.2``
  (target: at most 0.1), and ``assign_floor_share``, the share that the assignment kernels of
  a warm step's iterations take alone (default tile), below which no planning gets;
- ``profile_cluster`` and ``profile_arrange`` (GPU): the ops of one warm ``cluster`` and
  ``arrange`` call with the most device time (torch.profiler), where the time goes.

Without a GPU (``--tiny``) it runs `attention_layer.TINY_LAYOUTS` in fp32 on the CPU, where
the torch references run and the Triton-only timings are None.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from attention_layer import LAYOUTS, TINY_LAYOUTS, make_qkv, mean_seconds
from common import error_text, timed, write_results

from dit_sparse.kernels import block_sparse_attention, lloyd_step
from dit_sparse.kernels.kmeans import ASSIGN_CONFIGS, launch_nearest_centroid
from dit_sparse.kernels.launch import KernelConfig, triton_runs_on
from dit_sparse.kernels.reference import lloyd_step_reference, permute_tokens
from dit_sparse.methods import AttentionCall
from dit_sparse.methods.svg2 import SparseVideoGen2
from dit_sparse.plan import BlockPlan, num_blocks

# Assignment tiles tried at D = 128: (vectors, centroids) a step, warps, stages.
ASSIGN_TRIALS = (
    KernelConfig(128, 64, 8, 3),
    KernelConfig(128, 128, 8, 3),
    KernelConfig(64, 64, 4, 3),
    KernelConfig(128, 64, 4, 3),
    KernelConfig(256, 64, 8, 3),
)
DENSITY = 0.2
REFERENCE_CALLS = 3  # the torch iteration is slow at 720p
PROFILE_TOP = 15


def config_name(config: KernelConfig) -> str:
    return f"{config.block_m}x{config.block_n}/{config.num_warps}w/{config.num_stages}s"


def ms(seconds: float) -> float:
    return round(1000 * seconds, 4)


def iteration_costs(x: torch.Tensor, centroids: torch.Tensor, device) -> dict[str, Any]:
    """One Lloyd iteration of ``x`` ``[G, S, D]`` from ``centroids``, torch against Triton."""
    triton = triton_runs_on(device)
    labels, _, _ = lloyd_step(x, centroids)
    reference_labels, _, _ = lloyd_step_reference(x, centroids)
    result: dict[str, Any] = {
        "clusters": centroids.shape[1],
        "torch_ms": ms(
            mean_seconds(lambda: lloyd_step_reference(x, centroids), device, REFERENCE_CALLS)
        ),
        "lloyd_step_ms": ms(mean_seconds(lambda: lloyd_step(x, centroids), device)),
        "labels_agree": float((labels == reference_labels).float().mean()),
        "assign_ms": {},
    }
    if triton:
        for config in ASSIGN_TRIALS:
            name = config_name(config)
            try:
                seconds = mean_seconds(
                    lambda c=config: launch_nearest_centroid(x, centroids, c), device
                )
                result["assign_ms"][name] = ms(seconds)
            except Exception as err:  # noqa: BLE001  (a config that fails to compile or run)
                result["assign_ms"][name] = error_text(err)
    return result


def op_profile(fn, device, top: int = PROFILE_TOP) -> list[dict[str, Any]]:
    """The ``top`` ops of one warm call of ``fn`` by their own device time (torch.profiler);
    nothing off CUDA."""
    if device.type != "cuda":
        return []
    fn()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        fn()
        torch.cuda.synchronize()
    events = sorted(profile.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)
    return [
        {"op": e.key, "calls": e.count, "self_device_ms": round(e.self_device_time_total / 1e3, 4)}
        for e in events[:top]
    ]


def random_plan(batch, heads, seq_len, block, generator, device) -> BlockPlan:
    """Each block kept with probability `DENSITY`, the diagonal always."""
    blocks = num_blocks(seq_len, block)
    keep = torch.rand(batch, heads, blocks, blocks, generator=generator, device=device) < DENSITY
    keep |= torch.eye(blocks, dtype=torch.bool, device=device)
    return BlockPlan.from_block_mask(keep, block, block, seq_len)


def svg2_costs(q, k, v, layout, device) -> dict[str, Any]:
    """A warm svg2 step's parts, its first clustering, and the yardstick."""
    batch, heads, seq_len, dim = q.shape
    scale = dim**-0.5
    method = SparseVideoGen2(dense_steps=0, dense_layers=0)
    call = AttentionCall(layout, 1, 2, 0, 50, "cond", {})
    init_seconds, _ = timed(lambda: method.attend(q, k, v, call), device)
    q_result, k_result, _ = method.cluster(q, k, call)
    arranged = method.arrange(q_result, k_result, batch, scale)
    sorting = arranged.sorting_plan()
    presorted = [
        permute_tokens(t, perm)
        for t, perm in ((q, sorting.perm), (k, sorting.key_perm), (v, sorting.key_perm))
    ]
    generator = torch.Generator(device=device).manual_seed(0)
    plan = random_plan(batch, heads, seq_len, arranged.plan.block_q, generator, device)
    result = {
        "q_clusters": q_result.centroids.shape[1],
        "k_clusters": k_result.centroids.shape[1],
        "first_call_ms": ms(init_seconds),
        "attend_ms": ms(mean_seconds(lambda: method.attend(q, k, v, call), device)),
        "cluster_ms": ms(mean_seconds(lambda: method.cluster(q, k, call), device)),
        "arrange_ms": ms(
            mean_seconds(lambda: method.arrange(q_result, k_result, batch, scale), device)
        ),
        "kernel_ms": ms(mean_seconds(lambda: block_sparse_attention(q, k, v, sorting), device)),
        "kernel_presorted_ms": ms(
            mean_seconds(lambda: block_sparse_attention(*presorted, arranged.plan), device)
        ),
        "density": arranged.plan.density,
        "attention_0.2_ms": ms(mean_seconds(lambda: block_sparse_attention(q, k, v, plan), device)),
        "attention_0.2_density": plan.density,
    }
    result["permute_ms"] = round(result["kernel_ms"] - result["kernel_presorted_ms"], 4)
    # A permutation measured below zero is noise between two timings of the same work.
    overhead = result["cluster_ms"] + result["arrange_ms"] + max(result["permute_ms"], 0.0)
    result["overhead_ms"] = round(overhead, 4)
    result["overhead_share_of_attention_0.2"] = overhead / result["attention_0.2_ms"]
    result["overhead_share_of_own_kernel"] = overhead / result["kernel_presorted_ms"]
    result["profile_cluster"] = op_profile(lambda: method.cluster(q, k, call), device)
    result["profile_arrange"] = op_profile(
        lambda: method.arrange(q_result, k_result, batch, scale), device
    )
    return result


def probe_layout(name, spec, device, dtype) -> dict[str, Any]:
    layout, heads, _ = spec
    print(f"{name}: {layout.describe()}, {heads} heads", file=sys.stderr, flush=True)
    q, k, v = make_qkv("structured", layout, heads, device, dtype)
    seq_len, dim = q.shape[2:]
    q_clusters, k_clusters = SparseVideoGen2().cluster_counts(seq_len)
    generator = torch.Generator().manual_seed(0)
    iterations = {}
    for label, x, clusters in (("q", q, q_clusters), ("k", k, k_clusters)):
        flat = x.reshape(-1, seq_len, dim)
        start = torch.randint(seq_len, (flat.shape[0], clusters), generator=generator)
        centroids = flat.gather(1, start.to(device)[..., None].expand(-1, -1, dim)).float()
        iterations[label] = iteration_costs(flat, centroids, device)
    costs = svg2_costs(q, k, v, layout, device)
    default = ASSIGN_CONFIGS[dim]
    assign = [iterations[x]["assign_ms"].get(config_name(default)) for x in ("q", "k")]
    if all(isinstance(t, float) for t in assign):
        steps = SparseVideoGen2().kmeans_iter_step
        costs["assign_floor_share"] = steps * sum(assign) / costs["attention_0.2_ms"]
    return {
        "name": name,
        "layout": layout.describe(),
        "heads": heads,
        "seq_len": seq_len,
        "iteration": iterations,
        "svg2": costs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results JSON path")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.tiny
    if not gpu and not args.tiny:
        parser.error("the probe is for a GPU; on a CPU, --tiny tests the script")
    device, dtype = (
        (torch.device("cuda"), torch.bfloat16) if gpu else (torch.device("cpu"), torch.float32)
    )
    layouts = LAYOUTS if gpu else TINY_LAYOUTS
    with torch.inference_mode():
        results = [probe_layout(name, spec, device, dtype) for name, spec in layouts.items()]
    for entry in results:
        s = entry["svg2"]
        print(
            f"{entry['name']}: cluster {s['cluster_ms']} + arrange {s['arrange_ms']} + permute "
            f"{s['permute_ms']} ms = {s['overhead_share_of_attention_0.2']:.1%} of attention at "
            f"density {DENSITY} ({s['attention_0.2_ms']} ms); svg2 kernel {s['kernel_ms']} ms "
            f"({s['kernel_presorted_ms']} ms presorted) at density {s['density']:.3f}"
        )
    body = {"tiny": args.tiny, "dtype": str(dtype).removeprefix("torch."), "layouts": results}
    body["assign_default_d128"] = str(ASSIGN_CONFIGS[128])
    write_results(Path(args.out), device, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
