# ruff: noqa: B023, E402, E731  (a probe, kept as it was run)
"""GPU probe: where AdaSpa's first search (the warm-up LSE's fused dense pass, then the
selection) spends its time at Wan 480p and 720p, random and structured inputs.

    python benchmarks/probes/adaspa_first_search.py OUT.json [--no-configs]

Times (means of back-to-back calls, as `attention_layer.py`): cuDNN dense, our dense pass
with LSE, the dense pass with the mass fused in, the selection alone, the whole search step
as the method runs it; the selection's own kernels from the torch profiler; and, for random
inputs, the fused pass under other launch configs.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from attention_layer import LAYOUTS, make_qkv, mean_seconds
from torch.profiler import ProfilerActivity, profile

from dit_sparse.kernels import block_sparse_attention, dense_attention_with_lse
from dit_sparse.kernels.block_mass import MassPartials
from dit_sparse.kernels.block_sparse_attention import FusedMass, launch_block_sparse_attention
from dit_sparse.kernels.dense_with_lse import _dense_plan, dense_attention_with_mass
from dit_sparse.kernels.launch import KernelConfig
from dit_sparse.methods import AttentionCall, resolve_method
from dit_sparse.quality.environment import environment

device = torch.device("cuda")
out_path = Path(sys.argv[1])
result: dict = {"environment": environment(device), "rows": [], "profiles": {}}
method = resolve_method("adaspa")
LAYER = 5  # a sparse layer of a 30-layer model
CONFIGS = [
    KernelConfig(*c)
    for c in ((128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 4, 3), (64, 128, 4, 3))
]
for name, (layout, heads, _) in LAYOUTS.items():
    for case in ("random", "structured"):
        q, k, v = make_qkv(case, layout, heads, device, torch.bfloat16)
        block = method.block_for(layout.seq_len)
        _, lse = dense_attention_with_lse(q, k, v)
        stale = lse + 0.01 * torch.randn_like(lse)
        _, _, mass = dense_attention_with_mass(q, k, v, stale, block, block)
        dense_plan = _dense_plan(q)

        def first_search():
            # As `AdaSpa.attend` runs it at the first search step with the warm-up LSE.
            call = AttentionCall(layout, LAYER, 30, 10, 50, "cond", {})
            warmup = AttentionCall(layout, LAYER, 30, 9, 50, "cond", call.cache)
            assert method.attend_dense(q, k, v, warmup) is not None
            torch.cuda.synchronize()
            return call

        row = {"layout": name, "case": case, "heads": heads, "block": block}
        row["cudnn"] = mean_seconds(lambda: F.scaled_dot_product_attention(q, k, v), device)
        row["triton_dense_lse"] = mean_seconds(
            lambda: block_sparse_attention(q, k, v, dense_plan, return_lse=True), device
        )
        row["dense_with_mass"] = mean_seconds(
            lambda: dense_attention_with_mass(q, k, v, stale, block, block), device
        )
        row["select"] = mean_seconds(lambda: method._select(mass, layout, None), device)
        call = first_search()
        state = call.cache[("adaspa", LAYER)]
        row["search_step"] = mean_seconds(
            lambda: (
                call.cache.__setitem__(("adaspa", LAYER), state),
                method.attend(q, k, v, call),
            ),
            device,
        )
        for key in ("triton_dense_lse", "dense_with_mass", "select", "search_step"):
            row[f"{key}_vs_cudnn"] = row[key] / row["cudnn"]
        if case == "random" and "--no-configs" not in sys.argv:
            for config in CONFIGS:
                out = torch.empty_like(q)
                lse_out = torch.empty_like(lse)

                def fused(config=config):
                    partials = MassPartials.allocate(
                        q, layout.seq_len, block, block, config, dense_plan.block_k
                    )
                    launch_block_sparse_attention(
                        q, k, v, dense_plan, 128**-0.5, out, lse_out, config,
                        FusedMass(partials, stale),
                    )  # fmt: skip
                    return partials.total()

                try:
                    row[
                        f"fused_{config.block_m}x{config.block_n}x{config.num_warps}x{config.num_stages}"
                    ] = mean_seconds(fused, device)
                except Exception as error:  # e.g. out of shared memory
                    row[f"fused_{config}"] = str(error)[:200]
        result["rows"].append(row)
        print({k_: round(v_, 4) if isinstance(v_, float) else v_ for k_, v_ in row.items()})
        if name == "480p":
            method._select(mass, layout, None)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    method._select(mass, layout, None)
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
            result["profiles"][f"{name}-{case}-select"] = table
            print(table, flush=True)
        out_path.write_text(json.dumps(result, indent=1))
