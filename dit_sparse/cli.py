"""`dit-sparse`: generate videos with sparse attention, draw masks, benchmark methods."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from . import caches
from .arguments import (
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
from .methods import METHODS, SparseMethod, method_class, resolve_method


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_method(name: str, items: list[str]) -> SparseMethod:
    """The method ``name`` with the ``KEY=VALUE`` options ``items``."""
    options = parse_options(items, name)
    try:
        return resolve_method(name, **options)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None


def _load_profile(args: argparse.Namespace):
    """``--profile``'s `Profile` (its method instead of ``--method``/``-o``); its tuned size
    and steps fill those not given. None without ``--profile``."""
    if args.profile is None:
        return None
    from .tuning.profile import Profile

    if args.method is not None or args.option or args.cache is not None:
        raise UsageError("--profile sets the method, its options and the cache; drop the others")
    try:
        profile = Profile.load(args.profile)
    except ValueError as err:
        raise UsageError(f"--profile: {err}") from None
    for name in ("frames", "height", "width", "steps", "guidance"):
        if getattr(args, name) is None:
            setattr(args, name, profile.request[name])
    return profile


def _generate(args: argparse.Namespace) -> int:
    from .generation import check_output_path

    profile = _load_profile(args)
    fill_size_defaults(args)
    if args.prompt is None:
        args.prompt = default_prompt(args.model)
    method = (
        profile.method_config() if profile else build_method(args.method or "dense", args.option)
    )
    check_video_args(args.model, args.frames, args.height, args.width, args.steps)
    if args.cache is not None:
        try:
            caches.check_cache_spec(args.cache)
        except ValueError as err:
            raise UsageError(str(err)) from None
    try:  # before the model loads: a bad path must not cost a generation
        check_output_path(args.output, args.frames)
    except ValueError as err:
        raise UsageError(f"--output {err}") from None
    warn_untrained_prompts(args.model, [args.prompt])
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    rank = 0
    if args.ulysses > 1:
        from .parallel import init_ulysses

        rank, device = init_ulysses(args.ulysses, device)

    import dit_sparse

    from .generation import generate, save_frames
    from .pipelines.loading import load_pipeline
    from .pipelines.presets import PRESETS

    if rank == 0 and args.model in PRESETS and PRESETS[args.model].random_weights:
        print(
            f"note: {args.model} has random weights: its videos are for smoke tests and speed, not for looks"
        )
    pipe = load_pipeline(args.model, device=device, dtype=dtype)
    if args.ulysses > 1:
        from .parallel import enable_ulysses

        enable_ulysses(pipe, args.ulysses)
    handle = dit_sparse.apply(pipe, profile or method)
    request = generation_request(args, args.prompt, seed=args.seed)
    if args.cache is not None:
        calibrate = lambda: generate(pipe, request, progress=False)  # noqa: E731 (MagCache)
        caches.enable_cache(pipe, args.cache, num_steps=args.steps, calibrate=calibrate)
        handle.reset_stats()  # drop the calibration run's records
    result = generate(pipe, request, progress=rank == 0)
    if rank != 0:  # every rank holds the same video; rank 0 writes and reports it
        return 0
    save_frames(result.frames, args.output, fps=args.fps)
    summary = handle.summary()
    share = summary["attention_seconds"] / result.seconds if result.seconds else 0.0
    density = summary["mean_density"]
    print(
        f"wrote {args.output}: {len(result.frames)} frames {result.frames.shape[2]}x{result.frames.shape[1]}, "
        f"method {method.name}, {result.seconds:.2f} s wall, attention {summary['attention_seconds']:.2f} s "
        f"({100 * share:.1f}% of wall), mean attention density {density if density is None else f'{density:.3f}'}"
    )
    if args.report:
        print(handle.report())
    return 0


def _masks(args: argparse.Namespace) -> int:
    from .mask_image import draw_block_mask
    from .pipelines.registry import defaults_for, layout_for

    method = build_method(args.method, args.option)
    defaults = defaults_for(args.model)  # unset sizes: what the family's pipeline makes
    for name in ("frames", "height", "width"):
        if getattr(args, name) is None and defaults is not None:
            setattr(args, name, getattr(defaults, name))
    if not hasattr(method, "block_mask"):
        raise UsageError(
            f"{method.name} decides its mask online from q and k; static masks: radial"
        )
    try:
        layout = layout_for(args.model, args.frames, args.height, args.width)
        mask = method.block_mask(layout)
    except ValueError as err:
        raise UsageError(str(err)) from None
    density = method.density(layout)
    title = (
        f"{method.name} ({args.model}) {args.frames}x{args.height}x{args.width} px -> "
        f"{layout.describe()}, {method.block_size_for(layout)}-token blocks"
    )
    draw_block_mask(mask, args.output, title, density=density)
    print(f"wrote {args.output}: {tuple(mask.shape)} blocks, density {density:.3f} of token pairs")
    return 0


def _methods(args: argparse.Namespace) -> int:
    for name in METHODS:
        cls = method_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {cls.__name__} - {doc}")
        defaults = cls()
        for field in fields(cls):
            print(f"    {field.name} = {getattr(defaults, field.name)!r}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from .pipelines.presets import PRESETS

    for preset in PRESETS.values():
        weights = "random weights" if preset.random_weights else "trained"
        default = " (default)" if preset.name == DEFAULT_MODEL else ""
        print(f"{preset.name}{default}: {preset.description}")
        print(
            f"    {weights}; {preset.frames} frames {preset.width}x{preset.height}, "
            f"{preset.steps} steps"
            + ("" if preset.guidance is None else f", guidance {preset.guidance:g}")
            + f"; prompt {preset.prompt!r}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dit-sparse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="generate a video with a sparse attention method")
    add_generation_args(gen, default_model=DEFAULT_MODEL)
    gen.add_argument("--method", default=None, help=f"one of {', '.join(METHODS)} (dense)")
    gen.add_argument(
        "--profile", default=None, metavar="FILE", help="a profile.json from `dit-sparse tune`"
    )
    gen.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, e.g. -o decay_factor=0.5 (repeatable)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--fps", type=int, default=16)
    gen.add_argument("--output", default="out.mp4", help="an .mp4 (or .png for one frame)")
    gen.add_argument("--report", action="store_true", help="print the per-step/per-layer report")
    caches.add_cache_argument(gen, repeatable=False)
    gen.add_argument(
        "--ulysses",
        type=int,
        default=1,
        metavar="N",
        help="split heads over N GPUs (launch with torchrun --nproc-per-node N)",
    )
    gen.set_defaults(func=_generate)

    masks = sub.add_parser("masks", help="draw a static method's block mask")
    masks.add_argument("--method", default="radial")
    masks.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE")
    masks.add_argument("--model", default="wan", help="model family (wan)")
    masks.add_argument("--frames", type=int, default=None, help="default: the family's")
    masks.add_argument("--height", type=int, default=None)
    masks.add_argument("--width", type=int, default=None)
    masks.add_argument("--output", default="mask.png")
    masks.set_defaults(func=_masks)

    methods = sub.add_parser("methods", help="list methods and their options")
    methods.set_defaults(func=_methods)

    presets = sub.add_parser("presets", help="list the built-in models (no download)")
    presets.set_defaults(func=_presets)

    from .quality.bench import add_bench_parser
    from .tuning.command import add_tune_parser

    add_bench_parser(sub)
    add_tune_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # What was typed, for the records that say how they were made (also when called in-process).
    args.command_line = ["dit-sparse", *(sys.argv[1:] if argv is None else argv)]
    try:
        return args.func(args)
    except UsageError as err:
        print(f"dit-sparse {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001  (one line for users; the type says what)
        from .pipelines.loading import ModelUnavailableError

        if isinstance(err, ModelUnavailableError | ValueError):
            print(f"dit-sparse {args.command}: error: {err}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
