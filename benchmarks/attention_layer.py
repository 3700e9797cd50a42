"""Per-layer attention time of each method against cuDNN's dense SDPA, at Wan's layouts.

    python benchmarks/attention_layer.py [--methods radial,svg,adaspa,svg2] [--out PATH]
    python benchmarks/attention_layer.py --tiny      # seconds on a CPU: a smoke test

q, k, v are ``[1, H, S, 128]`` (bf16 on the GPU) at the Wan2.1 layouts of 480p x 81 frames
(H = 12, 21x30x52 = 32,760 tokens) and 720p x 81 frames (H = 40, 21x45x80 = 75,600 tokens),
in two cases:

- ``random``: i.i.d. normal q, k, v. Attention is diffuse, as random weights make it: online
  methods find no structure to exploit, so their densities here are an upper bound.
- ``structured``: q = k made of random Fourier features of each token's (frame, row, column),
  so logits fall off with distance like a Gaussian kernel: half the heads local within a frame
  (spatial), half local across frames at one place (temporal). Block mass concentrates as in
  trained video models, which is what AdaSpa's search and SVG's profiling look for.

Each method is called directly, as the runtime would call it (`common.run_call`), at the last
layer and at the first step of each kind its default schedule has there (search or profiling,
reuse, AdaSpa's LSE-keeping last warm-up step with ``warmup_lse=True``, ...; see
`common.probe_kinds`), walking those steps in order with a fresh cache per repetition, as a new generation would. Recorded per kind:
time, the density the method reports, and the output's relative error against dense. For SVG,
``svg_overhead`` splits its time into the kernel on the plan it chose (with and without the
token permutation) and the rest (sampling and classifying heads), each averaged over
back-to-back calls; for AdaSpa, ``adaspa_overhead`` splits a search into its dense pass with
LSE, its block-mass pass (exact and sampled) and its selection, and the search table gives the
search steps' cost against dense and the search work's share of a 50-step run's attention time.
For SVG2, ``svg2_overhead`` splits a warm step into k-means, planning and the kernel with and
without the token permutations (the plan's ``perm`` and ``key_perm``, against q, k, v sorted
beforehand), and gives the block density its plan rounds the kept cluster pairs up to, by default
and with the alternatives (key clusters in id order, blocks of 64).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    NUM_STEPS,
    Observation,
    add_common_args,
    chosen,
    error_text,
    first_steps,
    median,
    methods_from,
    probe_kinds,
    repeat,
    resolve_args,
    run_call,
    summarize_walks,
    timed,
    write_results,
)

from dit_sparse.kernels import (
    block_attention_mass,
    block_sparse_attention,
    dense_attention_with_lse,
    dense_attention_with_mass,
)
from dit_sparse.kernels.reference import permute_tokens
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import AttentionCall, SparseMethod, resolve_method
from dit_sparse.pipelines.registry import layout_for
from dit_sparse.quality.report import fmt, markdown_table

HEAD_DIM = 128
# name -> (layout, heads, layers of the model it comes from): Wan2.1 1.3B at 480p, 14B at 720p
LAYOUTS = {
    "480p": (layout_for("wan", 81, 480, 832), 12, 30),
    "720p": (layout_for("wan", 81, 720, 1280), 40, 40),
}
TINY_LAYOUTS = {"tiny": (TokenLayout(3, 8, 8), 2, 2)}
CASES = ("random", "structured")
# Logit at zero distance in the structured case: e^12 against ~e^0 far away concentrates
# almost all of a row's mass near it even among 75,600 keys.
SHARPNESS = 12.0
# Kernel widths in (frames, rows, columns) of spatial and temporal heads.
SPATIAL_SCALE = (0.3, 4.0, 4.0)
TEMPORAL_SCALE = (6.0, 0.5, 0.5)


def structured_qk(
    layout: TokenLayout, heads: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """fp32 ``[1, heads, S, HEAD_DIM]`` with ``q k^T / sqrt(D) ~ SHARPNESS * exp(-|d / scale|^2 / 2)``.

    Random Fourier features (Rahimi and Recht): frequencies drawn with ``1 / scale`` spread,
    ``[cos, sin]`` of their phase, make dot products approximate the Gaussian kernel.
    """
    sizes = (layout.frames, layout.height, layout.width)
    grid = torch.meshgrid(
        *(torch.arange(n, device=device, dtype=torch.float32) for n in sizes), indexing="ij"
    )
    coords = torch.stack([g.flatten() for g in grid], dim=-1)  # [S, 3]
    half = heads // 2
    scales = torch.tensor([SPATIAL_SCALE] * half + [TEMPORAL_SCALE] * (heads - half), device=device)
    freqs = HEAD_DIM // 2
    omega = torch.randn(heads, freqs, 3, generator=generator, device=device) / scales[:, None]
    phase = torch.einsum("sc,hfc->hsf", coords, omega)
    features = torch.cat([phase.cos(), phase.sin()], dim=-1) / math.sqrt(freqs)
    return (features * math.sqrt(SHARPNESS * math.sqrt(HEAD_DIM)))[None]


def make_qkv(case: str, layout: TokenLayout, heads: int, device, dtype) -> list[torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (1, heads, layout.seq_len, HEAD_DIM)
    v = torch.randn(shape, generator=generator, device=device)
    if case == "random":
        q, k = (torch.randn(shape, generator=generator, device=device) for _ in range(2))
    else:
        q = k = structured_qk(layout, heads, generator, device)
    return [t.to(dtype) for t in (q, k, v)]


def dense_attention(q, k, v) -> tuple[str, Callable[[], torch.Tensor]]:
    """The baseline and its name: cuDNN's fused attention on the GPU (PyTorch's default SDPA
    where cuDNN refuses the call, named so), PyTorch's default SDPA on the CPU."""
    default = functools.partial(F.scaled_dot_product_attention, q, k, v)
    if q.device.type != "cuda":
        return "sdpa (cpu)", default
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def cudnn() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    try:
        cudnn()
    except RuntimeError as err:
        return f"sdpa (cuDNN refused: {str(err).splitlines()[0]})", default
    return "cudnn", cudnn


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.float() - reference.float()).norm() / reference.float().norm())


