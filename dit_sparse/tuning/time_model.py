"""How long a setting would take: measured per-call attention and non-attention time, and a
per-density kernel cost where the device's timing says nothing about sparsity.

From the dense runs: ``non_attention_s`` per generation (wall minus attention) and
``dense_call_s`` per attention call. A run's handle summary (`SparseHandle.summary`) then
predicts its time: non-attention time (scaled down by the share of layers a step cache
skipped) plus its attention. ``measured`` (on a GPU): the attention time the calls took.
Otherwise (the CPU runs a sparse plan as a masked dense attention, so its time does not shrink
with density) ``dense_call_s * (calls * mean_density + mass_passes)``: the share of the dense
work its plans compute, plus AdaSpa's passes over the block mass. `lower_bound` predicts a setting before it runs, from its
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
        runs: list[tuple[float, dict[str, Any]]],
        steps: int,
        layers: int,
        layout: TokenLayout,
        measured: bool,
    ) -> TimeModel:
        """From dense runs as (wall seconds, handle summary) of ``steps`` steps over
        ``layers`` attention layers: the quickest run's times, which carry the least warm-up."""
        if not runs or not runs[0][1]["calls"]:
            raise ValueError("the time model needs a dense run with attention calls")
        seconds, summary = min(runs, key=lambda run: run[0])
        attention = summary["attention_seconds"]
        return cls(
            non_attention_s=max(seconds - attention, 0.0),
            dense_call_s=attention / summary["calls"],
            steps=steps,
            layers=layers,
            calls_per_slot=summary["calls"] / (steps * layers),
            layout=layout,
            measured=measured,
        )

    def predict(self, summary: dict[str, Any]) -> float:
        """Seconds of one generation whose handle summary is ``summary``."""
        non_attention = self.non_attention_s * (1.0 - summary.get("layers_skipped", 0.0))
        if self.measured:
            return non_attention + summary["attention_seconds"]
        work = summary["calls"] * summary["mean_density"] + summary.get("mass_passes", 0)
        return non_attention + self.dense_call_s * work

    def predict_runs(self, summaries: list[dict[str, Any]]) -> float:
        """Seconds of one generation of a setting run once per prompt (``summaries``). Measured:
        the quickest run, as for dense, since a setting's first run also times the compilation
        of any kernel it is the first to use. Modelled: the mean, since its density (and so the
        prediction) follows each prompt's content."""
        predictions = [self.predict(summary) for summary in summaries]
        return min(predictions) if self.measured else sum(predictions) / len(predictions)

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
