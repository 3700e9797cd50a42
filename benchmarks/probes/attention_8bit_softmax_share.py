"""GPU probe: what limits the 8-bit kernel at density 1 (issue 29's target: >= 1.35x cuDNN)?

    python benchmarks/probes/attention_8bit_softmax_share.py --out OUT.json      # one GPU
    TRITON_INTERPRET=1 python benchmarks/probes/attention_8bit_softmax_share.py --tiny --out OUT.json

The 8-bit kernel (`dit_sparse.kernels.attention_8bit`) runs at about the rate of a plain
Triton FP8 flash forward, far below the tensor cores' 8-bit peak. Between its two products
per key tile, the same warps compute the online softmax (row max, exp2, sums, rescale, e4m3
conversion). This probe times one dense loop with the package's arithmetic and tile shape
(128 query rows, 64-key tiles, 8 warps, 3 stages) in three modes:

- ``softmax``: the package's loop body (INT8 Q K^T, the scores' bit trick, one FMA, exp2,
  the running max and sums, P in e4m3 times V^T in e4m3);
- ``no_softmax``: the same loads and both products, the scores scaled and converted to e4m3
  with no max, exp2, sums or rescale (the output is meaningless: a speed bound);
- ``qk_only``: the loads of K and INT8 Q K^T with a running row max, no P V;

beside the package kernel on a full plan and cuDNN's dense attention in the same run, at
40 x 75,776 and 12 x 32,768 tokens (multiples of the block, so no tile is masked), D = 128.
``softmax`` against ``no_softmax`` is the share of the time the softmax adds to the two
products; ``softmax`` against the package, what the plan walk and quantisation cost.
``--tiny`` runs small sizes under Triton's interpreter and checks ``softmax`` against a
float64 reference of the same 8-bit inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from attention_layer import dense_attention
from common import error_text, triton_probe_args, write_results
from kernel import attention_flops, bench, cosine, rel_error

from dit_sparse.kernels import block_sparse_attention
from dit_sparse.kernels.attention_8bit import _LOG2_448, _MAGIC, _e4m3
from dit_sparse.kernels.launch import INTERPRETED, tl, triton
from dit_sparse.plan import BlockPlan

SHAPES = ((40, 75776), (12, 32768))
TINY_SHAPES = ((2, 256),)
HEAD_DIM, BLOCK_M, BLOCK_N, WARPS, STAGES = 128, 128, 64, 8, 3
TINY_DIM = 32
MODES = {"softmax": 0, "no_softmax": 1, "qk_only": 2}


@triton.jit
def _loop_8bit(
    Q8, K8, VT8, Q_SCALE, K_SCALE, Out, seq_len,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    MODE: tl.constexpr, EMULATE_E4M3: tl.constexpr,
):  # fmt: skip
    """One (query block, head): a dense pass over every key tile (module docstring)."""
    bh = tl.program_id(1).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q8 = tl.load(Q8 + (bh * seq_len + offs_m[:, None]) * HEAD_DIM + offs_d[None, :])
    q_scale = tl.load(Q_SCALE + bh * seq_len + offs_m)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in tl.range(0, seq_len, BLOCK_N):
        k8 = tl.load(K8 + (bh * seq_len + start + offs_n[:, None]) * HEAD_DIM + offs_d[None, :])
        raw = (tl.dot(q8, tl.trans(k8)) + 0x4B400000).to(tl.float32, bitcast=True)
        s = tl.maximum(
            q_scale * tl.load(K_SCALE + bh * (seq_len // BLOCK_N) + start // BLOCK_N), 1e-30
        )
        if MODE == 2:
            m_i = tl.maximum(m_i, (tl.max(raw, 1) - _MAGIC) * s)
        else:
            vt8 = tl.load(
                VT8 + (bh * HEAD_DIM + offs_d[:, None]) * seq_len + start + offs_n[None, :]
            )
            if MODE == 0:
                m_new = tl.maximum(m_i, (tl.max(raw, 1) - _MAGIC) * s)
                p = tl.math.exp2(raw * s[:, None] - (s * _MAGIC + m_new - _LOG2_448)[:, None])
                alpha = tl.math.exp2(m_i - m_new)
                l_i = l_i * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(_e4m3(p, EMULATE_E4M3), tl.trans(vt8))
                m_i = m_new
            else:
                p = raw * s[:, None] - (s * _MAGIC)[:, None]
                acc += tl.dot(p.to(tl.float8e4nv), tl.trans(vt8))
    if MODE == 2:
        acc += m_i[:, None]
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(Out + (bh * seq_len + offs_m[:, None]) * HEAD_DIM + offs_d[None, :], out)


def inputs(heads: int, seq_len: int, dim: int, device) -> dict[str, torch.Tensor]:
    """Random 8-bit codes and scales shaped as the kernel's buffers: INT8 Q and K
    ``[H, S, D]``, e4m3 V transposed ``[H, D, S]``, a scale per query row and per key tile
    (as `quantize_8bit`'s, small enough for diffuse rows)."""
    generator = torch.Generator().manual_seed(0)
    codes = [torch.randint(-127, 128, (heads, seq_len, dim), generator=generator) for _ in "qk"]
    v = (torch.rand(heads, dim, seq_len, generator=generator) * 2 - 1) * 448
    return {
        "q8": codes[0].to(device, torch.int8),
        "k8": codes[1].to(device, torch.int8),
        "vt8": v.to(torch.float8_e4m3fn).to(device),
        "q_scale": torch.full((heads, seq_len), 0.05 / 127**2 * dim**-0.5, device=device),
        "k_scale": 1 + torch.rand(heads, seq_len // BLOCK_N, generator=generator).to(device),
    }


def run_loop(x: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
    heads, seq_len, dim = x["q8"].shape
    out = torch.empty(heads, seq_len, dim, device=x["q8"].device)
    block_m = 32 if INTERPRETED else BLOCK_M  # several query blocks at tiny sizes
    _loop_8bit[(seq_len // block_m, heads)](
        x["q8"], x["k8"], x["vt8"], x["q_scale"], x["k_scale"], out, seq_len,
        HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=BLOCK_N, MODE=MODES[mode],
        EMULATE_E4M3=INTERPRETED, num_warps=WARPS, num_stages=STAGES,
    )  # fmt: skip
    return out


def reference(x: dict[str, torch.Tensor]) -> torch.Tensor:
    """float64 ``softmax`` output: base-2 softmax of the scaled integer scores times V."""
    scores = torch.bmm(x["q8"].double(), x["k8"].double().transpose(1, 2))
    scale = (
        x["q_scale"].double()[:, :, None]
        * x["k_scale"].double().repeat_interleave(BLOCK_N, dim=1)[:, None, :]
    )
    p = torch.softmax(scores * scale * torch.log(torch.tensor(2.0, dtype=torch.float64)), -1)
    return torch.bmm(p, x["vt8"].double().transpose(1, 2))


def measure(heads: int, seq_len: int, dim: int, device, gpu: bool) -> dict[str, Any]:
    x = inputs(heads, seq_len, dim, device)
    row: dict[str, Any] = {"heads": heads, "seq_len": seq_len}
    if not gpu:
        out, ref = run_loop(x, "softmax"), reference(x)
        row["softmax_cosine"], row["softmax_rel_l2"] = cosine(out, ref), rel_error(out, ref)
        return row
    q, k, v = (
        torch.randn(1, heads, seq_len, dim, device=device, dtype=torch.bfloat16) for _ in "qkv"
    )
    dense_name, dense = dense_attention(q, k, v)
    plan = BlockPlan.dense(1, heads, seq_len, device=device)
    flops = attention_flops(plan, dim)
    timings = {dense_name: bench(dense, device)}
    timings["package_8bit"] = bench(
        lambda: block_sparse_attention(q, k, v, plan, precision="8bit"), device
    )
    for mode in MODES:
        try:
            timings[mode] = bench(lambda m=mode: run_loop(x, m), device)
        except Exception as err:  # noqa: BLE001  (a mode that fails to compile is recorded)
            row[mode] = {"error": error_text(err)}
    row["ms"] = timings
    row["vs_dense"] = {name: timings[dense_name] / ms for name, ms in timings.items()}
    row["tflops"] = {name: flops / ms / 1e9 for name, ms in timings.items()}
    if "softmax" in timings and "no_softmax" in timings:
        row["softmax_share"] = 1 - timings["no_softmax"] / timings["softmax"]
    return row


def main(argv: list[str] | None = None) -> int:
    args, gpu = triton_probe_args(__doc__.splitlines()[0], argv)
    device = torch.device("cuda" if gpu else "cpu")
    dim = HEAD_DIM if gpu else TINY_DIM
    rows = []
    for heads, seq_len in SHAPES if gpu else TINY_SHAPES:
        rows.append(measure(heads, seq_len, dim, device, gpu))
        print(rows[-1], flush=True)
    config = {"block_m": BLOCK_M, "block_n": BLOCK_N, "num_warps": WARPS, "num_stages": STAGES}
    write_results(
        Path(args.out), device, {"tiny": args.tiny, "head_dim": dim, "config": config, "rows": rows}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
