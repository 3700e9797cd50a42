"""GPU probe: SVG2's k-means assignment with INT8 tensor cores, against the bf16 kernel
(`dit_sparse.kernels.kmeans`), at Wan 480p and 720p (`attention_layer.py`'s structured q and
k, bf16, D = 128, the default 300 query / 1000 key clusters).

    python benchmarks/probes/svg2_assign_int8.py --out OUT.json          # one GPU
    TRITON_INTERPRET=1 python benchmarks/probes/svg2_assign_int8.py --tiny --out OUT.json

Why: the assignment kernels alone take more than a tenth of a density-0.2 attention at 720p
(`svg2_kmeans.py`'s ``assign_floor_share``), and the H100's INT8 tensor cores have twice the
bf16 rate. The variant here quantises each vector to INT8 with its own scale (max |x| / 127,
one fused pass, once per clustering since every iteration reads the same vectors) and each
centroid likewise (a torch op on ``[G, C, D]``), and scores ``||c||^2 - 2 s_x s_c (x8 . c8)``
from exact int32 dot products; ``||c||^2`` is the dequantised centroid's.

Per layout and for q and for k, against warm centroids (`initial_centroids` drawn from the
vectors, then one Lloyd iteration, as a previous step would leave them):

- ``bf16_ms``: the package's assignment (its default tile); ``quantize_ms``: the INT8 pass;
  ``int8_ms``: the INT8 assignment per tile config of `TRIALS`;
- ``agree_bf16`` / ``agree_fp32``: share of labels the INT8 kernel shares with the bf16 kernel
  and with the fp32 torch reference (`lloyd_step_reference` on fp32 vectors);
  ``bf16_agree_fp32`` the same for the bf16 kernel;
- ``inertia_*``: mean squared distance of each vector to its assigned centroid (fp32), under
  the fp32 reference's labels, the bf16 kernel's and the INT8 kernel's.

``--tiny`` (CPU, Triton's interpreter) runs small sizes in fp32 and checks the two kernels
against torch emulations of the same arithmetic (``checks``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from attention_layer import LAYOUTS, make_qkv, mean_seconds
from common import error_text, triton_probe_args, write_results
from svg2_kmeans import config_name, ms

from dit_sparse.kernels.kmeans import ASSIGN_CONFIGS, launch_nearest_centroid
from dit_sparse.kernels.launch import KernelConfig, tl, triton
from dit_sparse.kernels.reference import lloyd_step_reference
from dit_sparse.layout import TokenLayout
from dit_sparse.methods.svg2 import SparseVideoGen2
from dit_sparse.methods.svg2_clusters import initial_centroids

TRIALS = (
    KernelConfig(256, 64, 8, 3),
    KernelConfig(256, 128, 8, 3),
    KernelConfig(128, 128, 8, 3),
    KernelConfig(128, 64, 4, 3),
)
TINY = {"tiny": (TokenLayout(3, 8, 10), 2, 2)}  # 240 tokens: ragged at every tile
TINY_CONFIG = KernelConfig(32, 32, 4, 1)
QUANTIZE_ROWS = 64  # vectors a program of `_quantize_rows` takes
INT8_MAX = 127.0


@triton.jit
def _quantize_rows(X, X8, SCALE, rows_total, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    dims = tl.arange(0, HEAD_DIM)
    valid = rows < rows_total
    at = rows[:, None].to(tl.int64) * HEAD_DIM + dims[None, :]
    x = tl.load(X + at, mask=valid[:, None], other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), 1), 1e-30) / 127.0
    y = x / scale[:, None]
    # The cast truncates: add a half away from zero first (round half away from zero).
    codes = tl.where(y >= 0, y + 0.5, y - 0.5).to(tl.int8)
    tl.store(X8 + at, codes, mask=valid[:, None])
    tl.store(SCALE + rows, scale, mask=valid)


@triton.jit
def _nearest_centroid_int8(
    X8,
    X_SCALE,
    C8,
    C_SCALE,
    C_NORMS,
    LABELS,
    seq_len,
    clusters,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    tile = tl.program_id(0)
    group = tl.program_id(1).to(tl.int64)
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    valid_rows = rows < seq_len
    x = tl.load(
        X8 + group * seq_len * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :],
        mask=valid_rows[:, None],
        other=0,
    )
    x_scale = tl.load(X_SCALE + group * seq_len + rows, mask=valid_rows, other=0.0)
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    best_index = tl.zeros([BLOCK_M], tl.int32)
    for start in range(0, clusters, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        valid = cols < clusters
        c = tl.load(
            C8 + group * clusters * HEAD_DIM + cols[:, None] * HEAD_DIM + dims[None, :],
            mask=valid[:, None],
            other=0,
        )
        c_scale = tl.load(C_SCALE + group * clusters + cols, mask=valid, other=0.0)
        norms = tl.load(C_NORMS + group * clusters + cols, mask=valid, other=float("inf"))
        dots = tl.dot(x, tl.trans(c), out_dtype=tl.int32).to(tl.float32)
        score = norms[None, :] - 2.0 * dots * (x_scale[:, None] * c_scale[None, :])
        tile_best, tile_index = tl.min(score, 1, return_indices=True)
        better = tile_best < best
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, start + tile_index, best_index)
    tl.store(LABELS + group * seq_len + rows, best_index, mask=valid_rows)


def quantize_rows(x: torch.Tensor, rows: int = QUANTIZE_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 codes of contiguous ``x`` ``[G, S, D]`` and fp32 scales ``[G, S]``, one per vector."""
    x8 = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    scale = torch.empty(x.shape[:2], dtype=torch.float32, device=x.device)
    total = x.shape[0] * x.shape[1]
    _quantize_rows[(triton.cdiv(total, rows),)](
        x, x8, scale, total, HEAD_DIM=x.shape[2], ROWS=rows, num_warps=4
    )
    return x8, scale


