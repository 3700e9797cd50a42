"""Accuracy of the 8-bit attention's quantisation choices (CPU, torch reference): Q/K scale
granularity (per tensor, per 128 / 64 / 16 rows of a head), K smoothing on or off, INT8 or FP8
e4m3 for Q K^T, and P V exact or in e4m3, against float64 attention of the same bf16 inputs.

    python benchmarks/probes/quant_granularity_8bit.py > benchmarks/probes/quant_granularity_8bit-cpu.txt

Inputs (1 x 4 heads, D = 128, full plan): ``random`` (randn q, k, v); ``structured`` (q ~ k from
`attention_layer.structured_qk`: two spatial and two temporal local heads, logits up to 12, on a
4 x 16 x 16 layout); each with K plus a per-channel offset of 8 x randn (``+ K offset``).
Variants patch the reference's quantisers (`dit_sparse.kernels.reference`), nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attention_layer import structured_qk  # noqa: E402

from dit_sparse.kernels import reference  # noqa: E402
from dit_sparse.layout import TokenLayout  # noqa: E402
from dit_sparse.plan import BlockPlan  # noqa: E402

HEADS, DIM = 4, 128
# The reference's own quantisers, which the variants below patch and restore.
INT8, E4M3 = reference.quantize_rows_int8, reference.to_e4m3


def inputs() -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    layout = TokenLayout(4, 16, 16)
    random = [torch.randn(1, HEADS, layout.seq_len, DIM, generator=g) for _ in range(3)]
    features = structured_qk(layout, HEADS, g, torch.device("cpu"))
    structured = [
        features + 0.1 * torch.randn(features.shape, generator=g),
        features,
        torch.randn(features.shape, generator=g),
    ]
    offset = 8.0 * torch.randn(1, HEADS, 1, DIM, generator=g)
    cases = {"random": random, "structured": structured}
    for name, (q, k, v) in list(cases.items()):
        cases[f"{name} + K offset"] = [q, k + offset, v]
    return {name: [t.bfloat16() for t in qkv] for name, qkv in cases.items()}


def quantize_rows_e4m3(x: torch.Tensor, rows: int | None):
    """FP8 e4m3 codes of ``x`` with one scale per ``rows`` rows (as `quantize_rows_int8`)."""
    _, scale = INT8(x, rows)
    scale = scale * reference.INT8_MAX / reference.E4M3_MAX
    spread = reference._row_scales(scale, rows, x.shape[2])[..., None]
    return E4M3(x.float() / spread), scale


def accuracy(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    out, ref = out.double().flatten(), ref.flatten()
    return (out @ ref / (out.norm() * ref.norm())).item(), ((out - ref).norm() / ref.norm()).item()


def main() -> None:
    grains = {"per tensor": None, "per 128 rows": 128, "per 64 rows": 64, "per 16 rows": 16}
    print("| inputs | Q K^T | Q/K scales | K smoothed | P V | cosine | rel L2 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (q, k, v) in inputs().items():
        plan = BlockPlan.dense(1, 1, q.shape[2])
        ref = reference.block_sparse_attention_reference(q.double(), k.double(), v.double(), plan)
        for qk_format, quantizer in (("INT8", INT8), ("e4m3", quantize_rows_e4m3)):
            for grain, rows in grains.items():
                for smooth in (True, False):
                    for pv in ("e4m3", "exact"):
                        if (qk_format == "e4m3" or not smooth) and (pv, rows) != ("e4m3", 64):
                            continue  # the alternatives at the chosen grain only
                        reference.quantize_rows_int8 = quantizer
                        reference.to_e4m3 = E4M3 if pv == "e4m3" else (lambda x: x)
                        try:
                            out = reference.block_sparse_attention_8bit_reference(
                                q, k, v, plan, q_rows=rows, k_rows=rows, smooth_k=smooth
                            )
                        finally:
                            reference.quantize_rows_int8, reference.to_e4m3 = INT8, E4M3
                        cosine, rel_l2 = accuracy(out, ref)
                        print(f"| {name} | {qk_format} | {grain} | {'yes' if smooth else 'no'} | "
                              f"{pv} | {cosine:.6f} | {rel_l2:.2e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
