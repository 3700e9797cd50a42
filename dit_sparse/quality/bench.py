"""``dit-sparse bench``: every method against dense on the same prompts and seeds.

    dit-sparse bench --model tiny-wan --methods dense,radial --prompt "a red ball rolls left" \\
        --seeds 0,1 --output-dir bench-out [--sweep radial.decay_factor=0.5,1,2] \\
        [-o radial.dense_steps=0.25] [--lpips-weights alexnet-owt-7be5be79.pth] \\
        [--cache FirstBlockCache:threshold=0.1 --cache TaylorSeerCache:cache_interval=2]

writes ``results.json``, ``results.csv``, ``results.md``, ``pareto.png``, ``psnr/<case>.png``
and ``videos/<setting>__<case>.mp4`` (dense | method | error heatmap) under ``--output-dir``.
Each ``--cache`` (a diffusers step cache, `dit_sparse.caches`) runs with every method setting,
labelled ``method + cache`` (with dense: the cache alone), beside the settings without one.
A video identical to dense has PSNR ``inf``: ``"inf"`` in results.json, ``inf`` in the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .. import caches
from ..arguments import (
    DEFAULT_MODEL,
    UsageError,
    add_generation_args,
    check_video_args,
    default_prompt,
    fill_size_defaults,
    generation_request,
    parse_options,
    resolve_device,
    resolve_dtype,
    warn_untrained_prompts,
)
from ..methods import METHODS
from ..utils import warn_once


def _method_key(item: str, flag: str) -> tuple[str, str]:
    """``"radial.decay_factor=0.5"`` -> ``("radial", "decay_factor=0.5")``."""
    method, dot, rest = item.partition(".")
    if not dot or not method or "=" not in rest:
        raise UsageError(f"{flag} takes METHOD.KEY=VALUE, got {item!r}")
    return method.strip().lower(), rest


def parse_method_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["radial.decay_factor=0.5"]`` -> ``{"radial": {"decay_factor": 0.5}}``."""
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        method, rest = _method_key(item, "--option")
        options.setdefault(method, {}).update(parse_options([rest], method))
    return options


def parse_sweeps(items: list[str]) -> dict[str, dict[str, list[Any]]]:
    """``["radial.decay_factor=0.5,1"]`` -> ``{"radial": {"decay_factor": [0.5, 1]}}``."""
    sweeps: dict[str, dict[str, list[Any]]] = {}
    for item in items:
        method, rest = _method_key(item, "--sweep")
        key, _, text = rest.partition("=")
        values = [
            parse_options([f"{key}={v.strip()}"], method) for v in text.split(",") if v.strip()
        ]
        if not values:
            raise UsageError(f"--sweep {item!r} lists no values")
        for parsed in values:
            for name, value in parsed.items():
                sweeps.setdefault(method, {}).setdefault(name, []).append(value)
    return sweeps


