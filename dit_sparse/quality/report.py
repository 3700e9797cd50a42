"""Write a bench run as ``results.json`` (every raw number), ``results.csv`` (one row per run)
and ``results.md`` (tables a person reads), each whole or not at all.

Non-finite numbers: identical videos have PSNR ``+inf``. JSON has no infinity, so
``results.json`` writes ``inf``, ``-inf`` and ``nan`` as those strings (``float()`` reads them
back; the file says so under ``"non_finite"``); the CSV and the tables show ``inf``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text
from .harness import BenchResult, RunRecord, SettingSummary, summarize_runs

INF_NOTE = (
    'non-finite numbers are written as the strings "inf", "-inf" and "nan" (float() reads them '
    "back); PSNR is inf where a video is identical to its dense reference"
)
RANDOM_WEIGHTS_NOTE = (
    "the model has random weights: speed numbers are real, quality numbers (PSNR, SSIM, "
    "LPIPS) compare noise-like videos and mean nothing"
)
CPU_SPEED_NOTE = (
    "timed on the CPU, where a sparse plan runs as PyTorch's fused attention with the plan as a "
    "mask (every key is still visited; the Triton kernel needs a GPU): speedups here say "
    "nothing about a GPU, quality numbers hold"
)
# For figure titles and video labels, where the full notes do not fit.
SPEED_ONLY = "random weights: speed only, quality means nothing"
CPU_SPEED = "timed on the CPU: speed says nothing about a GPU"


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``"inf"``, ``"-inf"`` or ``"nan"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | Path, document: dict[str, Any]) -> None:
    """Strict JSON (no bare ``Infinity``), atomically: non-finite numbers as strings, other
    objects JSON has no type for (a dtype, a path) as their ``str``."""
    text = json.dumps(json_safe(document), indent=2, allow_nan=False, default=str)
    atomic_write_text(path, text + "\n")


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A table cell: ``-`` for missing, ``inf`` for infinite, else ``format(value, spec)``."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; ``|`` inside cells is escaped."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


def run_dict(record: RunRecord) -> dict[str, Any]:
    """One run with every raw number (per-frame metrics included)."""
    return {
        "prompt_index": record.case.index,
        "prompt": record.case.prompt,
        "seed": record.case.seed,
        "setting": record.setting.label,
        "method": record.setting.method.name,
        "cache": record.setting.cache,
        "layers_skipped": record.attention.get("layers_skipped"),  # by the step cache
        "seconds": record.seconds,
        "dense_seconds": record.dense_seconds,
        "speedup": record.speedup,
        "attention_seconds": record.attention.get("attention_seconds"),
        "attention_share": record.attention_share,
        "attention_calls": record.attention.get("calls"),
        "mean_density": record.attention.get("mean_density"),
        "metrics": record.metrics.as_dict() if record.metrics is not None else None,
        "error": record.error,
    }


def summary_dict(summary: SettingSummary) -> dict[str, Any]:
    return {
        "setting": summary.setting.label,
        "method": summary.setting.method.name,
        "cache": summary.setting.cache,
        "layers_skipped": summary.layers_skipped,
        "runs": summary.runs,
        "failed": summary.failed,
        "seconds": summary.seconds,
        "speedup": summary.speedup,
        "attention_seconds": summary.attention_seconds,
        "attention_share": summary.attention_share,
        "mean_density": summary.mean_density,
        "psnr": summary.psnr,
        "ssim": summary.ssim,
        "lpips": summary.lpips,
    }


def results_document(result: BenchResult, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything for ``results.json``. ``meta`` holds the environment (see
    `dit_sparse.quality.environment.environment`), ``model``, ``device``, ``dtype`` and
    ``random_weights``."""
    request = result.request
    return {
        **meta,
        "note": RANDOM_WEIGHTS_NOTE if meta.get("random_weights") else None,
        "speed_note": CPU_SPEED_NOTE if meta.get("gpu") == "cpu" else None,
        "non_finite": INF_NOTE,
        "request": {
            "frames": request.frames,
            "height": request.height,
            "width": request.width,
            "steps": request.steps,
            "guidance": request.guidance,
            "negative_prompt": request.negative_prompt,
        },
        "lpips": {"available": result.lpips_note is None, "note": result.lpips_note},
        "cases": [
            {"prompt_index": c.index, "prompt": c.prompt, "seed": c.seed} for c in result.cases
        ],
        "settings": [
            {"label": s.label, "method": s.method.name, "options": s.method.options()}
            for s in result.settings
        ],
        "warmups": [run_dict(r) for r in result.warmups],
        "runs": [run_dict(r) for r in result.runs],
        "summary": [summary_dict(s) for s in summarize_runs(result)],
    }


