"""Block-sparse attention kernel against cuDNN dense SDPA and compiled FlexAttention.

    python benchmarks/kernel.py [--out PATH]             # on a GPU: checks, sweep, extras
    python benchmarks/kernel.py --precision 8bit [--out PATH]   # 8-bit checks and columns
    python benchmarks/kernel.py --tune PATH [--head-dim 64]   # try kernel configs, write, exit
    TRITON_INTERPRET=1 python benchmarks/kernel.py --tiny   # a CPU smoke test of the script

One run writes ``results/kernel-<gpu>.json`` with:

- ``checks``: bf16 and fp16 error of the kernel (O and LSE; perm plans with every head or
  every other head permuted; token-major strides) against the float64 torch reference on a
  ragged shape, next to the error of SDPA with the same boolean mask; SVG's profiling kernel
  (`masked_row_errors`); block-mass and `dense_attention_with_lse` LSE errors.
- ``sweep``: B = 1, H in {12, 40}, S in {32760, 75600} (Wan 2.1 480p and 720p), D = 128, bf16,
  block plans of density 1, 1/2, ..., 1/16 (128 x 128 blocks, the same number of random key
  blocks in every row, the diagonal always kept): the kernel, FlexAttention compiled on the same
  mask (`BlockPlan.to_flex_block_mask`) and cuDNN dense SDPA, with raw ms, effective TFLOP/s
  (computed blocks only), speedup over cuDNN dense and time ratio Flex / kernel.
- with ``--precision 8bit`` (``results/kernel-8bit-<gpu>.json``): ``checks["8bit"]``, the
  8-bit kernel's cosine similarity, relative L2 and LSE errors against float64 on random,
  structured (`attention_layer.structured_qk`) and K-offset inputs, plain and permuted plans,
  beside the bf16 kernel's; the sweep gets 8-bit columns (the quantisation passes included,
  and timed alone as ``quantize_ms``); ``extras`` is left out.
- ``extras``: perm plans (every head, or every other head, permuted) against the same plan
  without perm; `block_attention_mass` (exact at two block sizes, and from 16 of 64 rows)
  against one dense pass; `dense_attention_with_lse` against cuDNN SDPA without LSE.

Times are `triton.testing.do_bench` medians (its L2 flush between calls included); every
input is far larger than the L2 cache, so inputs are not rotated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dit_sparse import SparseVideoGen
from dit_sparse.kernels import (
    block_attention_mass,
    block_sparse_attention,
    block_sparse_attention_reference,
    dense_attention_with_lse,
    masked_row_errors,
)
from dit_sparse.kernels.attention_8bit import (
    default_config_8bit,
    launch_attention_8bit,
    quantize_8bit,
)
from dit_sparse.kernels.block_mass import launch_block_attention_mass
from dit_sparse.kernels.block_sparse_attention import (
    PRECISIONS,
    default_config,
    launch_block_sparse_attention,
)
from dit_sparse.kernels.launch import KernelConfig, triton_runs_on
from dit_sparse.kernels.reference import (
    block_attention_mass_reference,
    masked_row_errors_reference,
    token_mask_rows,
)
from dit_sparse.layout import TokenLayout
from dit_sparse.plan import BlockPlan
from dit_sparse.quality.environment import device_slug, environment

RESULTS = Path(__file__).resolve().parent / "results"
HEAD_DIM = 128
BLOCK = 128
SHAPES = [(12, 32760), (40, 32760), (12, 75600), (40, 75600)]  # (heads, tokens), batch 1
DENSITIES = [1.0, 1 / 2, 1 / 4, 1 / 8, 1 / 16]
TINY = dict(shapes=[(2, 300)], check_shape=(2, 200), block=32, head_dim=32, frames=(2, 10, 10))
# (frames, rows, columns) of the structured 8-bit check: check_shape's tokens.
CHECK_FRAMES = (10, 20, 20)
# Configs `--tune` tries for the attention kernel and the mass kernel (bf16).
TUNE_ATTENTION = [
    KernelConfig(*c)
    for c in [
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 64, 8, 4),
        (128, 128, 8, 2),
        (128, 128, 8, 3),
        (128, 128, 4, 3),
        (64, 64, 4, 3),
        (64, 128, 4, 3),
    ]
]
# Configs of the 8-bit kernel (`--tune PATH --precision 8bit`; no mass configs then).
TUNE_ATTENTION_8BIT = [
    KernelConfig(*c)
    for c in [
        (128, 128, 8, 3),
        (128, 128, 8, 2),
        (128, 128, 8, 4),
        (128, 128, 4, 3),
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (64, 128, 4, 3),
        (64, 64, 4, 4),
    ]
]
TUNE_MASS = [KernelConfig(128, bn, w, s) for bn in (64, 128) for w in (4, 8) for s in (2, 3)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=None, help="results JSON (default: results/kernel-<gpu>.json)"
    )
    parser.add_argument(
        "--tune", default=None, metavar="PATH", help="try configs, write PATH, exit"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke test)")
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM, help="head dim (default 128)")
    parser.add_argument(
        "--shapes",
        default=None,
        help="HxS,... to sweep (default: 12x32760,40x32760,12x75600,40x75600)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="bf16",
        help="8bit: also the 8-bit kernel (checks and sweep columns; no extras)",
    )
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        raise SystemExit("the kernel benchmark needs a CUDA GPU (or --tiny for a smoke test)")
    sizes = (
        TINY
        if args.tiny
        else dict(
            shapes=SHAPES, check_shape=(4, 4000), block=BLOCK, head_dim=HEAD_DIM,
            frames=CHECK_FRAMES,
        )
    )  # fmt: skip
    sizes["precision"] = args.precision
    if not args.tiny:
        sizes["head_dim"] = args.head_dim
    if args.shapes:
        sizes["shapes"] = [
            tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")
        ]
    torch.manual_seed(0)
    if args.tune:
        tune(
            device,
            sizes,
            lambda result: write(Path(args.tune), {**environment(device), "tune": result}),
        )
        return
    prefix = "kernel" if args.precision == "bf16" else f"kernel-{args.precision}"
    out = Path(args.out) if args.out else RESULTS / f"{prefix}-{device_slug(device)}.json"
    document: dict[str, Any] = {
        **environment(device),
        "batch": 1,
        "head_dim": sizes["head_dim"],
        "block": sizes["block"],
        "dtype": "bfloat16",
        "precision": args.precision,
        "densities": DENSITIES,
        "timing": "triton.testing.do_bench median, ms" if device.type == "cuda" else "wall ms",
    }
    sections = [("checks", checks), ("sweep", sweep), ("extras", extras)]
    if args.precision == "8bit":
        sections[-1] = ("checks_8bit", checks_8bit)
    for section, run in sections:
        document[section] = run(device, sizes)
        write(out, document)  # after each section, so that a cut-off run keeps what it has
    print_tables(document)


# --- inputs -----------------------------------------------------------------------------------


def random_qkv(heads: int, seq_len: int, head_dim: int, dtype, device, token_major=False):
    """Random q, k, v ``[1, H, S, D]``; ``token_major`` gives diffusers' transposed strides."""
    shape = (1, seq_len, heads, head_dim) if token_major else (1, heads, seq_len, head_dim)
    tensors = [torch.randn(shape, device=device, dtype=dtype) for _ in range(3)]
    return [t.transpose(1, 2) for t in tensors] if token_major else tensors


