"""How long a setting would take: measured per-call attention and non-attention time, and a
per-density kernel cost where the device's timing says nothing about sparsity.

From the dense runs: ``non_attention_s`` per generation (wall minus attention) and
``dense_call_s`` per attention call. A run's records then predict its time: non-attention time
(scaled down by the share of layers a step cache skipped) plus each call's cost. ``measured``
(on a GPU): a call costs the time the kernel took. Otherwise (the CPU runs a sparse plan as a
masked dense attention, so its time does not shrink with density) a call costs
``dense_call_s * (density + mass_passes)``: the share of the dense work its plan computes, plus
AdaSpa's passes over the block mass. `lower_bound` predicts a setting before it runs, from its
schedule and the density its knob promises (a plan never computes less), so that a setting
whose lower bound is no faster than the best found need not run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..layout import TokenLayout
from ..methods import AttentionCall, SparseMethod


@dataclass(frozen=True)
class TimeModel:
    """Per-generation non-attention seconds, per-call dense attention seconds, and the shape
    of a generation (``steps`` x ``layers`` attention slots, ``calls_per_slot`` calls each:
    guidance branches, transformers)."""

    non_attention_s: float
    dense_call_s: float
    steps: int
    layers: int
    calls_per_slot: float
    layout: TokenLayout
    measured: bool

    @classmethod
    def from_dense(
        cls,
        runs: list[tuple[float, list[dict[str, Any]]]],
        steps: int,
        layout: TokenLayout,
        measured: bool,
    ) -> TimeModel:
        """From dense runs as (wall seconds, attention records): the quickest run's times,
        which carry the least warm-up."""
        if not runs or not runs[0][1]:
            raise ValueError("the time model needs a dense run with attention records")
        seconds, records = min(runs, key=lambda run: run[0])
        attention = sum(r["seconds"] for r in records)
        layers = len({(r["transformer"], r["layer"]) for r in records})
        return cls(
            non_attention_s=max(seconds - attention, 0.0),
            dense_call_s=attention / len(records),
            steps=steps,
            layers=layers,
            calls_per_slot=len(records) / (steps * layers),
            layout=layout,
            measured=measured,
        )

    def call_seconds(self, record: dict[str, Any]) -> float:
        """One attention call's cost (see the module docstring)."""
        if self.measured:
            return record["seconds"]
        return self.dense_call_s * (record["density"] + record.get("mass_passes", 0))

    def predict(self, records: list[dict[str, Any]], layers_skipped: float = 0.0) -> float:
        """Seconds of one generation that made ``records``."""
        non_attention = self.non_attention_s * (1.0 - layers_skipped)
        return non_attention + sum(self.call_seconds(r) for r in records)

    def lower_bound(self, method: SparseMethod, density: float) -> float:
        """Seconds of one generation of ``method`` at best: its schedule's dense calls at the
        dense cost, every other call at ``density`` of it, no method overhead."""
        units = 0.0
        for step in range(self.steps):
            for layer in range(self.layers):
                call = AttentionCall(self.layout, layer, self.layers, step, self.steps, "", {})
                units += 1.0 if method.runs_dense(call) else density
        return self.non_attention_s + self.dense_call_s * self.calls_per_slot * units

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layout": asdict(self.layout)}
