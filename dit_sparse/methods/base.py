"""The method protocol: what every sparse attention method implements, and its shared schedule."""

from __future__ import annotations

import ast
import contextlib
import functools
import numbers
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Union

import torch

from ..kernels import block_sparse_attention
from ..kernels.block_sparse_attention import PRECISIONS
from ..layout import TokenLayout
from ..parallel import HeadPartition
from ..plan import BlockPlan

# What `SparseMethod.dense_precision` takes: the model's own attention, or our 8-bit kernel.
DENSE_PRECISIONS = ("model", "8bit")


@dataclass
class AttentionCall:
    """Everything a method may use to decide one self-attention call, besides q, k and v.

    ``cache`` belongs to the current guidance branch and lives for one generation (diffusers
    resets it at the end of every pipeline call); key what you store by layer and shape.
    ``heads`` says which global heads this process holds (a slice under Ulysses context
    parallelism, see `dit_sparse.parallel`). ``info`` is written by the method and ends up in ``handle.report()``: ``density`` (a float
    or a 0-d tensor), ``kind`` (a short label such as ``"sparse"`` or ``"search"``) and any
    method-specific entries.
    """

    layout: TokenLayout
    layer: int
    num_layers: int
    step: int
    num_steps: int | None
    branch: str
    cache: dict[Any, Any]
    scale: float | None = None
    heads: HeadPartition | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _resolve_count(value: int | float, total: int | None) -> int:
    """An int is a count; a float in [0, 1] is a share of ``total`` (rounded)."""
    if isinstance(value, float):
        if total is None:
            return 0
        return round(value * total)
    return value


def read_literal(text: str) -> Any:
    """A command-line value as Python reads it: ``0.5``, ``(1, 2)``, ``None``; ``true`` and
    ``false`` in any case as booleans; anything else as the string itself."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return None


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (the kinds method fields use)."""
    alternatives = _union_args(hint)
    if alternatives is not None:
        return any(_matches(value, alternative) for alternative in alternatives)
    origin = typing.get_origin(hint)
    if origin is Literal:  # the type only: a value out of the choices is the class's to refuse
        return any(type(value) is type(choice) for choice in typing.get_args(hint))
    if origin in (Sequence, list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return isinstance(value, list | tuple) and all(_matches(v, item) for v in value)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if isinstance(value, bool) and hint is not bool:  # True is an int to Python, not to users
        return False
    if hint is float:
        return isinstance(value, numbers.Real)
    if hint is int:
        return isinstance(value, numbers.Integral)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    """``float | None`` -> ``"a number or None"``: an annotation in words."""
    alternatives = _union_args(hint)
    if alternatives is not None:
        if int in alternatives and float in alternatives:  # an int is a number already
            alternatives = tuple(a for a in alternatives if a is not int)
        return " or ".join(_describe(a) for a in alternatives)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if origin in (Sequence, list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return f"a list (each {_describe(item)})"
    names = {
        float: "a number",
        int: "an integer",
        bool: "true or false",
        str: "a string",
        type(None): "None",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))


@functools.cache
def option_types(cls: type) -> dict[str, Any]:
    """``{field name: annotation}`` of a method config class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


@dataclass
class SparseMethod:
    """Base of every method config: the dense schedule every method shares.

    Fields:
        dense_steps: leading denoising steps run dense. An int counts steps; a float in
            [0, 1] is a share of the pipeline's step count (0.2 of 50 steps = 10).
        dense_final_steps: trailing steps run dense (some users of Radial ask for this).
        dense_layers: leading attention layers run dense (an int, or a float share).
        precision: arithmetic of the sparse steps' attention kernel: ``"bf16"`` (the input
            dtype's tensor cores) or ``"8bit"`` (INT8 Q K^T, FP8 P V; see
            `dit_sparse.kernels.attention_8bit`).
        dense_precision: the calls the schedule keeps dense: ``"model"`` (the model's own
            attention) or ``"8bit"`` (our 8-bit kernel with a full plan).
    """

    name: ClassVar[str] = "base"

    dense_steps: int | float = 0
    dense_final_steps: int = 0
    dense_layers: int | float = 0
    precision: str = "bf16"
    dense_precision: str = "model"

    def __post_init__(self) -> None:
        for name, hint in option_types(type(self)).items():
            value = getattr(self, name)
            if not _matches(value, hint):
                raise TypeError(
                    f"{type(self).__name__} option {name} takes {_describe(hint)}, "
                    f"got {value!r} ({type(value).__name__})"
                )
        for name, accepted in (("precision", PRECISIONS), ("dense_precision", DENSE_PRECISIONS)):
            if getattr(self, name) not in accepted:
                raise ValueError(
                    f"{name} must be one of {', '.join(map(repr, accepted))}; "
                    f"got {getattr(self, name)!r}"
                )
        for name in ("dense_steps", "dense_layers"):
            value = getattr(self, name)
            if isinstance(value, float) and not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"{name} as a float is a share of the total, in [0, 1]; got {value}"
                )
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.dense_final_steps < 0:
            raise ValueError(f"dense_final_steps must be >= 0, got {self.dense_final_steps}")

    @classmethod
    def option_from_text(cls, name: str, text: str) -> Any:
        """The value of option ``name`` written as ``text`` on a command line, of the field's
        type: a Python literal where it fits, else the string (for string options) or
        ``float(text)`` (``inf``); ``TypeError`` naming the option and its type otherwise.
        Unknown names give the literal, for the constructor to refuse."""
        hint = option_types(cls).get(name)
        value = read_literal(text)
        if hint is None or _matches(value, hint):
            return value
        if _matches(text, hint):
            return text
        with contextlib.suppress(ValueError):
            if _matches(float(text), hint):
                return float(text)
        raise TypeError(f"{cls.__name__} option {name} takes {_describe(hint)}, got {text!r}")

    def check_layout(self, layout: TokenLayout) -> None:
        """Raise ``ValueError`` if this method cannot take ``layout`` (say which methods can)."""

    def runs_dense(self, call: AttentionCall) -> bool:
        """Whether the schedule keeps this call dense (warm-up steps, final steps, first layers)."""
        if call.step < _resolve_count(self.dense_steps, call.num_steps):
            return True
        if (
            self.dense_final_steps
            and call.num_steps is not None
            and call.step >= call.num_steps - self.dense_final_steps
        ):
            return True
        return call.layer < _resolve_count(self.dense_layers, call.num_layers)

    def attend_dense(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor | None:
        """A call the schedule keeps dense (and unmasked): return its output to compute it
        yourself, say to keep statistics from it, or None to let the model's own attention run
        (the default, unless ``dense_precision="8bit"``: then our 8-bit kernel on a full plan)."""
        if self.dense_precision == "model":
            return None
        key = ("dense-plan", q.shape[-2], q.device)
        if key not in call.cache:
            call.cache[key] = BlockPlan.dense(1, 1, q.shape[-2], device=q.device)
        call.info.update(kind="dense-8bit", density=1.0)
        return block_sparse_attention(
            q, k, v, call.cache[key], scale=call.scale, precision=self.dense_precision
        )

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        """Sparse attention for one call, ``[B, H, S, D]`` in and out, in the original order."""
        raise NotImplementedError(f"{type(self).__name__} has no sparse attention")

    def reset(self) -> None:
        """Drop whatever the method caches across generations (called by ``remove``)."""

    def report_lines(self, records: list[dict[str, Any]]) -> list[str]:
        """Method-specific lines for ``handle.report()`` (records are those of this method)."""
        return []

    def options(self) -> dict[str, Any]:
        """The config as a plain dict (for reports and results files)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
