"""Flux: an image is a one-frame layout, text first; masks passed through joint_attention_kwargs."""

import imageio.v3 as iio
import pytest
import torch
from adapter_cases import FAMILIES, FullPlan, forward, preset_pipe

import dit_sparse
from dit_sparse.cli import main

FLUX = FAMILIES["flux"]


@pytest.fixture
def pipe():
    return preset_pipe(FLUX.preset)


def test_reference_image_tokens_are_refused(pipe):
    inputs = FLUX.inputs(pipe, torch.Generator().manual_seed(0), 1)
    reference_ids = inputs["img_ids"].clone()
    reference_ids[:, 0] = 1  # Flux Kontext: a second grid of tokens, the reference image
    inputs["hidden_states"] = inputs["hidden_states"].repeat(1, 2, 1)
    inputs["img_ids"] = torch.cat([inputs["img_ids"], reference_ids])
    with dit_sparse.attached(pipe, "dense"), pytest.raises(ValueError, match="Kontext"):
        forward(pipe.transformer, inputs)


def with_mask(inputs, keys):
    """``inputs`` with a ``[B, 1, 1, S]`` boolean attention mask over ``keys`` (text first)."""
    return dict(inputs, joint_attention_kwargs={"attention_mask": keys[:, None, None, :]})


def test_text_padding_mask_with_text_first(pipe):
    inputs = FLUX.inputs(pipe, torch.Generator().manual_seed(1), 2)
    keys = torch.ones(2, FLUX.layout.seq_len, dtype=torch.bool)
    keys[0, 10:24] = False  # element 0: 10 real text tokens, then padding, then the image
    masked = with_mask(inputs, keys)
    before = forward(pipe.transformer, masked)
    with dit_sparse.attached(pipe, FullPlan()) as handle:
        out = forward(pipe.transformer, masked)
    assert {r["kind"] for r in handle.records()} == {"full-plan"}
    assert (out - before).abs().max() <= 1e-5


def test_other_masks_warn_and_run_dense(pipe):
    inputs = FLUX.inputs(pipe, torch.Generator().manual_seed(2), 1)
    keys = torch.ones(1, FLUX.layout.seq_len, dtype=torch.bool)
    keys[0, 100:140] = False  # hides image tokens: not padding
    masked = with_mask(inputs, keys)
    before = forward(pipe.transformer, masked)
    with (
        dit_sparse.attached(pipe, FullPlan()) as handle,
        pytest.warns(UserWarning, match="hides more than padded text tokens"),
    ):
        out = forward(pipe.transformer, masked)
    assert {r["kind"] for r in handle.records()} == {"dense"}
    assert torch.equal(out, before)


def test_cli_writes_a_png(tmp_path, capsys):
    out = tmp_path / "image.png"
    args = ["generate", "--model", "tiny-flux", "--method", "adaspa", "--frames", "1"]
    args += ["--height", "64", "--width", "64", "--steps", "2", "--output", str(out)]
    assert main(args) == 0
    assert iio.imread(out).shape == (64, 64, 3)
    assert "method adaspa" in capsys.readouterr().out