_CSV_COLUMNS = [
    "prompt_index",
    "prompt",
    "seed",
    "setting",
    "method",
    "seconds",
    "dense_seconds",
    "speedup",
    "attention_seconds",
    "attention_share",
    "mean_density",
    "psnr",
    "ssim",
    "lpips",
    "error",
    "random_weights",
]


def write_csv(path: str | Path, result: BenchResult, random_weights: bool) -> None:
    """One row per timed run, the clip means of the metrics; empty cells for missing values."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for record in result.runs:
        row = run_dict(record)
        metrics = row.pop("metrics") or {}
        writer.writerow(
            {
                **row,
                **{key: metrics.get(key) for key in ("psnr", "ssim", "lpips")},
                "random_weights": random_weights,
            }
        )
    atomic_write_text(path, buffer.getvalue())


def _summary_table(summaries: list[SettingSummary]) -> str:
    rows = [
        [
            s.setting.label,
            fmt(s.mean_density),
            fmt(s.attention_seconds, ".2f"),
            fmt(s.attention_share, ".0%"),
            fmt(s.seconds, ".2f"),
            fmt(s.speedup, ".2f") + ("x" if s.speedup is not None else ""),
            "reference" if s.setting.is_dense else fmt(s.psnr, ".2f"),
            "reference" if s.setting.is_dense else fmt(s.ssim, ".4f"),
            "reference" if s.setting.is_dense else fmt(s.lpips, ".4f"),
            f"{s.runs - s.failed}/{s.runs}",
        ]
        for s in summaries
    ]
    headers = ["setting", "density", "attention s", "attention share", "e2e s", "speedup"]
    return markdown_table(headers + ["PSNR dB", "SSIM", "LPIPS", "runs ok"], rows)


def _runs_table(result: BenchResult) -> str:
    rows = []
    for r in result.runs:
        m = r.metrics
        rows.append(
            [
                r.case.slug,
                r.setting.label,
                fmt(r.seconds, ".2f"),
                fmt(r.speedup, ".2f"),
                fmt(r.attention.get("mean_density")),
                fmt(m.video_psnr, ".2f") if m else "-",
                fmt(m.mean_ssim, ".4f") if m else "-",
                fmt(m.mean_lpips, ".4f") if m else "-",
                r.error or "",
            ]
        )
    headers = ["case", "setting", "e2e s", "speedup", "density", "PSNR dB", "SSIM", "LPIPS"]
    return markdown_table(headers + ["error"], rows)


def summary_markdown(result: BenchResult) -> str:
    """The per-setting table alone (what ``dit-sparse bench`` prints)."""
    return _summary_table(summarize_runs(result))


def write_markdown(
    path: str | Path, result: BenchResult, meta: dict[str, Any], figures: list[str]
) -> None:
    """``results.md``: what was run where, the per-setting and per-run tables, the figures
    (paths relative to ``path``'s folder) and notes."""
    request = result.request
    lines = [f"# dit-sparse bench: {meta['model']}", ""]
    if meta.get("random_weights"):
        lines += [f"> **Speed only**: {RANDOM_WEIGHTS_NOTE}.", ""]
    if meta.get("gpu") == "cpu":
        lines += [f"> **Speed**: {CPU_SPEED_NOTE}.", ""]
    lines += [
        f"- size: {request.frames} frames, {request.height}x{request.width}, "
        f"{request.steps} steps, guidance "
        + ("the pipeline's default" if request.guidance is None else f"{request.guidance:g}"),
        f"- device: {meta['gpu']} ({meta['dtype']}); torch {meta['torch']}, diffusers "
        f"{meta['diffusers']}, triton {meta['triton']}, dit_sparse {meta['dit_sparse']}",
        f"- {len(result.cases)} case(s): "
        + "; ".join(f"{c.slug}: {c.prompt!r}" for c in result.cases),
        f"- {meta['date']}: `{meta['command']}`",
        "",
        "## Per setting",
        "",
        "Means over cases; speedup = total dense time / total time, end to end (one warm-up "
        "generation excluded); density = mean over attention calls (dense steps count 1).",
        "",
        _summary_table(summarize_runs(result)),
        "",
        "## Per run",
        "",
        _runs_table(result),
        "",
        "## Figures",
        "",
        *[f"- [{name}]({name})" for name in figures],
        "",
        "## Notes",
        "",
        "- PSNR is over the whole clip against the dense video of the same seed; `inf` means "
        "identical. In results.json " + INF_NOTE + ".",
    ]
    lpips_notes = {r.metrics.lpips_note for r in result.runs if r.metrics is not None}
    lines += [f"- LPIPS not computed: {note}." for note in sorted(lpips_notes - {None})]
    atomic_write_text(path, "\n".join(lines) + "\n")