@dataclass
class MethodPlan:
    """A method, the layer it is called as, and the first step of each kind it has there."""

    method: SparseMethod
    layer: int
    firsts: dict[str, int]


def plan_method(name: str, layout: TokenLayout, num_layers: int, device, dtype) -> MethodPlan:
    method = resolve_method(name)
    layer = num_layers - 1  # past any leading dense layers of a schedule
    kinds = probe_kinds(method, layout, num_layers, HEAD_DIM, device, dtype, layers=[layer])
    return MethodPlan(method, layer, first_steps([row[0] for row in kinds]))


def bench_method(plan: MethodPlan, qkv, layout, num_layers, reference, args, device):
    method, layer = plan.method, plan.layer
    errors: dict[str, float] = {}

    def walk() -> dict[str, Observation]:
        cache: dict[Any, Any] = {}  # a new generation: nothing searched yet
        seen = {}
        for label, step in plan.firsts.items():
            call = AttentionCall(layout, layer, num_layers, step, NUM_STEPS, "cond", cache)
            seconds, (out, kind) = timed(functools.partial(run_call, method, *qkv, call), device)
            errors[label] = relative_error(out, reference)
            seen[label] = Observation(seconds, kind, float(call.info.get("density", 1.0)))
        return seen

    steps = summarize_walks(plan.firsts, repeat(args, walk))
    for label, entry in steps.items():
        entry["relative_error"] = errors[label]
    return {"method": method.name, "options": method.options(), "layer": layer, "steps": steps}


def mean_seconds(fn: Callable[[], Any], device, calls: int = 20) -> float:
    """Mean of ``calls`` back-to-back calls between two syncs, as a pipeline issues them
    (launch latency hidden), after one warm-up call."""
    fn()  # compile / warm
    seconds, _ = timed(lambda: [fn() for _ in range(calls)], device)
    return seconds / calls


def svg_overhead(qkv, layout, device) -> dict[str, float]:
    """Where SVG's time goes: its whole call, the kernel alone on the plan it chose (with and
    without the token permutation), and classification alone; each a `mean_seconds`."""
    method = resolve_method("svg")
    call = AttentionCall(layout, 1, 2, 0, NUM_STEPS, "cond", {})
    masks = method.masks(layout, qkv[0].device)
    kinds = method.classify(*qkv, layout)
    plan = masks.plan(kinds)
    unpermuted = dataclasses.replace(plan, perm=None, permuted=None)

    result = {
        "attend": mean_seconds(functools.partial(method.attend, *qkv, call), device),
        "kernel_with_perm": mean_seconds(lambda: block_sparse_attention(*qkv, plan), device),
        "kernel_without_perm": mean_seconds(
            lambda: block_sparse_attention(*qkv, unpermuted), device
        ),
        "classify": mean_seconds(lambda: method.classify(*qkv, layout), device),
        "density": float(masks.density(kinds)),
    }
    # Profiling and permutation together, against the same plan's attention without them.
    result["overhead_share"] = 1 - result["kernel_without_perm"] / result["attend"]
    return result


