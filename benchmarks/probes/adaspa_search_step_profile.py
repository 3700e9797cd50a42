# ruff: noqa: B023, E402  (a probe, kept as it was run; its lambdas run at once)
"""GPU probe: the GPU kernels of AdaSpa's first search step (with the warm-up LSE) at Wan 480p,
random and structured inputs, from the torch profiler: whether the step's time is kernel time.
Then single calls between syncs, as `attention_layer.py` times a step: how long the call
keeps the CPU (until `attend` returns) against the whole call, and where one call's CPU time
goes.

    python benchmarks/probes/adaspa_search_step_profile.py OUT.txt
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from attention_layer import LAYOUTS, make_qkv, mean_seconds
from torch.profiler import ProfilerActivity, profile

from dit_sparse.methods import AttentionCall, resolve_method

device = torch.device("cuda")
method = resolve_method("adaspa")
layout, heads, _ = LAYOUTS["480p"]
lines = []
for case in ("random", "structured"):
    q, k, v = make_qkv(case, layout, heads, device, torch.bfloat16)
    call = AttentionCall(layout, 5, 30, 10, 50, "cond", {})
    warmup = AttentionCall(layout, 5, 30, 9, 50, "cond", call.cache)
    method.attend_dense(q, k, v, warmup)
    state = call.cache[("adaspa", 5)]

    def step():
        call.cache[("adaspa", 5)] = state
        return method.attend(q, k, v, call)

    lines.append(f"{case}: search step {mean_seconds(step, device) * 1e3:.3f} ms (mean of 20)")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    lines.append(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
    print("\n".join(lines[-2:]), flush=True)
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        returned = time.perf_counter()
        torch.cuda.synchronize()
        done = time.perf_counter()
        lines.append(
            f"{case} single call: attend returned after {(returned - start) * 1e3:.3f} ms, "
            f"done after {(done - start) * 1e3:.3f} ms"
        )
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    lines.append(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    print("\n".join(lines[-6:]), flush=True)
Path(sys.argv[1]).write_text("\n".join(lines) + "\n")
