# ruff: noqa: B023, E402, E731  (a probe, kept as it was run)
"""GPU probe: SVG's profiling pass (`masked_row_errors`) by launch shape, after the keep flags
became one 64-bit word per (row, 64 keys) instead of a byte pointer per (row, key).

    python benchmarks/probes/svg_profiling_registers.py OUT.json [--final]

Offline, ptxas put the pass at 255 registers with 1,416 bytes spilled for 64-row tiles of 4
warps before the change (768 after), and none for 64 rows of 8 warps. This measures, at Wan
480p and 720p (bf16, random inputs), each (rows per tile, warps, stages) by key splits (None:
the launcher's choice) and the merge's row tile: registers and spills as compiled, the mean of
back-to-back calls, and the relative error of the errors against the float64 reference (also
bf16/fp16 at ragged sizes). Then the GPU time per kernel of whole SVG calls (profiler), random
and structured inputs: at the fastest shape, or with ``--final`` at the package's defaults
after a short sweep around them. Shapes are set through the module's constants, the probe's
own switch. The first run (``svg_profiling_registers-h200.json``) had the 4-warp, 16-row-merge
defaults of the time, with those constants under their earlier names.
"""

import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from attention_layer import LAYOUTS, make_qkv, mean_seconds
from torch.profiler import ProfilerActivity, profile

from dit_sparse.kernels import masked_row_errors
from dit_sparse.kernels import masked_rows as mr
from dit_sparse.kernels.reference import masked_row_errors_reference
from dit_sparse.methods import AttentionCall, resolve_method
from dit_sparse.quality.environment import environment

device = torch.device("cuda")
out_path = Path(sys.argv[1])
final = "--final" in sys.argv[2:]
result: dict = {"environment": environment(device), "sweep": [], "merge": [], "profiles": []}
started = time.perf_counter()


def save() -> None:
    out_path.write_text(json.dumps(result, indent=1))


def compiled_resources(fn) -> list:
    """(registers, spills) of every compiled variant of a jitted kernel, as the driver loaded them."""
    found = []
    for caches in getattr(fn, "device_caches", {}).values():
        for kernel in caches[0].values():
            found.append([getattr(kernel, "n_regs", None), getattr(kernel, "n_spills", None)])
    return found


DEFAULTS = (dict(mr._GPU_TILES), mr._GPU_STAGES, mr._MERGE_ROW_TILE)


