"""`dit-sparse`: generate videos with sparse attention, draw masks, benchmark methods."""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import fields
from typing import Any

from .methods import METHODS, SparseMethod, method_class, resolve_method
from .methods.base import read_literal

DTYPES = ("float32", "bfloat16", "float16")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(ValueError):
    """A bad argument found after parsing; reported as one line, exit code 2."""


def parse_options(items: list[str], method: str | None = None) -> dict[str, Any]:
    """``["decay_factor=0.5", "model_type=wan"]`` -> dict. Values are read as the type of
    ``method``'s option of that name (`SparseMethod.option_from_text`); without a method (or
    for an unknown one, which building it reports) as Python literals, ``true``/``false`` in
    any case as booleans, anything else as a string."""
    cls = None
    if method is not None:
        with contextlib.suppress(ValueError):
            cls = method_class(method)
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option takes KEY=VALUE, got {item!r}")
        key = key.replace("-", "_")
        if cls is None:
            options[key] = read_literal(text)
            continue
        try:
            options[key] = cls.option_from_text(key, text)
        except TypeError as err:
            raise UsageError(f"--option {item}: {err}") from None
    return options


def build_method(name: str, items: list[str]) -> SparseMethod:
    """The method ``name`` with the ``KEY=VALUE`` options ``items``."""
    options = parse_options(items, name)
    try:
        return resolve_method(name, **options)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu"
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise UsageError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def resolve_dtype(dtype: str | None, device: str):
    import torch

    if dtype is None:
        dtype = "float32" if device == "cpu" else "bfloat16"
    return getattr(torch, dtype)


def check_video_args(model: str, frames: int, height: int, width: int, steps: int) -> None:
    """Reject sizes the model family cannot take, before anything is loaded."""
    from .pipelines.loading import model_family
    from .pipelines.registry import size_rule_for

    if steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    family = model_family(model)
    rule = size_rule_for(family) if family else None
    if rule is not None:
        try:
            rule.check(frames, height, width)
        except ValueError as err:
            raise UsageError(f"{model}: {err}") from None


# Trained (dit_sparse/data/wan-shapes): its attention has structure, unlike random weights.
DEFAULT_MODEL = "wan-shapes"


def add_generation_args(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model, help="preset name, hub id or local path")
    parser.add_argument("--prompt", default=None, help="default: the preset's example prompt")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument(
        "--frames", type=int, default=None, help="pixel frames (default: the preset's)"
    )
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="guidance scale (the preset's, else the pipeline's)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--dtype", choices=DTYPES, default=None, help="default: float32 on CPU, bfloat16 on GPU"
    )


# Each family pipeline's own defaults: (frames, height, width, steps).
FAMILY_DEFAULTS = {
    "wan": (81, 480, 832, 50),
    "hunyuan_video": (129, 720, 1280, 50),
    "cogvideox": (49, 480, 720, 50),
    "ltx": (161, 512, 704, 50),
    "flux": (1, 1024, 1024, 28),
}


def generation_request(args: argparse.Namespace, prompt: str, seed: int = 0):
    """The `GenerationRequest` that the generation arguments (`add_generation_args`) describe."""
    from .generation import GenerationRequest

    return GenerationRequest(
        prompt=prompt,
        negative_prompt=args.negative_prompt,
        frames=args.frames,
        height=args.height,
        width=args.width,
        steps=args.steps,
        guidance=args.guidance,
        seed=seed,
    )


def default_prompt(model: str) -> str:
    """The preset's example prompt (any other model gets the generic one)."""
    from .pipelines.presets import PRESETS, Preset

    preset = PRESETS.get(model)
    return preset.prompt if preset else Preset.prompt


def warn_untrained_prompts(model: str, prompts: list[str]) -> None:
    """Print a warning for each prompt the preset ``model`` was not trained for."""
    from .pipelines.presets import PRESETS

    preset = PRESETS.get(model)
    for prompt in prompts:
        warning = preset.warn_about(prompt) if preset else None
        if warning:
            print(f"warning: {warning}", file=sys.stderr)


def fill_size_defaults(args: argparse.Namespace) -> None:
    """Unset sizes and steps take the preset's (and its guidance), or the model family
    pipeline's defaults."""
    from .pipelines.loading import model_family
    from .pipelines.presets import PRESETS

    preset = PRESETS.get(args.model)
    if preset:
        defaults = (preset.frames, preset.height, preset.width, preset.steps)
    else:
        defaults = FAMILY_DEFAULTS.get(model_family(args.model) or "wan", FAMILY_DEFAULTS["wan"])
    for name, value in zip(("frames", "height", "width", "steps"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.guidance is None and preset:
        args.guidance = preset.guidance


def _generate(args: argparse.Namespace) -> int:
    from .generation import check_output_path

    fill_size_defaults(args)
    if args.prompt is None:
        args.prompt = default_prompt(args.model)
    method = build_method(args.method, args.option)
    check_video_args(args.model, args.frames, args.height, args.width, args.steps)
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
    handle = dit_sparse.apply(pipe, method)
    request = generation_request(args, args.prompt, seed=args.seed)
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
    from .masks import draw_block_mask, layout_for

    method = build_method(args.method, args.option)
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
    gen.add_argument("--method", default="dense", help=f"one of {', '.join(METHODS)}")
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
    masks.add_argument("--frames", type=int, default=81)
    masks.add_argument("--height", type=int, default=480)
    masks.add_argument("--width", type=int, default=832)
    masks.add_argument("--output", default="mask.png")
    masks.set_defaults(func=_masks)

    methods = sub.add_parser("methods", help="list methods and their options")
    methods.set_defaults(func=_methods)

    presets = sub.add_parser("presets", help="list the built-in models (no download)")
    presets.set_defaults(func=_presets)

    from .quality.bench import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