def quantize_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rows` in torch (fp32 arithmetic, round half away from zero)."""
    x = x.float()
    scale = x.abs().amax(-1).clamp_min(1e-30) / INT8_MAX
    y = x / scale[..., None]
    return (y.sign() * (y.abs() + 0.5).floor()).to(torch.int8), scale


def assign_int8(x8, x_scale, centroids: torch.Tensor, config: KernelConfig) -> torch.Tensor:
    """int32 ``[G, S]`` nearest centroids of INT8 vectors (centroids quantised here)."""
    groups, seq_len, dim = x8.shape
    c8, c_scale = quantize_reference(centroids)
    norms = (c8.float() * c_scale[..., None]).square().sum(-1)
    labels = torch.empty(groups, seq_len, dtype=torch.int32, device=x8.device)
    _nearest_centroid_int8[(triton.cdiv(seq_len, config.block_m), groups)](
        x8, x_scale, c8, c_scale, norms, labels, seq_len, centroids.shape[1],
        HEAD_DIM=dim, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return labels


def assign_int8_reference(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """`assign_int8` on `quantize_reference`'s codes, in torch (float64 scores)."""
    x8, x_scale = quantize_reference(x)
    c8, c_scale = quantize_reference(centroids)
    norms = (c8.double() * c_scale[..., None]).square().sum(-1)
    dots = torch.bmm(x8.double(), c8.double().transpose(1, 2))
    scores = norms[:, None, :] - 2 * dots * x_scale[..., None] * c_scale[:, None, :]
    return scores.argmin(-1)


def inertia(x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean squared distance of each vector to its labelled centroid (fp32)."""
    picked = centroids.gather(1, labels.long()[..., None].expand(-1, -1, x.shape[-1]))
    return float((x.float() - picked).square().sum(-1).mean())


def probe(x: torch.Tensor, clusters: int, gpu: bool) -> dict[str, Any]:
    """One kind of vectors (``[G, S, D]``) into ``clusters``: speed and agreement."""
    generator = torch.Generator().manual_seed(0)
    start = initial_centroids(x, clusters, generator)
    centroids = lloyd_step_reference(x.float(), start)[1].float()  # a step's warm centroids
    device = x.device
    bf16_config = ASSIGN_CONFIGS[x.shape[-1]] if gpu else TINY_CONFIG
    configs = TRIALS if gpu else (TINY_CONFIG,)
    x8, x_scale = quantize_rows(x)
    reference = lloyd_step_reference(x.float(), centroids)[0]
    bf16 = launch_nearest_centroid(x, centroids, bf16_config)
    int8 = assign_int8(x8, x_scale, centroids, configs[0])
    result: dict[str, Any] = {
        "clusters": clusters,
        "agree_bf16": float((int8 == bf16).float().mean()),
        "agree_fp32": float((int8 == reference).float().mean()),
        "bf16_agree_fp32": float((bf16 == reference).float().mean()),
        "inertia_fp32": inertia(x, centroids, reference),
        "inertia_bf16": inertia(x, centroids, bf16),
        "inertia_int8": inertia(x, centroids, int8),
    }
    if gpu:
        result["bf16_ms"] = ms(
            mean_seconds(lambda: launch_nearest_centroid(x, centroids, bf16_config), device)
        )
        result["quantize_ms"] = ms(mean_seconds(lambda: quantize_rows(x), device))
        result["int8_ms"] = {}
        for config in configs:
            try:
                seconds = mean_seconds(
                    lambda c=config: assign_int8(x8, x_scale, centroids, c), device
                )
                result["int8_ms"][config_name(config)] = ms(seconds)
            except Exception as err:  # noqa: BLE001  (a config that fails to compile or run)
                result["int8_ms"][config_name(config)] = error_text(err)
    else:
        codes, scales = quantize_reference(x)
        result["checks"] = {
            "codes_equal": bool(torch.equal(x8, codes)),
            "scales_max_rel_error": float(((x_scale - scales).abs() / scales).max()),
            "int8_agrees_with_its_emulation": float(
                (int8.long() == assign_int8_reference(x, centroids)).float().mean()
            ),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    args, gpu = triton_probe_args(__doc__.splitlines()[0], argv)
    device, dtype = (
        (torch.device("cuda"), torch.bfloat16) if gpu else (torch.device("cpu"), torch.float32)
    )
    layouts = LAYOUTS if gpu else TINY
    q_clusters, k_clusters = SparseVideoGen2().cluster_counts(10**9)
    results = []
    with torch.inference_mode():
        for name, (layout, heads, _) in layouts.items():
            q, k, _ = make_qkv("structured", layout, heads, device, dtype)
            seq_len, dim = q.shape[2:]
            counts = (q_clusters, k_clusters) if gpu else (7, 19)
            entry: dict[str, Any] = {"name": name, "layout": layout.describe(), "heads": heads}
            for label, x, clusters in (("q", q, counts[0]), ("k", k, counts[1])):
                entry[label] = probe(x.reshape(-1, seq_len, dim).contiguous(), clusters, gpu)
                print(name, label, entry[label], flush=True)
            results.append(entry)
    body = {"tiny": args.tiny, "dtype": str(dtype).removeprefix("torch."), "layouts": results}
    write_results(Path(args.out), device, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
