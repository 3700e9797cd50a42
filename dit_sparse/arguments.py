"""The generation arguments that `dit-sparse generate` and `dit-sparse bench` share: their
options, the defaults they take from the model, and the checks made before anything loads.

A library module (``quality.bench`` uses it), so the CLI imports it and never the reverse.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from .methods import method_class
from .methods.base import read_literal

DTYPES = ("float32", "bfloat16", "float16")


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
    from .pipelines.registry import defaults_for

    preset = PRESETS.get(args.model)
    if preset:
        defaults = (preset.frames, preset.height, preset.width, preset.steps)
    else:
        family = defaults_for(model_family(args.model) or "wan") or defaults_for("wan")
        defaults = (family.frames, family.height, family.width, family.steps)
    for name, value in zip(("frames", "height", "width", "steps"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.guidance is None and preset:
        args.guidance = preset.guidance
