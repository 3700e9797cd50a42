"""How concentrated a model's attention is: the share of key blocks holding most of its mass.

For each query block (``block_size`` consecutive tokens) the attention probabilities of its
rows are summed per key block; the fewest key blocks that hold ``mass`` (default 90%) of that
total, over the number of key blocks, is the query block's *mass share*. A share of 0.1 means a
block-sparse plan keeping a tenth of the blocks could keep 90% of the attention; diffuse
attention (random weights) needs nearly all blocks. Where `dit_sparse.SparseVideoGen` is
available, the probe also records how it classifies each head (spatial or temporal).

Measured through the plugin itself: `AttentionMassProbe` is a `SparseMethod` that computes
dense attention and records, so ``dit_sparse.attached(pipe, probe)`` measures any supported
pipeline, not only ``wan-shapes``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dit_sparse.layout import TokenLayout
from dit_sparse.methods.base import AttentionCall, SparseMethod

# Query rows whose [rows, S] probabilities are materialised at once, per (batch, head) slice.
_ROW_CHUNK = 1024


def mass_block_share(
    q: torch.Tensor,
    k: torch.Tensor,
    block_size: int = 64,
    mass: float = 0.9,
    scale: float | None = None,
) -> torch.Tensor:
    """fp32 ``[B, H]``: mean over query blocks of the share of key blocks holding ``mass``.

    ``q``, ``k`` are ``[B, H, S, D]`` with ``S`` a multiple of ``block_size``. Computed in fp32
    in chunks of query rows, so memory stays ``O(rows * S)`` per head.
    """
    batch, heads, seq_len, _ = q.shape
    if seq_len % block_size:
        raise ValueError(f"sequence length {seq_len} is not a multiple of block {block_size}")
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    blocks = seq_len // block_size
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    rows = max(block_size, _ROW_CHUNK // block_size * block_size)
    counts = []
    keys = k.float().transpose(-1, -2)
    for start in range(0, seq_len, rows):
        probs = torch.softmax((q[:, :, start : start + rows].float() * scale) @ keys, dim=-1)
        # [B, H, r, S] -> [B, H, r/block, blocks]: attention mass per (query block, key block).
        block_mass = probs.unflatten(-1, (blocks, block_size)).sum(-1)
        block_mass = block_mass.unflatten(2, (-1, block_size)).sum(3)
        ordered = block_mass.sort(-1, descending=True).values.cumsum(-1)
        needed = (ordered < mass * block_size).sum(-1) + 1  # each query block's rows sum to block
        counts.append(needed.clamp(max=blocks))
    return torch.cat(counts, -1).float().mean(-1) / blocks


@dataclass
class AttentionMassProbe(SparseMethod):
    """Dense attention that records each call's per-head mass share (and SVG head kinds).

    Fields:
        block_size: tokens per block, default 64 (the sequence must be a multiple).
        mass: attention mass the counted blocks must hold, default 0.9.
        svg: also record ``dit_sparse.SparseVideoGen().classify`` per head (``svg_temporal``:
            1 = temporal, 0 = spatial, averaged over the batch).
    """

    name = "mass-probe"

    block_size: int = 64
    mass: float = 0.9
    svg: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._classifier = None
        if self.svg:
            from dit_sparse.methods.svg import SparseVideoGen

            self._classifier = SparseVideoGen()

    def check_layout(self, layout: TokenLayout) -> None:
        if layout.seq_len % self.block_size:
            raise ValueError(
                f"the mass probe needs a sequence that is a multiple of block_size "
                f"{self.block_size}, got {layout.describe()}"
            )

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        share = mass_block_share(q, k, self.block_size, self.mass, call.scale)
        call.info.update(kind="probe", density=1.0, mass_share=share.mean(0))
        if self._classifier is not None:
            kinds = self._classifier.classify(q, k, v, call.layout, scale=call.scale)
            call.info["svg_temporal"] = kinds.float().mean(0)
        return F.scaled_dot_product_attention(q, k, v, scale=call.scale)


def summarize_probe(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per layer (and per layer and step): mean mass share over heads, calls and branches, the
    per-head values, and the share of heads SVG calls temporal where recorded."""
    by_layer: dict[int, list[dict[str, Any]]] = defaultdict(list)
    by_step: dict[tuple[int, int], list[float]] = defaultdict(list)
    for record in records:
        by_layer[record["layer"]].append(record)
        by_step[(record["layer"], record["step"])].append(_mean(record["mass_share"]))
    layers = []
    for layer, rows in sorted(by_layer.items()):
        heads = [_mean(values) for values in zip(*(r["mass_share"] for r in rows))]
        entry = {"layer": layer, "mass_share": _mean(heads), "mass_share_per_head": heads}
        if "svg_temporal" in rows[0]:
            temporal = [_mean(values) for values in zip(*(r["svg_temporal"] for r in rows))]
            entry["svg_temporal_share"] = _mean(temporal)
            entry["svg_temporal_per_head"] = temporal
        layers.append(entry)
    steps = sorted({step for _, step in by_step})
    per_step = {
        layer["layer"]: [_mean(by_step[(layer["layer"], s)]) for s in steps] for layer in layers
    }
    return {
        "layers": layers,
        "steps": steps,
        "mass_share_per_layer_and_step": per_step,
        "mass_share": _mean([layer["mass_share"] for layer in layers]),
    }


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
