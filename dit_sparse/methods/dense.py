"""`Dense`: the model's own attention, unchanged; the baseline every method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from .base import AttentionCall, SparseMethod


@dataclass
class Dense(SparseMethod):
    """Full attention through the model's own call: outputs are bit-identical to no plugin.

    Useful as the baseline of a benchmark and to measure attention time and share.
    """

    name = "dense"

    def runs_dense(self, call: AttentionCall) -> bool:
        return True
