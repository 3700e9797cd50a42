# ruff: noqa: B023, E402, E731, SIM115  (a one-off probe, kept as it was run)
import torch
from torch.profiler import ProfilerActivity, profile

from dit_sparse.kernels import dense_attention_with_lse
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import AttentionCall, resolve_method

torch.manual_seed(0)
for name, layout, H in (
    ("480p", TokenLayout(21, 30, 52), 12),
    ("720p", TokenLayout(21, 45, 80), 40),
):
    q, k, v = (
        torch.randn(1, H, layout.seq_len, 128, device="cuda", dtype=torch.bfloat16)
        for _ in range(3)
    )
    svg = resolve_method("svg")
    call = AttentionCall(layout, 1, 2, 0, 50, "cond", {})
    for _ in range(3):
        svg.attend(q, k, v, call)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            svg.attend(q, k, v, call)
        torch.cuda.synchronize()
    print(f"==== svg {name}")
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
    )
    ada = resolve_method("adaspa")
    _, lse = dense_attention_with_lse(q, k, v)
    for _ in range(2):
        ada.search(q, k, v, layout, lse=lse)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            ada.search(q, k, v, layout, lse=lse)
        torch.cuda.synchronize()
    print(f"==== adaspa cached search {name}")
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
    )
    del q, k, v
