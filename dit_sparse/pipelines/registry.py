"""Model adapters, registered by transformer class: what dit_sparse needs to know per model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..layout import TokenLayout


class ModelAdapter(Protocol):
    """How one transformer family exposes its video self-attention.

    ``attention_modules`` lists the self-attention modules to handle, in depth order;
    ``layout`` reads the token layout from the transformer's forward arguments (only there is
    the video shape visible: inside a processor there is just ``[B, S, C]``).

    The family's facts that are needed before a model is loaded live here too, and nowhere
    else (the CLI, the presets and the mask drawing ask for them by family): ``size_rule``
    (`VideoSizeRule`, the sizes its pipeline accepts), ``defaults`` (`PipelineDefaults`, what
    its pipeline generates unless told otherwise) and ``token_factors`` (`TokenFactors`, where
    pixels map to tokens in a fixed way). Each is optional.
    """

    transformer_class: str
    family: str

    def attention_modules(
        self, transformer: torch.nn.Module
    ) -> list[tuple[str, torch.nn.Module]]: ...

    def layout(
        self, transformer: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> TokenLayout: ...


@dataclass(frozen=True)
class VideoSizeRule:
    """Which (frames, height, width) a pipeline family accepts, for checks before loading."""

    frame_step: int = 4  # frames = frame_step * n + 1
    spatial_multiple: int = 16
    single_frame: bool = False  # image models: frames must be 1

    def check(self, frames: int, height: int, width: int) -> None:
        if self.single_frame:
            if frames != 1:
                raise ValueError(f"this is an image model: --frames must be 1, got {frames}")
        elif frames < 1 or (frames - 1) % self.frame_step:
            lower = max(1, (frames - 1) // self.frame_step * self.frame_step + 1)
            raise ValueError(
                f"frames must be {self.frame_step}*n + 1 (e.g. {lower} or {lower + self.frame_step}), got {frames}"
            )
        for name, value in (("height", height), ("width", width)):
            if value < self.spatial_multiple or value % self.spatial_multiple:
                near = max(
                    self.spatial_multiple,
                    round(value / self.spatial_multiple) * self.spatial_multiple,
                )
                raise ValueError(
                    f"{name} must be a positive multiple of {self.spatial_multiple} (e.g. {near}), got {value}"
                )


@dataclass(frozen=True)
class PipelineDefaults:
    """The size and step count a family's diffusers pipeline uses when not given any."""

    frames: int
    height: int
    width: int
    steps: int


@dataclass(frozen=True)
class TokenFactors:
    """Pixels per self-attention token: VAE compression times patch size.

    ``frames`` pixel frames make one latent frame (after the first, which makes one alone);
    ``pixels`` pixels along each side make one token.
    """

    frames: int
    pixels: int

    def layout(
        self, frames: int, height: int, width: int, *, text_len: int = 0, text_first: bool = False
    ) -> TokenLayout:
        """The token layout of a ``frames`` x ``height`` x ``width`` pixel video."""
        return TokenLayout(
            (frames - 1) // self.frames + 1,
            height // self.pixels,
            width // self.pixels,
            text_len=text_len,
            text_first=text_first,
        )


_ADAPTERS: dict[str, ModelAdapter] = {}


def register_adapter(adapter: ModelAdapter) -> ModelAdapter:
    """Register ``adapter`` for its transformer class name (subclasses match too)."""
    _ADAPTERS[adapter.transformer_class] = adapter
    return adapter


def _load_builtin_adapters() -> None:
    from . import wan  # noqa: F401  (registers on import)

    for name in ("hunyuan_video", "cogvideox", "ltx", "flux"):
        try:
            __import__(f"{__package__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.{name}":
                raise


def supported_transformers() -> list[str]:
    _load_builtin_adapters()
    return sorted(_ADAPTERS)


def get_adapter(transformer: torch.nn.Module) -> ModelAdapter:
    """The adapter for ``transformer``; ``ValueError`` naming the supported classes if none."""
    _load_builtin_adapters()
    for cls in type(transformer).__mro__:
        if cls.__name__ in _ADAPTERS:
            return _ADAPTERS[cls.__name__]
    raise ValueError(
        f"dit_sparse does not support {type(transformer).__name__}; supported transformer "
        f"classes: {', '.join(supported_transformers())}"
    )


def forward_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], name: str, position: int
) -> Any:
    """A forward argument given either by keyword or by position."""
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else None


def block_modules(
    transformer: torch.nn.Module, *paths: tuple[str, str]
) -> list[tuple[str, torch.nn.Module]]:
    """Module ``attr`` of every block in each block list ``blocks``, in depth order.

    ``block_modules(t, ("transformer_blocks", "attn"), ("single_transformer_blocks", "attn"))``
    lists ``transformer_blocks.0.attn`` ... then ``single_transformer_blocks.0.attn`` ...
    """
    return [
        (f"{blocks}.{index}.{attr}", getattr(block, attr))
        for blocks, attr in paths
        for index, block in enumerate(getattr(transformer, blocks))
    ]


def family_adapter(family: str) -> ModelAdapter | None:
    """The adapter of family ``family`` (``"wan"``, ...), None if unknown."""
    _load_builtin_adapters()
    for adapter in _ADAPTERS.values():
        if adapter.family == family:
            return adapter
    return None


def size_rule_for(family: str) -> VideoSizeRule | None:
    """The video size rule of an adapter family (``"wan"``, ...), None if unknown."""
    return getattr(family_adapter(family), "size_rule", None)


def defaults_for(family: str) -> PipelineDefaults | None:
    """What the family's pipeline generates by default, None if unknown or not recorded."""
    return getattr(family_adapter(family), "defaults", None)


def layout_for(
    family: str,
    frames: int,
    height: int,
    width: int,
    *,
    text_len: int = 0,
    text_first: bool = False,
) -> TokenLayout:
    """The self-attention token layout of ``family`` generating ``frames`` x ``height`` x
    ``width`` pixels, by its adapter's `TokenFactors`, after checking its size rule.

    ``text_len``/``text_first`` place text tokens for joint-attention models. Families whose
    adapter has no token factors are refused with ``ValueError`` naming those that have.
    """
    factors = getattr(family_adapter(family), "token_factors", None)
    if factors is None:
        accepted = [a.family for a in _ADAPTERS.values() if getattr(a, "token_factors", None)]
        raise ValueError(f"unknown model family {family!r}; accepted: {', '.join(accepted)}")
    rule = size_rule_for(family)
    if rule is not None:
        rule.check(frames, height, width)
    return factors.layout(frames, height, width, text_len=text_len, text_first=text_first)
