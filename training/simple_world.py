"""Diagnostic: can the wan-shapes setup learn direction when direction is all there is to learn?

Runs `train_shapes.py` unchanged but on a one-clip-kind world: a red circle moving quickly
over a plain background, in one of the 4 directions; the evaluation uses the same 4 prompts.
Same command line as `train_shapes.py` (the run recorded took one H200 for 290 s)::

    python training/simple_world.py \
        --config training/runs-2026-12-03/simple-world-config.json --out runs/simple \
        --train-seconds 290
"""

import sys

import torch
import train_shapes
from shapes_data import ClipBatch

from dit_sparse.synthetic import ClipAttributes
from dit_sparse.synthetic.vocabulary import DIRECTIONS

FIXED = {"colour": "red", "shape": "circle", "speed": "quickly", "background": "plain"}
KINDS = [ClipAttributes(direction=d, **FIXED) for d in DIRECTIONS]
INDICES = torch.tensor([k.index for k in KINDS])


def sample_clip_batch(count: int, generator: torch.Generator) -> ClipBatch:
    pick = torch.randint(len(KINDS), (count,), generator=generator, device=generator.device)
    return ClipBatch.from_index(INDICES.to(generator.device)[pick])


def evaluation_prompts(count: int) -> list[str]:
    return [KINDS[i % len(KINDS)].prompt for i in range(count)]


train_shapes.sample_clip_batch = sample_clip_batch
train_shapes.evaluation_prompts = evaluation_prompts
train_shapes.main(sys.argv[1:])
