"""What a tune searches: each method's density knob (values sparsest first, so quality grows
along them), the dense schedules (warm-up steps x dense layers) tried with it, and the
smallest density each knob value promises (for the time model's lower bound)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..layout import TokenLayout
from ..methods import SparseMethod, resolve_method

# The default schedules: shares of the steps kept dense, and leading dense layers.
DENSE_STEPS = (0.1, 0.2, 0.3)
DENSE_LAYERS = (0, 1)


@dataclass(frozen=True)
class Knob:
    """A method option that trades speed for quality, and the values tried, fastest first."""

    method: str
    option: str
    values: tuple[float, ...]

    def density(self, config: SparseMethod, layout: TokenLayout) -> float:
        """The least share of token pairs a sparse call computes at ``config``'s value of this
        knob (0 where the method cannot say before it runs)."""
        value = getattr(config, self.option)
        if self.method == "radial":
            return config.density(layout)
        if self.method == "svg":
            return value
        if self.method == "adaspa":
            return 1.0 - value
        return 0.0


KNOBS: dict[str, Knob] = {
    knob.method: knob
    for knob in (
        Knob("radial", "decay_factor", (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)),
        Knob("svg", "density", (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)),
        Knob("adaspa", "sparsity", (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.4)),
        Knob("svg2", "top_p", (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)),
    )
}


@dataclass(frozen=True)
class Schedule:
    """Leading steps (a share) and leading layers (a count) kept dense."""

    dense_steps: float
    dense_layers: int

    def covers(self, other: Schedule) -> bool:
        """Whether this schedule keeps dense everything ``other`` does (so it is at least as
        close to dense at every knob value)."""
        return self.dense_steps >= other.dense_steps and self.dense_layers >= other.dense_layers


def schedules(dense_steps: tuple[float, ...], dense_layers: tuple[int, ...]) -> list[Schedule]:
    """Every combination, least dense first. ``ValueError`` for a share outside [0, 1] or a
    negative layer count."""
    for share in dense_steps:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"dense steps are shares of the steps, in [0, 1]; got {share}")
    for count in dense_layers:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"dense layers are counts >= 0; got {count!r}")
    return [
        Schedule(float(s), c) for s in sorted(set(dense_steps)) for c in sorted(set(dense_layers))
    ]


def knob_for(method: str) -> Knob:
    """The knob of ``method``; ``ValueError`` naming the methods a tune takes otherwise."""
    if method not in KNOBS:
        raise ValueError(f"unknown method {method!r} for a tune; accepted: {', '.join(KNOBS)}")
    return KNOBS[method]


def config(method: str, schedule: Schedule, value: float, **extra: Any) -> SparseMethod:
    """``method`` with ``schedule``, its knob at ``value`` and any ``extra`` options."""
    knob = knob_for(method)
    return resolve_method(
        method,
        dense_steps=schedule.dense_steps,
        dense_layers=schedule.dense_layers,
        **{knob.option: value},
        **extra,
    )
