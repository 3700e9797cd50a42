# ruff: noqa: B023, E731  (a one-off probe, kept as it was run)
"""Where an SVG attention call's time goes on the GPU (Wan 480p and 720p, bf16, random inputs).

Per kernel: GPU time per call from the profiler (10 calls). Per call: the CUDA-event mean of
30 back-to-back calls of `attend`, of the kernel alone on the plan it chose, and of
`classify`; and the CPU time to enqueue one `attend` (the GPU is then far behind, so this is
host work only). Run: ``python benchmarks/probes/profile_svg.py``.
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from dit_sparse.kernels import block_sparse_attention
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import AttentionCall, resolve_method


def mean_ms(f, calls=30):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


for name, layout, heads in (
    ("480p", TokenLayout(21, 30, 52), 12),
    ("720p", TokenLayout(21, 45, 80), 40),
):
    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (
        torch.randn(1, heads, layout.seq_len, 128, device="cuda", generator=g).bfloat16()
        for _ in range(3)
    )
    svg = resolve_method("svg")
    call = AttentionCall(layout, 1, 2, 0, 50, "cond", {})
    attend = lambda: svg.attend(q, k, v, call)
    plan = svg.masks(layout, "cuda").plan(svg.classify(q, k, v, layout))
    timings = {
        "attend": mean_ms(attend),
        "kernel": mean_ms(lambda: block_sparse_attention(q, k, v, plan)),
        "classify": mean_ms(lambda: svg.classify(q, k, v, layout)),
    }
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(5):
        attend()
    timings["enqueue_attend"] = (time.perf_counter() - started) / 5 * 1000
    torch.cuda.synchronize()
    shares = 1 - timings["kernel"] / timings["attend"]
    print(f"==== {name}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in timings.items()))
    print(f"profiling + permutation: {shares:.1%} of the call")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            attend()
        torch.cuda.synchronize()
    events = prof.key_averages()
    total = sum(e.self_device_time_total for e in events) / 10
    print(f"GPU time per call {total:.0f} us over {len(events)} kinds of kernel:")
    for e in sorted(events, key=lambda e: -e.self_device_time_total):
        if e.self_device_time_total:
            print(f"  {e.self_device_time_total / 10:9.1f} us  {e.count / 10:4.1f}x  {e.key[:90]}")
