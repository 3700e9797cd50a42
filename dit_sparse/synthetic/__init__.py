"""The synthetic shapes world: prompts, procedural clips, and a check that a clip fits its prompt.

Used to train the ``wan-shapes`` model (``training/train_shapes.py``) and to judge what it
generates (`check_motion`), so quality numbers mean something without a downloaded model.
"""

from .clips import (
    ClipBatch,
    RenderedClips,
    render_clips,
    sample_clip_batch,
    to_frames,
)
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
    "ClipBatch",
    "MotionEvaluation",
    "MotionVerdict",
    "RenderedClips",
    "all_attributes",
    "check_motion",
    "colour_mask",
    "evaluate_motion",
    "evaluation_prompts",
    "parse_prompt",
    "pass_rate",
    "render_clips",
    "sample_clip_batch",
    "to_frames",
    "vocabulary_size",
]
