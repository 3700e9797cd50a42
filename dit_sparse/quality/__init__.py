"""Quality against dense and speed: metrics, the bench harness, its reports and figures.

    from dit_sparse.quality import Case, make_settings, run_bench, compare_videos, load_lpips

``dit-sparse bench`` (`dit_sparse.quality.bench`) is the command-line front end. Names load
on first use: `dit_sparse.cli` imports this package and must stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VideoMetrics": "metrics",
    "compare_videos": "metrics",
    "load_lpips": "metrics",
    "LpipsScorer": "metrics",
    "LpipsUnavailable": "metrics",
    "Case": "harness",
    "Setting": "harness",
    "RunRecord": "harness",
    "BenchResult": "harness",
    "SettingSummary": "harness",
    "make_settings": "harness",
    "run_bench": "harness",
    "summarize_runs": "harness",
    "results_document": "report",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
