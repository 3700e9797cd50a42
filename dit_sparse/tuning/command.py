"""``dit-sparse tune``: the fastest setting that meets a quality target, written as a profile.

    dit-sparse tune --model wan-shapes --prompts FILE --target psnr=24 \\
        [--methods radial,svg,adaspa] [--steps N --frames F --height H --width W] \\
        [--dense-steps 0.1,0.2,0.3] [--dense-layers 0,1] [--cache SPEC] [--try-8bit] \\
        --output profile.json

``generate --profile`` and ``bench --profile`` read the profile back.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from .. import caches
from ..arguments import (
    DEFAULT_MODEL,
    UsageError,
    add_generation_args,
    check_video_args,
    default_prompt,
    fill_size_defaults,
    generation_request,
    resolve_device,
    resolve_dtype,
    warn_untrained_prompts,
)
from . import space
from .target import QualityTarget


def _numbers(text: str, flag: str, kind: type) -> tuple[Any, ...]:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        noun = "integers" if kind is int else "numbers"
        raise UsageError(f"{flag} takes comma-separated {noun}, got {text!r}")
    return values


def _methods(text: str) -> list[str]:
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in space.KNOBS]
    if not methods or unknown:
        raise UsageError(
            f"--methods: unknown method {', '.join(unknown) or '(none given)'}; "
            f"accepted: {', '.join(space.KNOBS)}"
        )
    return methods


def _tune(args: argparse.Namespace) -> int:
    """Validate everything (nothing loads before), tune, write the profile."""
    from ..quality.bench import prompts_from_args
    from ..utils import check_writable

    fill_size_defaults(args)
    check_video_args(args.model, args.frames, args.height, args.width, args.steps)
    try:
        target = QualityTarget.parse(args.target, args.margin)
        grid = (_numbers(args.dense_steps, "--dense-steps", float),)
        grid += (_numbers(args.dense_layers, "--dense-layers", int),)
        space.schedules(*grid)
        cache_specs = [caches.check_cache_spec(spec) for spec in args.cache]
        check_writable(args.output)
    except ValueError as err:
        raise UsageError(str(err)) from None
    methods = _methods(args.methods)
    prompts = prompts_from_args(args, default_prompt(args.model))
    warn_untrained_prompts(args.model, prompts)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    from ..pipelines.loading import load_pipeline
    from .tuner import tune

    pipe = load_pipeline(args.model, device=device, dtype=dtype)
    request = generation_request(args, prompts[0], args.seed)
    generation = {k: v for k, v in vars(request).items() if k != "prompt"}
    profile = tune(
        pipe,
        prompts,
        target,
        methods=methods,
        dense_steps=grid[0],
        dense_layers=grid[1],
        caches=cache_specs,
        try_8bit=args.try_8bit,
        lpips_weights=args.lpips_weights,
        model=args.model,
        **generation,
    )
    profile.environment["command"] = shlex.join(args.command_line)
    profile.save(args.output)
    print(f"wrote {args.output}")
    return 0


def add_tune_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``tune`` to the ``dit-sparse`` subcommands."""
    tune = subparsers.add_parser(
        "tune", help="find the fastest setting that meets a quality target; write a profile"
    )
    add_generation_args(tune, default_model=DEFAULT_MODEL)
    tune.set_defaults(func=_tune)
    tune.add_argument("--prompts", metavar="FILE", help="tuning prompts, one per line")
    tune.add_argument(
        "--target",
        required=True,
        metavar="METRIC=VALUE",
        help="quality against dense to keep: psnr=24, ssim=0.8 or lpips=0.1 (mean over prompts)",
    )
    tune.add_argument(
        "--margin",
        type=float,
        default=None,
        help="how far one prompt may fall below the target (default: psnr 2, ssim/lpips 0.05)",
    )
    tune.add_argument(
        "--methods",
        default=",".join(("radial", "svg", "adaspa")),
        help=f"comma-separated, of {', '.join(space.KNOBS)}",
    )
    tune.add_argument(
        "--dense-steps",
        default=",".join(map(str, space.DENSE_STEPS)),
        help="shares of the steps kept dense to try",
    )
    tune.add_argument(
        "--dense-layers",
        default=",".join(map(str, space.DENSE_LAYERS)),
        help="leading dense layers to try",
    )
    tune.add_argument("--try-8bit", action="store_true", help="try the best with precision=8bit")
    tune.add_argument("--seed", type=int, default=0, help="of every tuning generation")
    tune.add_argument("--lpips-weights", default=None, metavar="PATH", help="for an lpips target")
    tune.add_argument("--output", default="profile.json", help="the profile to write")
    caches.add_cache_argument(tune, repeatable=True)
    return tune
