# ruff: noqa: B023, E402, E731, SIM115  (a one-off probe, kept as it was run)
import itertools

import torch
from torch.profiler import ProfilerActivity, profile

from dit_sparse.kernels import masked_rows
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import resolve_method


def kernel_us(f, calls=10):
    f()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            f()
        torch.cuda.synchronize()
    total = {e.key: e.self_device_time_total for e in prof.key_averages()}
    kern = sum(v for k, v in total.items() if "masked_rows_partial" in k) / calls
    return kern, sum(total.values()) / calls


for name, layout, H in (
    ("480p", TokenLayout(21, 30, 52), 12),
    ("720p", TokenLayout(21, 45, 80), 40),
):
    q, k, v = (
        torch.randn(1, H, layout.seq_len, 128, device="cuda", dtype=torch.bfloat16)
        for _ in range(3)
    )
    svg = resolve_method("svg")
    masks = svg.masks(layout, "cuda")
    rows = svg.sample_rows(layout, "cuda", None)
    for tile, warps, mult in itertools.product((32, 64), (4, 8), (1, 2, 4)):
        masked_rows._GPU_ROW_TILE[128] = tile
        masked_rows._GPU_WARPS = warps
        splits = max(1, -(-mult * 132 // (H * (64 // tile))))
        f = lambda: masked_rows.masked_row_errors(
            q, k, v, rows, masks.token_blocks, masks.block_masks, splits=splits
        )
        try:
            kern, allgpu = kernel_us(f)
            print(
                f"{name} tile {tile} warps {warps} splits {splits}: kernel {kern:.0f} us, all GPU {allgpu:.0f} us",
                flush=True,
            )
        except Exception as err:
            print(name, tile, warps, "ERR", str(err)[:300], flush=True)