def prompts_from_args(args: argparse.Namespace, default: str) -> list[str]:
    """``--prompts FILE`` (one a line, ``#`` comments) or ``--prompt``, else ``[default]``."""
    if args.prompts is None:
        return [args.prompt if args.prompt is not None else default]
    if args.prompt is not None:
        raise UsageError("give --prompt or --prompts, not both")
    path = Path(args.prompts)
    if not path.is_file():
        raise UsageError(f"--prompts file not found: {path}")
    lines = [line.strip() for line in path.read_text().splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise UsageError(f"--prompts file {path} has no prompts (one per line, # comments)")
    return prompts


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds takes distinct comma-separated integers, got {text!r}")
    return seeds


def _settings(args: argparse.Namespace):
    from .harness import make_settings

    methods = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UsageError(f"--methods lists no method; accepted: {', '.join(METHODS)}")
    try:
        cache_specs = [caches.check_cache_spec(spec) for spec in args.cache]
        options = parse_method_options(args.option)
        return make_settings(methods, options, parse_sweeps(args.sweep), cache_specs)
    except ValueError as err:
        raise UsageError(str(err)) from None
    except ImportError as err:  # a registered method whose module is not there yet
        raise UsageError(f"a method in --methods is not available: {err}") from None


def load_profiles(paths: list[str]) -> list[Any]:
    """The `Profile` of each ``--profile`` file."""
    from ..tuning.profile import Profile

    try:
        return [Profile.load(path) for path in paths]
    except ValueError as err:
        raise UsageError(f"--profile: {err}") from None


def _bench(args: argparse.Namespace) -> int:
    """Validate everything, load the model, run the plan, write every output."""
    fill_size_defaults(args)
    check_video_args(args.model, args.frames, args.height, args.width, args.steps)
    prompts = prompts_from_args(args, default_prompt(args.model))
    warn_untrained_prompts(args.model, prompts)
    seeds = _seeds(args.seeds)
    profiles = load_profiles(args.profile)
    settings = _settings(args) + [profile.setting() for profile in profiles]
    if args.lpips_weights is not None and not Path(args.lpips_weights).is_file():
        raise UsageError(f"--lpips-weights file not found: {args.lpips_weights}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    from ..pipelines.loading import load_pipeline
    from ..pipelines.presets import PRESETS
    from . import plots, report
    from .environment import environment
    from .harness import Case, run_bench, summarize_runs
    from .metrics import LpipsUnavailable, load_lpips

    random_weights = args.model in PRESETS and PRESETS[args.model].random_weights
    notes = [report.SPEED_ONLY] if random_weights else []
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu:
        notes.append(report.CPU_SPEED)
    note = "; ".join(notes) or None  # figure titles and video labels
    if on_cpu:  # CPU time says nothing about a GPU: plot quality against density there
        pareto_x, pareto_note = "density", report.SPEED_ONLY if random_weights else None
    else:
        pareto_x, pareto_note = "speedup", note
    if random_weights:
        print(f"note: {args.model}: {report.RANDOM_WEIGHTS_NOTE}")
    out = Path(args.output_dir)
    pipe = load_pipeline(args.model, device=device, dtype=dtype)
    for profile in profiles:  # a profile tuned elsewhere says so, once
        profile.check_model(pipe)
        profile.check_size(args.frames, args.height, args.width)
    lpips = load_lpips(args.lpips_weights, device)
    if isinstance(lpips, LpipsUnavailable):
        print(f"note: LPIPS skipped: {lpips.reason}")
    request = generation_request(args, prompts[0])
    cases = [Case(i, prompt, seed) for i, prompt in enumerate(prompts) for seed in seeds]

    def on_video(record, dense_frames, frames) -> None:
        name = f"{plots.slug(record.setting.label)}__{record.case.slug}.mp4"
        try:
            plots.write_side_by_side(
                out / "videos" / name, dense_frames, frames, record.setting.label, note, args.fps
            )
        except (ImportError, RuntimeError, OSError) as error:
            # The measurements stand without their videos.
            warn_once("bench-videos", f"side-by-side videos are not written: {error}")

    result = run_bench(
        pipe,
        request,
        cases,
        settings,
        lpips=lpips,
        metrics_device=device,
        warmup_each=args.warmup_each,
        on_video=on_video,
    )
    meta = {
        # As typed: `dit-sparse bench ...`, whichever way the entry point was reached.
        **environment(device, args.command_line),
        "model": args.model,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "random_weights": random_weights,
        "warmup_each": args.warmup_each,
    }
    figures = ["pareto.png"]
    tuned = [s.label for s in settings if s.label.startswith("tuned ")]
    plots.plot_pareto(
        summarize_runs(result), out / "pareto.png", pareto_note, x=pareto_x, highlight=tuned
    )
    for case in cases:
        figures.append(f"psnr/{case.slug}.png")
        runs = [r for r in result.runs if r.case == case]
        plots.plot_psnr_per_frame(runs, out / figures[-1], note)
    figures += sorted(f"videos/{p.name}" for p in (out / "videos").glob("*.mp4"))
    report.write_json(out / "results.json", report.results_document(result, meta))
    report.write_csv(out / "results.csv", result, random_weights)
    report.write_markdown(out / "results.md", result, meta, figures)
    print(report.summary_markdown(result))
    failed = [r for r in result.runs if not r.ok]
    print(f"wrote {out}/results.json, results.csv, results.md and {len(figures)} figures/videos")
    for record in failed:
        print(f"failed: {record.setting.label} {record.case.slug}: {record.error}")
    return 1 if failed else 0


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``dit-sparse`` subcommands."""
    bench = subparsers.add_parser(
        "bench", help="quality (PSNR/SSIM/LPIPS vs dense) and speed of methods, with plots"
    )
    add_generation_args(bench, default_model=DEFAULT_MODEL)
    bench.set_defaults(func=_bench)
    bench.add_argument("--prompts", metavar="FILE", help="one prompt per line (# comments)")
    bench.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated; dense always runs once per prompt and seed as the reference",
    )
    bench.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1")
    bench.add_argument("--output-dir", required=True, help="folder for results and figures")
    bench.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="METHOD.KEY=V1,V2,...",
        help="one setting per value, e.g. radial.decay_factor=0.5,1,2 (repeatable: a grid)",
    )
    bench.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a method option for every setting of that method, e.g. -o svg.density=0.3",
    )
    bench.add_argument(
        "--lpips-weights",
        default=None,
        metavar="PATH",
        help="local torchvision AlexNet weights (alexnet-owt-7be5be79.pth) for LPIPS offline",
    )
    bench.add_argument(
        "--warmup-each",
        action="store_true",
        help="also run each method once untimed first (keeps Triton compile/autotune out)",
    )
    bench.add_argument("--fps", type=int, default=16, help="of the side-by-side videos")
    bench.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="FILE",
        help="also run a `dit-sparse tune` profile's setting (repeatable)",
    )
    caches.add_cache_argument(bench, repeatable=True)
    return bench
