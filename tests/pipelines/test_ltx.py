"""LTX-Video: the token grid comes from num_frames/height/width; video_coords calls are refused."""

import pytest
import torch
from adapter_cases import FAMILIES, forward, preset_pipe

import dit_sparse

LTX = FAMILIES["ltx"]


@pytest.fixture
def transformer():
    return preset_pipe(LTX.preset).transformer


def test_video_coords_calls_are_refused(transformer):
    inputs = LTX.inputs(None, torch.Generator().manual_seed(0), 1)
    for name in ("num_frames", "height", "width"):
        del inputs[name]
    inputs["video_coords"] = torch.zeros(1, 3, LTX.layout.seq_len)
    with dit_sparse.attached(transformer, "dense"), pytest.raises(ValueError, match="video_coords"):
        forward(transformer, inputs)


def test_grid_that_does_not_match_the_tokens_is_refused(transformer):
    inputs = dict(LTX.inputs(None, torch.Generator().manual_seed(0), 1), num_frames=4)
    with dit_sparse.attached(transformer, "dense"), pytest.raises(ValueError, match="4x8x8"):
        forward(transformer, inputs)


def test_image_to_video_per_token_timesteps_advance_the_step(transformer):
    inputs = LTX.inputs(None, torch.Generator().manual_seed(0), 1)
    first_frame = torch.zeros(1, LTX.layout.seq_len)
    first_frame[:, : LTX.layout.tokens_per_frame] = 1
    with dit_sparse.attached(transformer, "dense") as handle:
        for t in (1000.0, 500.0, 100.0):  # as LTXImageToVideoPipeline: t * (1 - condition)
            forward(transformer, dict(inputs, timestep=t * (1 - first_frame)))
        steps = sorted({r["step"] for r in handle.records()})
    assert steps == [0, 1, 2]