def adaspa_overhead(qkv, layout, device) -> dict[str, float]:
    """Where AdaSpa's search time goes, each a `mean_seconds`: the dense pass with LSE, the
    block-mass pass exact and from `SAMPLED_ROWS` rows per block, the dense pass with the mass
    fused in, the selection from a cached
    LSE (mass pass included) and a whole first search (dense pass included), with the
    method's default search and with ``search_rows=SAMPLED_ROWS``."""
    method = resolve_method("adaspa")
    sampled = dataclasses.replace(method, search_rows=SAMPLED_ROWS)
    q, k, v = qkv
    block = method.block_for(layout.seq_len)
    _, lse = dense_attention_with_lse(q, k, v)
    result = {
        "dense_with_lse": mean_seconds(lambda: dense_attention_with_lse(q, k, v), device),
        "mass_exact": mean_seconds(lambda: block_attention_mass(q, k, lse, block, block), device),
        "mass_sampled": mean_seconds(
            lambda: block_attention_mass(q, k, lse, block, block, rows=SAMPLED_ROWS), device
        ),
        "dense_with_mass": mean_seconds(
            lambda: dense_attention_with_mass(q, k, v, lse, block, block), device
        ),
        "search_rows": method.search_rows,
        "sampled_rows": SAMPLED_ROWS,
    }
    for name, m in (("", method), ("_sampled", sampled)):
        result[f"cached_search{name}"] = mean_seconds(
            lambda m=m: m.search(q, k, v, layout, lse=lse), device
        )
        result[f"search{name}"] = mean_seconds(lambda m=m: m.search(q, k, v, layout), device)
    return result


def svg2_overhead(qkv, layout, device) -> dict[str, float]:
    """Where SVG2's time goes at a warm step (centroids from the step before), each a
    `mean_seconds`: the whole call; k-means of q and k (``kmeans_iter_step`` iterations
    each); the cluster pairs and plan; the kernel as the call runs it, on q, k, v through the
    plan's permutations (``kernel_with_perm``); the kernel alone on tensors sorted beforehand
    (``kernel``). Also the plan's block density against the kept cluster pairs'
    token density, and the kernel time and block density with key clusters in id order and
    with blocks of 64, the alternatives to the default mapping."""
    method = resolve_method("svg2", dense_steps=0, dense_layers=0)
    q, k, v = qkv
    batch, heads, seq_len, dim = q.shape
    scale = dim**-0.5
    cache: dict[Any, Any] = {}
    call = AttentionCall(layout, 1, 2, 0, NUM_STEPS, "cond", cache)
    method.attend(q, k, v, call)  # the first clustering, kmeans_iter_init iterations
    q_result, k_result, _ = method.cluster(q, k, call)
    arranged = method.arrange(q_result, k_result, batch, scale)
    sorting = arranged.sorting_plan()
    q_perm, k_perm = sorting.perm, sorting.key_perm
    permuted = [permute_tokens(q, q_perm), permute_tokens(k, k_perm), permute_tokens(v, k_perm)]
    result = {
        "attend": mean_seconds(lambda: method.attend(q, k, v, call), device),
        "cluster": mean_seconds(lambda: method.cluster(q, k, call), device),
        "arrange": mean_seconds(lambda: method.arrange(q_result, k_result, batch, scale), device),
        "kernel_with_perm": mean_seconds(lambda: block_sparse_attention(q, k, v, sorting), device),
        "kernel": mean_seconds(lambda: block_sparse_attention(*permuted, arranged.plan), device),
        "density": arranged.plan.density,
        "cluster_density": float(arranged.cluster_density().mean()),
    }
    variants = {
        "id_order": dataclasses.replace(method, order_key_clusters=False),
        "block64": dataclasses.replace(method, block_size=64),
    }
    for name, variant in variants.items():
        other = variant.arrange(q_result, k_result, batch, scale)
        k_other = other.k_order.perm.view(batch, heads, seq_len)
        inputs = [permute_tokens(q, q_perm), permute_tokens(k, k_other), permute_tokens(v, k_other)]
        result[f"kernel_{name}"] = mean_seconds(
            lambda inputs=inputs, plan=other.plan: block_sparse_attention(*inputs, plan), device
        )
        result[f"density_{name}"] = other.plan.density
    # Clustering, planning and permutation together, against the kernel on the same plan.
    result["overhead_share"] = 1 - result["kernel"] / result["attend"]
    return result


