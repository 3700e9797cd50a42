"""Bisection over a monotone knob: the first value that passes, in few probes."""

from __future__ import annotations

from collections.abc import Callable


def first_passing(count: int, passes: Callable[[int], bool]) -> int:
    """The least index in ``range(count)`` for which ``passes`` holds, or ``count`` if none.

    Assumes monotone ``passes`` (once it holds it holds for every larger index); probes at
    most ``ceil(log2(count + 1))`` indices, each once.
    """
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
