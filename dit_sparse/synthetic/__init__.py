"""The synthetic shapes world of the default ``wan-shapes`` model: its prompt vocabulary, and a
check that a generated clip fits its prompt (`check_motion`, `evaluate_motion`), so quality
numbers mean something without a downloaded model.

The clips it was trained on are drawn by ``training/shapes_data.py``, outside the package.
"""

from .evaluate import MotionEvaluation, evaluate_motion
from .motion import MotionVerdict, check_motion, colour_mask, pass_rate
from .vocabulary import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    SPEEDS,
    ClipAttributes,
    all_attributes,
    evaluation_prompts,
    parse_prompt,
    vocabulary_size,
)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "DIRECTIONS",
    "SHAPES",
    "SPEEDS",
    "ClipAttributes",
    "MotionEvaluation",
    "MotionVerdict",
    "all_attributes",
    "check_motion",
    "colour_mask",
    "evaluate_motion",
    "evaluation_prompts",
    "parse_prompt",
    "pass_rate",
    "vocabulary_size",
]
