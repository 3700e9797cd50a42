"""The words of the synthetic shapes world, and the prompts made of them.

A clip shows one shape of one colour moving in one direction at one speed over one kind of
textured background. Its prompt names those five attributes in a fixed template::

    "a red circle moves left quickly over a striped background"

Every combination has an integer id (`ClipAttributes.index`), so a training batch can look up
precomputed text embeddings by id.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

# Saturated colours, far apart in hue, on [0, 1] RGB: a colour mask can tell them apart from
# each other and from the low-saturation backgrounds.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "yellow": (0.95, 0.88, 0.10),
    "green": (0.12, 0.80, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.30, 0.95),
    "magenta": (0.90, 0.15, 0.85),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Unit steps in image coordinates: x to the right, y downwards.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
# Speed ranges in frame widths (or heights, for vertical motion) per frame: at 64 pixels,
# "slowly" is 0.4 to 0.8 pixels a frame and "quickly" 1.2 to 1.8.
SPEEDS: dict[str, tuple[float, float]] = {
    "slowly": (0.00625, 0.0125),
    "quickly": (0.01875, 0.028125),
}
BACKGROUNDS: tuple[str, ...] = ("striped", "checkered", "dotted", "plain")

_TEMPLATE = "a {colour} {shape} moves {direction} {speed} over a {background} background"
_PATTERN = re.compile(
    r"a (?P<colour>\w+) (?P<shape>\w+) moves (?P<direction>\w+) (?P<speed>\w+) "
    r"over a (?P<background>\w+) background"
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "direction": tuple(DIRECTIONS),
    "speed": tuple(SPEEDS),
    "background": BACKGROUNDS,
}


@dataclass(frozen=True)
class ClipAttributes:
    """What a clip shows, by name; `prompt` says it in words, `index` numbers it."""

    colour: str
    shape: str
    direction: str
    speed: str
    background: str

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}"
                )

    @property
    def prompt(self) -> str:
        return _TEMPLATE.format(**vars(self))

    @property
    def index(self) -> int:
        """Position in `all_attributes()`: mixed radix over the attribute lists, colour first."""
        index = 0
        for name, choices in _CHOICES.items():
            index = index * len(choices) + choices.index(getattr(self, name))
        return index

    @classmethod
    def from_index(cls, index: int) -> ClipAttributes:
        if not 0 <= index < vocabulary_size():
            raise ValueError(f"attribute index must be in [0, {vocabulary_size()}), got {index}")
        names: dict[str, str] = {}
        for name, choices in reversed(_CHOICES.items()):
            index, digit = divmod(index, len(choices))
            names[name] = choices[digit]
        return cls(**names)


def vocabulary_size() -> int:
    """How many distinct prompts there are (6 colours x 3 shapes x 4 x 2 x 4 = 576)."""
    size = 1
    for choices in _CHOICES.values():
        size *= len(choices)
    return size


def all_attributes() -> list[ClipAttributes]:
    """Every attribute combination, in `ClipAttributes.index` order."""
    return [ClipAttributes(*combo) for combo in itertools.product(*_CHOICES.values())]


def parse_prompt(prompt: str) -> ClipAttributes:
    """The attributes a prompt names; ``ValueError`` if it does not follow the template."""
    match = _PATTERN.fullmatch(prompt.strip().lower())
    if match is None:
        raise ValueError(f"not a shapes prompt: {prompt!r}; expected e.g. {_TEMPLATE!r}")
    return ClipAttributes(**match.groupdict())


def describe_vocabulary() -> str:
    """The prompt template and every word each slot takes, in one line."""
    slots = "; ".join(f"{name}: {', '.join(choices)}" for name, choices in _CHOICES.items())
    return f"{_TEMPLATE!r} with {slots}"


def untrained_prompt_warning(prompt: str, model: str) -> str | None:
    """A warning naming the vocabulary if ``model``, trained on this world's prompts only,
    was never trained on ``prompt``; None for a prompt of the vocabulary."""
    try:
        parse_prompt(prompt)
    except ValueError:
        return (
            f"{model} was trained only on prompts {describe_vocabulary()}; "
            f"{prompt!r} is not one, so its clip follows no prompt"
        )
    return None


def evaluation_prompts(count: int = 24) -> list[str]:
    """``count`` prompts that cover every (colour, direction) pair before repeating one.

    Shape, speed and background cycle independently, so each appears evenly too.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    pairs = list(itertools.product(COLOURS, DIRECTIONS))
    prompts = []
    for i in range(count):
        # Walk the (colour, direction) grid diagonally so a short list still mixes both.
        colour, direction = pairs[(i * (len(DIRECTIONS) + 1)) % len(pairs)]
        attributes = ClipAttributes(
            colour=colour,
            shape=SHAPES[i % len(SHAPES)],
            direction=direction,
            speed=tuple(SPEEDS)[(i // len(SHAPES)) % len(SPEEDS)],
            background=BACKGROUNDS[(i // 2) % len(BACKGROUNDS)],
        )
        prompts.append(attributes.prompt)
    return prompts
