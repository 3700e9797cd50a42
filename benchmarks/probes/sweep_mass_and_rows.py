# ruff: noqa: B023, E402, E731  (a one-off probe, kept as it was run)
"""GPU sweep for issues 6 and 7: (a) the block-mass reduction by a small dot against the
reshape-and-sum, in the mass pass and fused into the dense pass (accuracy in bf16/fp16 and
time); (b) `masked_row_errors` launch parameters, with each variant's registers and spills;
(c) SVG's overhead with the shared temporal permutation. Writes JSON to ``--out``
(``sweep_mass_and_rows-h100.json``). It ran against a tree with a ``MASS_BY_DOT`` switch in
``dit_sparse.kernels.block_mass`` (the dot reduction), removed after this sweep showed it slower,
so as committed it stops at that switch::

    python benchmarks/probes/sweep_mass_and_rows.py --out sweep.json
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attention_layer import svg_overhead

from dit_sparse.kernels import (
    block_attention_mass,
    block_sparse_attention,
    dense_attention_with_lse,
    dense_attention_with_mass,
    masked_row_errors,
)
from dit_sparse.kernels import block_mass as bm
from dit_sparse.kernels import masked_rows as mr
from dit_sparse.kernels.launch import KernelConfig
from dit_sparse.kernels.reference import (
    block_attention_mass_reference,
    block_sparse_attention_reference,
)
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import resolve_method

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
args = parser.parse_args()
dev = torch.device("cuda")
result: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
import triton

result["triton"] = triton.__version__


def timed(fn, reps=10):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def compiled_stats(fn):
    """(regs, spills) of every compiled variant of a jitted function (versions differ)."""
    out = []
    try:
        for entry in fn.device_caches.values():
            for kernel in entry[0].values():
                out.append((getattr(kernel, "n_regs", None), getattr(kernel, "n_spills", None)))
    except Exception as error:  # noqa: BLE001
        out.append(repr(error)[:200])
    return out


def log(*a):
    print(*a, flush=True)


# (a) accuracy of the mass, both reductions and several launch configs of the fused pass
from dit_sparse.kernels import dense_with_lse as dense_module

FUSED_CONFIGS = [(128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4)]
plain_config = dense_module.default_config


def use_fused_config(cfg):
    dense_module.default_config = lambda *a: KernelConfig(*cfg)


acc = {}
g = torch.Generator(device=dev).manual_seed(0)
S, H, D = 4133, 4, 128
for dtype in (torch.bfloat16, torch.float16):
    q, k, v = (torch.randn(1, H, S, D, device=dev, generator=g).to(dtype) for _ in range(3))
    _, lse = dense_attention_with_lse(q, k, v)
    stale = lse + 0.05 * torch.randn(lse.shape, device=dev, generator=g)
    ref = block_attention_mass_reference(q.double(), k.double(), stale.double(), 64, 64, D**-0.5)
    for by_dot in (False, True):
        bm.MASS_BY_DOT = by_dot
        name = f"{str(dtype)[6:]}_dot{int(by_dot)}"
        for cfg in FUSED_CONFIGS:
            use_fused_config(cfg)
            try:
                _, _, fused = dense_attention_with_mass(q, k, v, stale, 64, 64)
                err = float((fused.double() - ref).abs().max() / ref.abs().max())
            except Exception as error:  # noqa: BLE001
                err = repr(error)[:160]
            acc[f"fused_{name}_{cfg}"] = err
        alone = block_attention_mass(q, k, stale, 64, 64)
        acc[f"pass_{name}"] = float((alone.double() - ref).abs().max() / ref.abs().max())
    dense_module.default_config = plain_config
    # SVG's shared permutation: kernel against the reference (per-head perms).
    layout = TokenLayout(9, 16, 24)
    qs, ks, vs = (
        torch.randn(2, H, layout.seq_len, D, device=dev, generator=g).to(dtype) for _ in range(3)
    )
    svg = resolve_method("svg")
    kinds = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1]], device=dev)
    plan = svg.masks(layout, dev).plan(kinds)
    out = block_sparse_attention(qs, ks, vs, plan)
    ref_out = block_sparse_attention_reference(qs.float(), ks.float(), vs.float(), plan)
    acc[f"svg_shared_perm_{str(dtype)[6:]}"] = float(
        (out.float() - ref_out).abs().max() / ref_out.abs().max()
    )
result["accuracy"] = acc
log(json.dumps(acc, indent=1))
Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

# (b) speed
layouts = {"480p": (TokenLayout(21, 30, 52), 12), "720p": (TokenLayout(21, 45, 80), 40)}
speed = {}
for lname, (layout, H) in layouts.items():
    S = layout.seq_len
    q, k, v = (torch.randn(1, H, S, 128, device=dev, dtype=torch.bfloat16) for _ in range(3))
    r = {}
    reps = 10 if lname == "480p" else 4
    r["cudnn"] = timed(lambda: F.scaled_dot_product_attention(q, k, v), reps)
    r["dense_with_lse"] = timed(lambda: dense_attention_with_lse(q, k, v), reps)
    _, lse = dense_attention_with_lse(q, k, v)
    for by_dot in (False, True):
        bm.MASS_BY_DOT = by_dot
        for cfg in FUSED_CONFIGS:
            use_fused_config(cfg)
            try:
                r[f"dense_with_mass_dot{int(by_dot)}_{cfg}"] = timed(
                    lambda: dense_attention_with_mass(q, k, v, lse, 64, 64), reps
                )
            except Exception as error:  # noqa: BLE001
                r[f"dense_with_mass_dot{int(by_dot)}_{cfg}"] = repr(error)[:160]
        dense_module.default_config = plain_config
        configs = [(128, 64, 4, 2), (128, 128, 8, 2), (128, 128, 8, 3), (256, 128, 8, 2)]
        for bmm, bn, w, st in configs:
            cfg = KernelConfig(bmm, bn, w, st)
            try:
                r[f"mass_dot{int(by_dot)}_{bmm}x{bn}_w{w}_s{st}"] = timed(
                    lambda: bm.launch_block_attention_mass(q, k, lse, 64, 64, D**-0.5, cfg), reps
                )
            except Exception as error:  # noqa: BLE001
                r[f"mass_dot{int(by_dot)}_{bmm}x{bn}_w{w}_s{st}"] = repr(error)[:160]
        log(
            lname, {kk: round(vv * 1e3, 3) if isinstance(vv, float) else vv for kk, vv in r.items()}
        )
    r["regs_spills_attention"] = compiled_stats(
        __import__(
            "dit_sparse.kernels.block_sparse_attention", fromlist=["x"]
        )._block_sparse_attention_fwd
    )
    r["regs_spills_mass"] = compiled_stats(bm._block_mass_fwd)
    bm.MASS_BY_DOT = True

    # masked_rows sweep
    rows = torch.randint(0, S, (64,), device=dev)
    masks = resolve_method("svg").masks(layout, dev)
    rows_sweep = {}
    variants = [
        (64, 4, 2, 64),
        (64, 4, 3, 64),
        (64, 4, 2, 32),
        (64, 8, 2, 64),
        (64, 8, 3, 64),
        (32, 4, 2, 64),
        (32, 4, 3, 32),
        (16, 4, 2, 64),
        (64, 4, 2, 128),
    ]
    if lname == "720p":
        variants = variants[:4]
    for tile, warps, stages, bn in variants:
        mr._GPU_ROW_TILE[128], mr._GPU_WARPS, mr._GPU_STAGES, mr._BLOCK_N = tile, warps, stages, bn
        for splits in (11, 22, 44) if lname == "480p" else (7, 14, 28):
            key = f"tile{tile}_w{warps}_s{stages}_n{bn}_splits{splits}"
            try:
                rows_sweep[key] = timed(
                    lambda: masked_row_errors(
                        q, k, v, rows, masks.token_blocks, masks.block_masks, splits=splits
                    ),
                    reps,
                )
            except Exception as e:  # noqa: BLE001
                rows_sweep[key] = repr(e)[:200]
        rows_sweep[f"tile{tile}_w{warps}_s{stages}_n{bn}_regs_spills"] = compiled_stats(
            mr._masked_rows_partial
        )[-1:]
        log(
            lname,
            {
                kk: vv
                for kk, vv in rows_sweep.items()
                if kk.startswith(f"tile{tile}_w{warps}_s{stages}_n{bn}")
            },
        )
    mr._GPU_ROW_TILE[128], mr._GPU_WARPS, mr._GPU_STAGES, mr._BLOCK_N = 64, 4, 2, 64
    r["masked_rows"] = rows_sweep
    try:
        r["svg_overhead_shared_perm"] = svg_overhead((q, k, v), layout, dev)
    except Exception as error:  # noqa: BLE001
        r["svg_overhead_shared_perm"] = repr(error)[:300]
    log(lname, "svg", r["svg_overhead_shared_perm"])
    speed[lname] = r
    result["speed"] = speed
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    q = k = v = lse = None
    torch.cuda.empty_cache()
result["speed"] = speed
Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