def bench_layout(name, spec, methods, args, device, dtype) -> dict[str, Any]:
    layout, heads, num_layers = spec
    print(f"{name}: {layout.describe()}, {heads} heads", file=sys.stderr, flush=True)
    plans: dict[str, MethodPlan | str] = {}
    for method in methods:
        try:
            plans[method] = plan_method(method, layout, num_layers, device, dtype)
        except Exception as err:  # noqa: BLE001  (record it; measure the others)
            plans[method] = error_text(err)
    cases = []
    for case in CASES:
        qkv = make_qkv(case, layout, heads, device, dtype)
        backend, dense_fn = dense_attention(*qkv)
        runs = repeat(args, functools.partial(timed, dense_fn, device))
        reference = runs[-1][1]
        results = []
        for method, plan in plans.items():
            print(f"  {case} {method}", file=sys.stderr, flush=True)
            try:
                if isinstance(plan, str):
                    raise RuntimeError(plan)
                results.append(bench_method(plan, qkv, layout, num_layers, reference, args, device))
            except Exception as err:  # noqa: BLE001
                results.append({"method": method, "error": error_text(err)})
            finally:
                if not isinstance(plan, str):
                    plan.method.reset()
        times = [seconds for seconds, _ in runs]
        cases.append(
            {
                "case": case,
                "dense": {"backend": backend, "seconds": times, "median": median(times)},
                "methods": results,
            }
        )
        if "svg" in methods:
            cases[-1]["svg_overhead"] = svg_overhead(qkv, layout, device)
        if "adaspa" in methods:
            cases[-1]["adaspa_overhead"] = adaspa_overhead(qkv, layout, device)
        if "svg2" in methods:
            cases[-1]["svg2_overhead"] = svg2_overhead(qkv, layout, device)
        del qkv, reference, runs
    return {
        "name": name,
        "layout": layout.describe(),
        "heads": heads,
        "head_dim": HEAD_DIM,
        "seq_len": layout.seq_len,
        "num_layers": num_layers,
        "cases": cases,
    }


def table(layouts: list[dict[str, Any]]) -> str:
    rows = []
    for entry in layouts:
        where = f"{entry['name']} (H={entry['heads']}, {entry['seq_len']:,} tokens)"
        for case in entry["cases"]:
            dense = case["dense"]
            rows.append(
                [where, case["case"], f"dense ({dense['backend']})", "-"]
                + [f"{1000 * dense['median']:.2f}", "1.000", "1.00x", "0"]
            )
            for result in case["methods"]:
                if "error" in result:
                    error = f"error: {result['error']}"
                    rows.append([where, case["case"], result["method"], error, "", "", "", ""])
                    continue
                for label, s in result["steps"].items():
                    kind = label if s["matches"] else f"{label} (saw {s['kind_seen']})"
                    rows.append(
                        [where, case["case"], result["method"], kind]
                        + [f"{1000 * s['median']:.2f}", fmt(s["density"])]
                        + [f"{dense['median'] / s['median']:.2f}x", fmt(s["relative_error"])]
                    )
    headers = ["layout", "case", "method", "step kind", "ms", "density", "speedup", "rel. error"]
    return markdown_table(headers, rows)


def overhead_table(layouts: list[dict[str, Any]]) -> str:
    rows = [
        [entry["name"], case["case"]]
        + [f"{1000 * o[key]:.2f}" for key in ("attend", "kernel_with_perm", "kernel_without_perm")]
        + [f"{1000 * o['classify']:.2f}", f"{o['overhead_share']:.1%}"]
        for entry in layouts
        for case in entry["cases"]
        if (o := case.get("svg_overhead"))
    ]
    headers = ["layout", "case", "svg ms", "kernel+perm ms", "kernel ms", "classify ms"]
    return markdown_table([*headers, "profiling+perm share"], rows)


