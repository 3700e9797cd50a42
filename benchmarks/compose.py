"""Sparse attention composed with torch.compile and a step cache (issue 30), on the real Wan2.1
architectures with random weights.

    python benchmarks/compose.py [--models 1.3b,14b] [--methods radial,svg,adaspa] [--out PATH]
    python benchmarks/compose.py --tiny --backend aot_eager   # a CPU smoke test of this script

Per model (the transformer, inputs and timing protocol of `e2e.py`: bf16, random latents and
512 text tokens, ``--warmup`` untimed then ``--repeats`` timed forwards, median):

1. eager: a dense forward, and for each method one forward per kind of step of its default
   50-step schedule (`e2e.Bench.method`);
2. compiled: the same after ``transformer.compile_repeated_blocks(fullgraph=True)`` with
   ``--backend`` (Inductor by default; the warm-up runs absorb compilation, so keep
   ``--warmup`` >= 1), with dynamo's graph breaks and the number of graphs compiled;
3. the step cache ``--cache`` (a TaylorSeer spec: the steps it skips are fixed by its
   ``cache_interval`` and ``disable_cache_before_step``, not by the model's outputs): the time
   of a forward it predicts instead of computing, measured with the cache on (eager);
4. 50-step totals composed from those times (not a 50-step run): x2 forwards per step for
   classifier-free guidance; each step costs its method kind's forward in that mode, or the
   predicted forward where the cache skips the step. A search step that the cache skips is
   counted as skipped (AdaSpa then reuses its last plan at the next computed step).

Speedups are against the dense eager total. The issue's targets stand beside them: the best
cache + sparse + compiled total >= 2.5x on 14B 720p, and compiled sparse / compiled dense >=
eager sparse / eager dense.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from common import DENSE, NUM_STEPS, error_text, median, timed
from e2e import (
    FORWARDS_PER_STEP,
    Bench,
    ModelSpec,
    measure,
    model_header,
    model_parser,
    results_prefix,
    run_models,
)

import dit_sparse
from dit_sparse import caches
from dit_sparse.quality.report import markdown_table

# Whole blocks predicted on skipped steps; full computation for the first 12 steps (the
# share Radial's and SVG's schedules also keep dense), then every other step.
DEFAULT_CACHE = (
    r"TaylorSeerCache:cache_interval=2,disable_cache_before_step=12,"
    r"cache_identifiers=['blocks\.\d+']"
)


def taylorseer_computes(config: Any, num_steps: int) -> list[bool]:
    """Whether TaylorSeer computes step ``s`` (else predicts it): diffusers 0.42.1's rule
    (``TaylorSeerCacheHook._measure_should_compute``), the step being its per-branch count of
    forwards."""
    computes = []
    for step in range(num_steps):
        warmup = step < config.disable_cache_before_step
        interval = (step - config.disable_cache_before_step - 1) % config.cache_interval == 0
        after = config.disable_cache_after_step
        computes.append(warmup or interval or (after is not None and step >= after))
    return computes


def observed_computes(bench: Bench, spec: str, num_steps: int) -> list[bool]:
    """Which of ``num_steps`` forwards ran their attention layers with the cache on: what
    dit_sparse's step tracking reports (checks `taylorseer_computes`; cheap only at tiny
    sizes)."""
    caches.enable_cache(bench.transformer, spec)
    try:
        with dit_sparse.attached(bench.transformer, DENSE) as handle:
            for step in range(num_steps):
                bench.forward(step)
            return [f["layers_run"] > 0 for f in handle.forwards()]
    finally:
        caches.disable_cache(bench.transformer)


def predicted_forward(bench: Bench, spec: str) -> list[float]:
    """Seconds of a forward the cache predicts: per repeat, one computed forward then a timed
    predicted one (``disable_cache_before_step=1``, ``cache_interval=2``: forward 1 predicts)."""
    name, fields = caches.parse_cache_spec(spec)
    fields.update(disable_cache_before_step=1, cache_interval=2, disable_cache_after_step=None)
    probe = f"{name}:" + ",".join(f"{k}={v!r}" for k, v in fields.items())
    caches.enable_cache(bench.transformer, probe)
    try:
        times = []
        for _ in range(bench.args.warmup + bench.args.repeats):
            bench.transformer._diffusers_hook.reset_stateful_hooks()
            bench.forward(0)
            times.append(timed(lambda: bench.forward(1), bench.device)[0])
        return times[bench.args.warmup :]
    finally:
        caches.disable_cache(bench.transformer)


def compile_blocks(bench: Bench, backend: str) -> None:
    bench.transformer.compile_repeated_blocks(backend=backend, fullgraph=True)


def total(schedule: list[str], seconds_of: dict[str, float], computes: list[bool] | None,
          skipped: float) -> float:  # fmt: skip
    """50-step seconds: per step its kind's forward, or ``skipped`` where the cache skips."""
    steps = (
        seconds_of[label] if computes is None or computes[i] else skipped
        for i, label in enumerate(schedule)
    )
    return FORWARDS_PER_STEP * sum(steps)