def gpu_us_per_call(fn, calls: int = 10) -> dict[str, float]:
    """GPU microseconds per call of each kernel ``fn`` launches (profiler, ``calls`` calls)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return {
        e.key[:60]: e.self_device_time_total / calls
        for e in prof.key_averages()
        if e.self_device_time_total
    }


def set_shape(rows: int, warps: int, stages: int, merge_rows: int = DEFAULTS[2]) -> None:
    mr._GPU_TILES = {**DEFAULTS[0], 128: (rows, warps)}
    mr._GPU_STAGES = stages
    mr._MERGE_ROW_TILE = merge_rows


def ragged_checks(rows_per_tile: int, warps: int, stages: int) -> list[dict]:
    """bf16 and fp16 against float64 at ragged sizes (not multiples of 64 keys or rows)."""
    from dit_sparse.layout import TokenLayout

    checks = []
    for dtype in (torch.bfloat16, torch.float16):
        for layout, sampled in (
            (TokenLayout(5, 9, 13, text_len=7), 37),
            (TokenLayout(3, 16, 16), 64),
        ):
            method = resolve_method("svg", num_sampled_rows=sampled, block_size=64)
            m = method.masks(layout, device)
            x = [torch.randn(2, 3, layout.seq_len, 128, device=device, dtype=dtype) for _ in "qkv"]
            r = method.sample_rows(layout, device, None)
            got = masked_row_errors(*x, r, m.token_blocks, m.block_masks)
            ref = masked_row_errors_reference(
                *(t.double() for t in x), r, m.token_blocks, m.block_masks, 128**-0.5
            )
            err = float(((got.double() - ref).abs().max() / ref.abs().max()).item())
            checks.append({"dtype": str(dtype), "layout": layout.describe(), "rel_error": err})
    return checks


if final:
    SHAPES = [(*DEFAULTS[0][128], DEFAULTS[1]), (64, 8, 4)]
    SPLITS = {"480p": [None], "720p": [None]}
else:
    SHAPES = [(64, 4, 2), (64, 8, 2), (64, 8, 3), (32, 4, 2), (32, 4, 3), (32, 8, 2)]
    SPLITS = {"480p": [None, 6, 11, 16, 22, 33], "720p": [None, 4, 7, 11, 14, 21]}
svg = resolve_method("svg")
inputs = {}
for name in ("480p", "720p"):
    layout, heads, _ = LAYOUTS[name]
    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (
        torch.randn(1, heads, layout.seq_len, 128, device=device, generator=g).bfloat16()
        for _ in range(3)
    )
    masks = svg.masks(layout, device)
    rows = svg.sample_rows(layout, device, None)
    args = (q, k, v, rows, masks.token_blocks, masks.block_masks)
    inputs[name] = args
    reference = masked_row_errors_reference(
        *(t.double() for t in (q, k, v)), rows, masks.token_blocks, masks.block_masks, 128**-0.5
    )
    for rows_per_tile, warps, stages in SHAPES:
        set_shape(rows_per_tile, warps, stages)
        getattr(mr._masked_rows_partial, "device_caches", {}).clear()
        if name == "480p":
            result.setdefault("ragged_checks", []).append(
                {
                    "shape": [rows_per_tile, warps, stages],
                    "checks": ragged_checks(rows_per_tile, warps, stages),
                }  # fmt: skip
            )
        for splits in SPLITS[name]:
            entry = {"layout": name, "rows": rows_per_tile, "warps": warps, "stages": stages,
                     "splits": splits}  # fmt: skip
            try:
                call = lambda: masked_row_errors(*args, splits=splits, keep_bits=masks.keep_bits)
                got = call()
                entry["rel_error"] = float(
                    ((got.double() - reference).abs().max() / reference.abs().max()).item()
                )
                entry["us"] = 1e6 * mean_seconds(call, device, calls=30)
                entry["regs_spills"] = compiled_resources(mr._masked_rows_partial)
            except Exception as err:  # noqa: BLE001  (record it, try the next)
                entry["error"] = f"{type(err).__name__}: {err}"[:300]
            print(entry, flush=True)
            result["sweep"].append(entry)
            save()
result["sweep_seconds"] = time.perf_counter() - started

# The fastest shape and split count per layout; then the merge's row tile at that shape.
best = {}
for name in ("480p", "720p"):
    runs = [e for e in result["sweep"] if e["layout"] == name and "us" in e]
    best[name] = min(runs, key=lambda e: e["us"])
result["best"] = best
for name, entry in best.items() if not final else ():
    set_shape(entry["rows"], entry["warps"], entry["stages"])
    args = inputs[name]
    masks = svg.masks(LAYOUTS[name][0], device)
    for merge_rows in (4, 8, 16):
        mr._MERGE_ROW_TILE = merge_rows
        call = lambda: masked_row_errors(*args, splits=entry["splits"], keep_bits=masks.keep_bits)
        kernels = gpu_us_per_call(call)
        row = {"layout": name, "merge_rows": merge_rows, "gpu_us_per_call": kernels,
               "mean_us": 1e6 * mean_seconds(call, device, calls=30)}  # fmt: skip
        print(row, flush=True)
        result["merge"].append(row)
        save()
del inputs
if not final:
    best_merge = {
        name: min((r for r in result["merge"] if r["layout"] == name), key=lambda r: r["mean_us"])[
            "merge_rows"
        ]
        for name in best
    }
    result["best_merge_rows"] = best_merge

# Whole SVG calls at the best shape and split count, or (--final) at the package's defaults.
svg_module = sys.modules["dit_sparse.methods.svg"]
for name, entry in best.items():
    if final:
        set_shape(*DEFAULTS[0][128], DEFAULTS[1])
        svg_module.masked_row_errors = masked_row_errors
    else:
        set_shape(entry["rows"], entry["warps"], entry["stages"], best_merge[name])
        svg_module.masked_row_errors = functools.partial(masked_row_errors, splits=entry["splits"])
    layout, heads, _ = LAYOUTS[name]
    for case in ("random", "structured"):
        q, k, v = make_qkv(case, layout, heads, device, torch.bfloat16)
        call = AttentionCall(layout, 1, 2, 10, 50, "cond", {})
        attend = lambda: svg.attend(q, k, v, call)
        attend()
        kernels = gpu_us_per_call(attend)
        total = sum(kernels.values())
        attention = sum(t for key, t in kernels.items() if key.startswith("_block_sparse"))
        row = {"layout": name, "case": case, "gpu_us_per_call": kernels, "total_us": total,
               "overhead_share": 1 - attention / total,
               "temporal_heads": float(call.info["temporal_heads"]),
               "attend_mean_us": 1e6 * mean_seconds(attend, device, calls=20)}  # fmt: skip
        print(row, flush=True)
        result["profiles"].append(row)
        save()
result["seconds"] = time.perf_counter() - started
save()