def random_plan(heads: int, seq_len: int, block: int, density: float, device, perm=False):
    """Every query block keeps ``round(density * nk)`` key blocks (at least 1): its diagonal
    block and others at random, different per head. ``perm``: a random permutation per head
    (True), or ``"half"``: for every other head, the rest in place (as SVG's spatial heads)."""
    n = -(-seq_len // block)
    keep = max(1, round(density * n))
    scores = torch.rand(1, heads, n, n, device=device)
    scores.diagonal(dim1=-2, dim2=-1).fill_(2.0)
    chosen = scores.topk(keep, dim=-1).indices
    mask = torch.zeros(1, heads, n, n, dtype=torch.bool, device=device).scatter_(-1, chosen, True)
    plan = BlockPlan.from_block_mask(mask, block, block, seq_len)
    if not perm:
        return plan
    permutation = torch.argsort(torch.rand(1, heads, seq_len, device=device), dim=-1)
    permuted = None
    if perm == "half":
        permuted = (torch.arange(heads, device=device) % 2 == 0)[None]
        permutation = torch.where(
            permuted[..., None], permutation, torch.arange(seq_len, device=device)
        )
    return dataclasses.replace(plan, perm=permutation, permuted=permuted)


# --- measuring --------------------------------------------------------------------------------


def bench(fn: Callable[[], Any], device) -> float:
    """Median milliseconds of ``fn()``."""
    if device.type == "cuda":
        import triton

        return triton.testing.do_bench(fn, warmup=100, rep=500, return_mode="median")
    fn()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or ``{"error": ...}`` when it raises (a config that does not compile)."""
    try:
        return fn(*args)
    except Exception as error:  # noqa: BLE001 - recorded, and the run goes on
        message = f"{type(error).__name__}: {error}"
        print(f"  failed: {message[:300]}", flush=True)
        return {"error": message[:2000]}


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).norm() / ref.norm()).item()


def attention_flops(plan: BlockPlan, head_dim: int, batch: int = 1) -> float:
    """FLOPs of the computed blocks (QK^T and PV), counting only tokens inside the sequence."""
    pairs = plan.density_per_head().expand(batch, -1).sum().item() * plan.seq_len**2
    return 4.0 * head_dim * pairs


def dense_sdpa(device) -> Callable:
    """cuDNN SDPA on a GPU; plain SDPA elsewhere."""
    if device.type != "cuda":
        return F.scaled_dot_product_attention
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def cudnn(q, k, v):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    return cudnn


def flex(device) -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if device.type == "cuda" else flex_attention


# --- sections ---------------------------------------------------------------------------------


def checks(device, sizes) -> dict[str, Any]:
    """Errors against the float64 reference on a ragged shape, with SDPA's for scale."""
    heads, seq_len = sizes["check_shape"]
    head_dim, block = sizes["head_dim"], sizes["block"]
    result: dict[str, Any] = {"heads": heads, "seq_len": seq_len, "density": 0.25}
    dtypes = (torch.bfloat16, torch.float16) if device.type == "cuda" else (torch.float32,)
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        q, k, v = random_qkv(heads, seq_len, head_dim, dtype, device, token_major=True)
        plan = random_plan(heads, seq_len, block, 0.25, device)
        ref, ref_lse = block_sparse_attention_reference(
            q.double(), k.double(), v.double(), plan, return_lse=True
        )
        out, lse = block_sparse_attention(q, k, v, plan, return_lse=True)
        mask = token_mask_rows(plan, slice(0, seq_len), 1)
        sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        result[name] = {
            "out_rel_error": rel_error(out, ref),
            "sdpa_bool_mask_rel_error": rel_error(sdpa, ref),
            "lse_max_abs_error": (lse.double() - ref_lse).abs().max().item(),
            "output_finite": bool(torch.isfinite(out).all()),
        }
        for heads_permuted in ("all", "half"):
            perm_plan = random_plan(heads, seq_len, block, 0.25, device, perm=heads_permuted)
            perm_ref = block_sparse_attention_reference(*(t.double() for t in (q, k, v)), perm_plan)
            perm_out = block_sparse_attention(q, k, v, perm_plan)
            result[name][f"perm_{heads_permuted}_out_rel_error"] = rel_error(perm_out, perm_ref)
        result[name]["masked_row_errors_rel_error"] = check_masked_rows(q, k, v, seq_len)
        print(f"check {name}: {result[name]}", flush=True)
    q, k, v = random_qkv(heads, seq_len, head_dim, dtypes[0], device)
    dense_ref, dense_ref_lse = block_sparse_attention_reference(
        q.double(), k.double(), v.double(), BlockPlan.dense(1, 1, seq_len, block, block, device),
        return_lse=True,
    )  # fmt: skip
    out, lse = dense_attention_with_lse(q, k, v)
    mass = block_attention_mass(q, k, lse, block, block)
    mass_ref = block_attention_mass_reference(q.double(), k.double(), lse.double(), block, block)
    result["dense_with_lse"] = {
        "out_rel_error": rel_error(out, dense_ref),
        "lse_max_abs_error": (lse.double() - dense_ref_lse).abs().max().item(),
    }
    if device.type == "cuda":
        flash_lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[1]
        result["dense_with_lse"]["flash_lse_max_abs_error"] = (
            (flash_lse.double().reshape(dense_ref_lse.shape) - dense_ref_lse).abs().max().item()
        )
    result["block_mass"] = {
        "max_abs_error": (mass.double() - mass_ref).abs().max().item(),
        "row_sum_max_deviation": (mass.double().sum(-1) - 1).abs().max().item(),
    }
    print(f"check dense/mass: {result['dense_with_lse']} {result['block_mass']}", flush=True)
    if device.type == "cuda":
        result["head_dims"] = {d: guarded(check_head_dim, d, device) for d in (16, 32, 64, 256)}
    return result


def check_masked_rows(q, k, v, seq_len: int) -> float:
    """Relative error of SVG's profiling kernel against its float64 reference, on the masks
    SVG builds for ``seq_len`` tokens: 4 frames of 8 rows, text for the rest."""
    width = seq_len // 32
    layout = TokenLayout(4, 8, width, text_len=seq_len - 32 * width)
    method = SparseVideoGen()
    masks = method.masks(layout, q.device)
    rows = method.sample_rows(layout, q.device, None)
    args = (rows, masks.token_blocks, masks.block_masks)
    errors = masked_row_errors(q, k, v, *args)
    reference = masked_row_errors_reference(
        *(t.double() for t in (q, k, v)), *args, q.shape[-1] ** -0.5
    )
    return rel_error(errors, reference)


def check_head_dim(head_dim: int, device) -> dict[str, float]:
    """Each head dim's default configs compile and agree with the reference (bf16, S = 1000)."""
    q, k, v = random_qkv(2, 1000, head_dim, torch.bfloat16, device)
    plan = random_plan(2, 1000, 64, 0.5, device)
    ref = block_sparse_attention_reference(q.double(), k.double(), v.double(), plan)
    _, lse = dense_attention_with_lse(q, k, v)
    mass = block_attention_mass(q, k, lse, 64, 64)
    mass_ref = block_attention_mass_reference(q.double(), k.double(), lse.double(), 64, 64)
    result = {
        "out_rel_error": rel_error(block_sparse_attention(q, k, v, plan), ref),
        "mass_max_abs_error": (mass.double() - mass_ref).abs().max().item(),
    }
    print(f"check head dim {head_dim}: {result}", flush=True)
    return result


def sweep(device, sizes) -> list[dict[str, Any]]:
    head_dim, block = sizes["head_dim"], sizes["block"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dense, flex_attention = dense_sdpa(device), flex(device)
    rows = []
    for heads, seq_len in sizes["shapes"]:
        q, k, v = random_qkv(heads, seq_len, head_dim, dtype, device)
        cudnn_ms = bench(partial(dense, q, k, v), device)
        dense_flops = 4.0 * head_dim * heads * seq_len**2
        print(f"H{heads} S{seq_len}: cuDNN dense {cudnn_ms:.3f} ms", flush=True)
        eight_bit, quantize_ms = sizes["precision"] == "8bit", None
        if eight_bit and triton_runs_on(device):  # the passes alone; the reference has none
            plain = BlockPlan.dense(1, 1, seq_len, block, block, device)
            quantize_ms = bench(partial(quantize_8bit, q, k, v, plain, head_dim**-0.5), device)
        for density in DENSITIES:
            plan = random_plan(heads, seq_len, block, density, device)
            block_mask = plan.to_flex_block_mask()
            ours_ms = bench(partial(block_sparse_attention, q, k, v, plan), device)
            flex_call = partial(flex_attention, q, k, v, block_mask=block_mask)
            flex_ms = guarded(bench, flex_call, device)
            flops = attention_flops(plan, head_dim)
            row = {
                "heads": heads,
                "seq_len": seq_len,
                "density": density,
                "plan_density": plan.density,
                "kernel_ms": ours_ms,
                "flex_ms": flex_ms,
                "cudnn_dense_ms": cudnn_ms,
                "kernel_tflops": flops / ours_ms / 1e9,
                "cudnn_dense_tflops": dense_flops / cudnn_ms / 1e9,
                "speedup_vs_cudnn": cudnn_ms / ours_ms,
                "flex_over_kernel": flex_ms / ours_ms if isinstance(flex_ms, float) else None,
                "flex_speedup_vs_cudnn": cudnn_ms / flex_ms if isinstance(flex_ms, float) else None,
            }
            if eight_bit:
                ms = bench(partial(block_sparse_attention, q, k, v, plan, precision="8bit"), device)
                row.update(
                    kernel_8bit_ms=ms, quantize_ms=quantize_ms,
                    kernel_8bit_tflops=flops / ms / 1e9, speedup_8bit_vs_cudnn=cudnn_ms / ms,
                    bf16_over_8bit=ours_ms / ms,
                )  # fmt: skip
            rows.append(row)
            print(
                f"  density {density:.4f}: kernel {ours_ms:.3f} ms ({row['kernel_tflops']:.0f} "
                f"TFLOP/s, {row['speedup_vs_cudnn']:.2f}x cuDNN), flex {flex_ms}"
                + (
                    f", 8-bit {row['kernel_8bit_ms']:.3f} ms ({row['speedup_8bit_vs_cudnn']:.2f}x)"
                    if "kernel_8bit_ms" in row
                    else ""
                ),
                flush=True,
            )
        del q, k, v
    return rows


def checks_8bit(device, sizes) -> dict[str, Any]:
    """The 8-bit kernel against float64 attention (and the bf16 kernel's error beside it), at
    the check shape: random, structured (local heads, ``head_dim`` 128) and K with a large
    per-channel offset, on a random plan of density 1/4 (also permuted) and a full plan."""
    from attention_layer import structured_qk

    heads, seq_len = sizes["check_shape"]
    head_dim, block = sizes["head_dim"], sizes["block"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator(device=device).manual_seed(0)
    result: dict[str, Any] = {"heads": heads, "seq_len": seq_len, "dtype": str(dtype)}
    for case in ("random", "structured", "k_offset"):
        if case == "structured":
            q = k = structured_qk(TokenLayout(*sizes["frames"]), heads, generator, device)
            v = torch.randn(q.shape, generator=generator, device=device)
        else:
            q, k, v = random_qkv(heads, seq_len, head_dim, torch.float32, device)
        if case == "k_offset":
            k = k + 8.0 * torch.randn(1, heads, 1, head_dim, generator=generator, device=device)
        q, k, v = (t.to(dtype) for t in (q, k, v))
        plans = {
            "density 1/4": random_plan(heads, seq_len, block, 0.25, device),
            "density 1/4 permuted": random_plan(heads, seq_len, block, 0.25, device, perm=True),
            "dense": BlockPlan.dense(1, 1, seq_len, block, block, device),
        }
        for name, plan in plans.items():
            ref, ref_lse = block_sparse_attention_reference(
                *(t.double() for t in (q, k, v)), plan, return_lse=True
            )
            out, lse = block_sparse_attention(q, k, v, plan, return_lse=True, precision="8bit")
            bf16 = block_sparse_attention(q, k, v, plan)
            finite = torch.isfinite(ref_lse)
            entry = {
                "head_dim": q.shape[-1],
                "cosine": cosine(out, ref),
                "rel_l2": rel_error(out, ref),
                "lse_max_abs_error": (lse.double() - ref_lse)[finite].abs().max().item(),
                "bf16_kernel_rel_l2": rel_error(bf16, ref),
                "output_finite": bool(torch.isfinite(out).all()),
            }
            result[f"{case}, {name}"] = entry
            print(f"check 8bit {case}, {name}: {entry}", flush=True)
    return result


def cosine(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double().flatten(), ref.flatten()
    return (x @ ref / (x.norm() * ref.norm())).item()


def extras(device, sizes) -> dict[str, Any]:
    """Perm cost, block mass and the dense pass with LSE, at the first sweep shape."""
    heads, seq_len = sizes["shapes"][0]
    head_dim, block = sizes["head_dim"], sizes["block"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = random_qkv(heads, seq_len, head_dim, dtype, device)
    result: dict[str, Any] = {"heads": heads, "seq_len": seq_len}
    perm_rows = []
    for density in (1.0, 1 / 4, 1 / 8):
        for heads_permuted in ("all", "half"):
            plan = random_plan(heads, seq_len, block, density, device, perm=heads_permuted)
            plain = BlockPlan(plan.kv_indices, plan.kv_counts, block, block, seq_len)
            plain_ms = bench(partial(block_sparse_attention, q, k, v, plain), device)
            perm_ms = bench(partial(block_sparse_attention, q, k, v, plan), device)
            perm_rows.append(
                {
                    "density": density,
                    "heads_permuted": heads_permuted,
                    "plain_ms": plain_ms,
                    "perm_ms": perm_ms,
                    "perm_over_plain": perm_ms / plain_ms,
                }
            )
    result["perm"] = perm_rows
    dense = dense_sdpa(device)
    cudnn_ms = bench(partial(dense, q, k, v), device)
    dense_plan = BlockPlan.dense(1, 1, seq_len, block, block, device)
    kernel_dense = partial(block_sparse_attention, q, k, v, dense_plan, return_lse=True)
    kernel_dense_ms = bench(kernel_dense, device)
    with_lse_ms = bench(partial(dense_attention_with_lse, q, k, v), device)
    _, lse = dense_attention_with_lse(q, k, v)
    mass_rows = []
    for mass_block, rows in ((block, None), (block // 2, None), (block // 2, block // 8)):
        mass = partial(block_attention_mass, q, k, lse, mass_block, mass_block, rows=rows)
        mass_ms = bench(mass, device)
        mass_rows.append(
            {
                "block": mass_block,
                "rows": rows or mass_block,
                "mass_ms": mass_ms,
                "mass_over_dense_with_lse": mass_ms / with_lse_ms,
                "mass_over_cudnn_dense": mass_ms / cudnn_ms,
            }
        )
    result["dense"] = {
        "cudnn_sdpa_ms": cudnn_ms,
        "dense_with_lse_ms": with_lse_ms,
        "kernel_dense_with_lse_ms": kernel_dense_ms,
        "with_lse_over_cudnn": with_lse_ms / cudnn_ms,
    }
    if device.type == "cuda":
        flash = torch.ops.aten._scaled_dot_product_flash_attention
        result["dense"]["flash_with_lse_ms"] = guarded(bench, partial(flash, q, k, v), device)
    result["mass"] = mass_rows
    print(f"extras: {json.dumps(result)}", flush=True)
    return result


def tune(device, sizes, save: Callable[[dict[str, Any]], None]) -> None:
    """Time each config of TUNE_ATTENTION at densities 1, 1/8 and 1/16, then TUNE_MASS, on the
    first shape (with ``--precision 8bit``: TUNE_ATTENTION_8BIT, the quantisation passes
    included, errors against the bf16 kernel); ``save`` gets the results so far after each
    config."""
    heads, seq_len = sizes["shapes"][0]
    head_dim, block = sizes["head_dim"], sizes["block"]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = random_qkv(heads, seq_len, head_dim, dtype, device)
    scale = 1 / math.sqrt(head_dim)
    out = torch.empty_like(q)
    plans = {d: random_plan(heads, seq_len, block, d, device) for d in (1.0, 1 / 8, 1 / 16)}
    reference = {d: block_sparse_attention(q, k, v, plan) for d, plan in plans.items()}
    _, dense_lse = dense_attention_with_lse(q, k, v)
    eight_bit = sizes["precision"] == "8bit"
    launch = launch_attention_8bit if eight_bit else launch_block_sparse_attention
    default = (default_config_8bit if eight_bit else default_config)(head_dim, block, block, device)
    result: dict[str, Any] = {
        "heads": heads,
        "seq_len": seq_len,
        "head_dim": head_dim,
        "default": default.__dict__,
        "attention": [],
        "mass": [],
    }
    configs = [("attention", c) for c in (TUNE_ATTENTION_8BIT if eight_bit else TUNE_ATTENTION)]
    for kind, config in configs + [("mass", c) for c in ([] if eight_bit else TUNE_MASS)]:
        row: dict[str, Any] = {"config": config.__dict__}
        if kind == "attention":
            for density, plan in plans.items():
                run = partial(launch, q, k, v, plan, scale, out, None, config)
                out.fill_(float("nan"))
                row[f"ms@{density:g}"] = guarded(bench, run, device)
                row[f"rel_error@{density:g}"] = rel_error(out, reference[density].double())
        else:
            for mass_block in (block, block // 2):
                run = partial(
                    launch_block_attention_mass,
                    q,
                    k,
                    dense_lse,
                    mass_block,
                    mass_block,
                    scale,
                    config,
                )
                row[f"ms@block{mass_block}"] = guarded(bench, run, device)
        print(f"tune {kind} {row}", flush=True)
        result[kind].append(row)
        save(result)


# --- output -----------------------------------------------------------------------------------


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"wrote {path}", flush=True)


def print_tables(document: dict[str, Any]) -> None:
    """The sweep as a markdown table (the README's), then the extras."""
    print("\n| H | S | density | kernel ms | TFLOP/s | vs cuDNN dense | Flex ms | Flex / kernel |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in document["sweep"]:
        flex_ms = row["flex_ms"] if isinstance(row["flex_ms"], float) else float("nan")
        print(
            f"| {row['heads']} | {row['seq_len']} | 1/{round(1 / row['density'])} | "
            f"{row['kernel_ms']:.2f} | {row['kernel_tflops']:.0f} | "
            f"{row['speedup_vs_cudnn']:.2f}x | {flex_ms:.2f} | "
            f"{(row['flex_over_kernel'] or float('nan')):.2f} |"
        )
    rows_8bit = [row for row in document["sweep"] if "kernel_8bit_ms" in row]
    if rows_8bit:
        print(
            "\n| H | S | density | 8-bit ms | TFLOP/s | vs cuDNN dense | bf16 / 8-bit | quantise ms |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in rows_8bit:
            print(
                f"| {row['heads']} | {row['seq_len']} | 1/{round(1 / row['density'])} | "
                f"{row['kernel_8bit_ms']:.2f} | {row['kernel_8bit_tflops']:.0f} | "
                f"{row['speedup_8bit_vs_cudnn']:.2f}x | {row['bf16_over_8bit']:.2f} | "
                f"{row['quantize_ms'] or float('nan'):.2f} |"
            )
    for section in ("extras", "checks_8bit"):
        if section in document:
            print(json.dumps(document[section], indent=1))
    print(json.dumps(document["checks"], indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