def svg2_table(layouts: list[dict[str, Any]]) -> str:
    keys = ("attend", "cluster", "arrange", "kernel_with_perm", "kernel")
    rows = [
        [entry["name"], case["case"]]
        + [f"{1000 * o[key]:.2f}" for key in keys]
        + [f"{o['overhead_share']:.1%}", fmt(o["cluster_density"]), fmt(o["density"])]
        + [f"{fmt(o[f'density_{n}'])} / {1000 * o[f'kernel_{n}']:.2f}" for n in SVG2_VARIANTS]
        for entry in layouts
        for case in entry["cases"]
        if (o := case.get("svg2_overhead"))
    ]
    headers = ["layout", "case", "svg2 ms", "k-means ms", "plan ms", "kernel+perm ms"]
    headers += ["kernel ms"]
    headers += ["overhead share", "cluster density", "block density"]
    headers += [f"{n}: density / kernel ms" for n in SVG2_VARIANTS]
    return markdown_table(headers, rows)


SVG2_VARIANTS = ("id_order", "block64")


def search_table(layouts: list[dict[str, Any]]) -> str:
    """AdaSpa's search cost against dense, and the search work's share of the attention time
    of a 50-step run: 10 dense steps, the first search at 10, an LSE-cached search at 30, reuse
    elsewhere. Search work is what a step costs beyond the attention it would compute anyway:
    the first search and an LSE-keeping step beyond a dense step (their outputs are the exact
    ones), the cached search beyond a reuse step. Two schedules: the method's as benched, and
    the other first search composed from `adaspa_overhead`'s parts: the paper's is its
    ``search`` (dense pass with LSE, mass pass, selection); ``warmup_lse=True``'s is its
    ``dense_with_mass`` plus the selection (``cached_search - mass_exact``), after a last
    warm-up step that costs ``dense_with_lse``."""
    rows = []
    for entry in layouts:
        for case in entry["cases"]:
            result = next((m for m in case["methods"] if m.get("method") == "adaspa"), None)
            o = case.get("adaspa_overhead", {})
            if result is None or "error" in result or "search" not in o:
                continue
            dense = case["dense"]["median"]
            steps = {label: s["median"] for label, s in result["steps"].items()}
            cached, reuse = steps["cached-search"], steps["reuse"]
            fused = o["dense_with_mass"] + o["cached_search"] - o["mass_exact"]
            schedules = (  # (last warm-up step, first search) of each schedule
                (steps.get("dense-lse", dense), steps["search"]),
                (dense, o["search"]) if "dense-lse" in steps else (o["dense_with_lse"], fused),
            )
            warm = round(0.2 * NUM_STEPS)
            rest = (warm - 1) * dense + cached + (NUM_STEPS - warm - 2) * reuse
            shares = [
                (last - dense + first - dense + cached - reuse) / (last + first + rest)
                for last, first in schedules
            ]
            rows.append(
                [entry["name"], case["case"]]
                + [f"{first / dense:.2f}x" for _, first in schedules]
                + [f"{cached / dense:.2f}x"]
                + [f"{o[key] / dense:.2f}x" if key in o else "-" for key in MASS_KEYS]
                + [f"{share:.1%}" for share in shares]
            )
    other = "other first search (composed)"
    headers = ["layout", "case", "first search", other, "cached-search step"]
    headers += ["mass (exact)", "mass (sampled)", "search share of 50 steps", "other schedule"]
    return markdown_table(headers, rows)


MASS_KEYS = ("mass_exact", "mass_sampled")
# Rows per 64-token query block that AdaSpa's sampled search reads (`AdaSpa.search_rows`).
SAMPLED_ROWS = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layouts", default="480p,720p", help=f"comma-separated: {', '.join(LAYOUTS)}"
    )
    add_common_args(parser)
    args = parser.parse_args(argv)
    device, out = resolve_args(args, "attention-layer-tiny" if args.tiny else "attention-layer")
    if args.tiny:
        layouts = TINY_LAYOUTS
    else:
        layouts = {n: LAYOUTS[n] for n in chosen(parser, "--layouts", args.layouts, LAYOUTS)}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    methods = methods_from(args.methods)
    with torch.inference_mode():
        results = [
            bench_layout(name, spec, methods, args, device, dtype) for name, spec in layouts.items()
        ]
    body = {
        "tiny": args.tiny,
        "dtype": str(dtype).removeprefix("torch."),
        "num_steps": NUM_STEPS,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "sharpness": SHARPNESS,
        "spatial_scale": SPATIAL_SCALE,
        "temporal_scale": TEMPORAL_SCALE,
        "layouts": results,
    }
    write_results(out, device, body)
    print(table(results))
    print(overhead_table(results))
    print(search_table(results))
    print(svg2_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