def compositions(modes: dict[str, dict[str, Any]], computes: list[bool], skipped: float):
    """One row per (method, mode, cache or not): composed 50-step seconds and speedup over
    dense eager."""
    reference = FORWARDS_PER_STEP * NUM_STEPS * modes["eager"]["dense"]["median"]
    rows = []
    for mode, measured in modes.items():
        entries = [(DENSE, [DENSE] * NUM_STEPS, {DENSE: measured["dense"]["median"]})]
        for r in measured["methods"]:
            if "error" not in r:
                seconds_of = {DENSE: measured["dense"]["median"]}
                seconds_of.update({k: v["median"] for k, v in r["steps"].items()})
                entries.append((r["method"], r["schedule"], seconds_of))
        for method, schedule, seconds_of in entries:
            for cached in (False, True):
                seconds = total(schedule, seconds_of, computes if cached else None, skipped)
                rows.append(
                    {
                        "method": method,
                        "mode": mode,
                        "cache": cached,
                        "total_seconds": seconds,
                        "speedup_vs_dense_eager": reference / seconds,
                    }
                )
    return rows


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two targets, measured: the best total's speedup, and per method the
    compiled and eager speedups of sparse over dense."""
    by = {(r["method"], r["mode"], r["cache"]): r["total_seconds"] for r in rows}
    best = max(rows, key=lambda r: r["speedup_vs_dense_eager"])
    ratios = {}
    for method in sorted({r["method"] for r in rows} - {DENSE}):
        ratios[method] = {
            mode: by[(DENSE, mode, False)] / by[(method, mode, False)]
            for mode in ("eager", "compiled")
            if (method, mode, False) in by
        }
    return {
        "best": best,
        "best_speedup_target": 2.5,
        "sparse_over_dense": ratios,
        "compiled_keeps_sparse_speedup": {
            m: r.get("compiled", 0.0) >= r.get("eager", float("inf")) for m, r in ratios.items()
        },
    }


def bench_model(spec: ModelSpec, methods: list[str], args, device, dtype) -> dict[str, Any]:
    result = model_header(spec)
    try:
        bench = Bench(spec, args, device, dtype)
        config = caches.cache_config(bench.transformer, args.cache)
        computes = taylorseer_computes(config, NUM_STEPS)
        with torch.inference_mode():
            skipped = predicted_forward(bench, args.cache)
            if args.tiny:
                result["cache_rule_matches"] = (
                    observed_computes(bench, args.cache, NUM_STEPS) == computes
                )
            eager = measure(bench, methods)
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            compile_blocks(bench, args.backend)
            compiled = measure(bench, methods)
            counters = torch._dynamo.utils.counters
            compiled["graph_breaks"] = sum(counters["graph_break"].values())
            compiled["graphs"] = counters["stats"]["unique_graphs"]
        bench.close()
    except Exception as err:  # noqa: BLE001  (out of memory, say: the next model may fit)
        return {**result, "error": error_text(err)}
    modes = {"eager": eager, "compiled": compiled}
    rows = compositions(modes, computes, median(skipped))
    return {
        **result,
        **modes,
        "cache": {
            "spec": args.cache,
            "config": repr(config),
            "computed_steps": [i for i, c in enumerate(computes) if c],
            "skipped_steps": [i for i, c in enumerate(computes) if not c],
            "predicted_forward_seconds": skipped,
            "predicted_forward_median": median(skipped),
        },
        "compositions": rows,
        "targets": targets(rows),
    }


def table(models: list[dict[str, Any]]) -> str:
    rows = []
    for m in models:
        model = f"{m['model']} {m['video']}".strip()
        if "error" in m:
            rows.append([model, "-", "-", "-", f"error: {m['error']}", ""])
            continue
        for r in m["compositions"]:
            cache = f"+ cache ({len(m['cache']['skipped_steps'])} of {NUM_STEPS} skipped)"
            rows.append(
                [
                    model,
                    r["method"],
                    r["mode"],
                    cache if r["cache"] else "-",
                    f"{r['total_seconds']:.1f}",
                    f"{r['speedup_vs_dense_eager']:.2f}x",
                ]
            )
    headers = ["model", "method", "mode", "step cache", f"{NUM_STEPS} steps s (composed)"]
    return markdown_table(headers + ["vs dense eager"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = model_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", default="inductor", help="torch.compile backend (aot_eager: no codegen)"
    )
    parser.add_argument(
        "--cache", default=DEFAULT_CACHE, help="a TaylorSeer spec (dit_sparse.caches)"
    )
    args = parser.parse_args(argv)
    name, _ = caches.parse_cache_spec(args.cache)
    if name != "TaylorSeerCacheConfig":
        parser.error(f"--cache must be a TaylorSeer spec (its skipped steps are fixed), got {name}")
    compile_call = "transformer.compile_repeated_blocks(fullgraph=True)"
    return run_models(
        parser,
        args,
        results_prefix("compose", args),
        bench_model,
        table,
        backend=args.backend,
        compile=compile_call,
    )


if __name__ == "__main__":
    sys.exit(main())
