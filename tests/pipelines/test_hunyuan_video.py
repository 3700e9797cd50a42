"""HunyuanVideo's padded prompt: padded text tokens stay masked under every method."""

import pytest
import torch
from adapter_cases import (
    FAMILIES,
    SPARSE_METHODS,
    FullPlan,
    LayoutSpy,
    forward,
    preset_pipe,
    sparse_method,
)

import dit_sparse
from dit_sparse import TokenLayout

HUNYUAN = FAMILIES["hunyuan_video"]


@pytest.fixture
def transformer():
    return preset_pipe(HUNYUAN.preset).transformer


def padded_inputs(transformer, valid, length=24, seed=0):
    """Forward keywords with a prompt of ``length`` tokens, ``valid[b]`` of them real."""
    g = torch.Generator().manual_seed(seed)
    inputs = HUNYUAN.inputs(None, g, len(valid))
    inputs["encoder_hidden_states"] = torch.randn(len(valid), length, 32, generator=g)
    mask = torch.zeros(len(valid), length, dtype=torch.long)
    for b, count in enumerate(valid):
        mask[b, :count] = 1
    inputs["encoder_attention_mask"] = mask
    return inputs


def unpadded(inputs, valid):
    """The same call with the padding cut off the prompt (no padding left to mask)."""
    return dict(
        inputs,
        encoder_hidden_states=inputs["encoder_hidden_states"][:, :valid],
        encoder_attention_mask=inputs["encoder_attention_mask"][:, :valid],
    )


@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_sparse_output_equals_the_method_on_unpadded_tokens(transformer, method):
    inputs = padded_inputs(transformer, [13])
    outputs = []
    for call_inputs in (inputs, unpadded(inputs, 13)):  # a fresh method (and cache) each
        with dit_sparse.attached(transformer, sparse_method(method)) as handle:
            outputs.append(forward(transformer, call_inputs))
        assert all(r["kind"] != "dense" for r in handle.records())  # no dense fallback
    padded, reference = outputs
    assert torch.isfinite(padded).all()
    assert (padded - reference).abs().max() <= 1e-5


@pytest.mark.parametrize("valid", [[13], [13, 13], [13, 7]], ids=["one", "batch", "mixed"])
def test_full_plan_with_padding_equals_the_masked_model(transformer, valid):
    inputs = padded_inputs(transformer, valid, seed=len(valid))
    before = forward(transformer, inputs)
    with dit_sparse.attached(transformer, FullPlan()) as handle:
        out = forward(transformer, inputs)
    assert {r["kind"] for r in handle.records()} == {"full-plan"}
    assert (out - before).abs().max() <= 1e-5


def test_padding_layout_is_the_padded_length(transformer):
    spy = LayoutSpy()
    with dit_sparse.attached(transformer, spy):
        forward(transformer, padded_inputs(transformer, [13], length=40))
    assert set(spy.layouts) == {TokenLayout(3, 8, 8, text_len=40, text_first=False)}


# --- HunyuanVideo 1.5: one stream; [B, 1, S, S] mask over queries and keys -------------------


@pytest.fixture(scope="module")
def transformer_15():
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(0)
    return HunyuanVideo15Transformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=32,
        num_layers=2,
        num_refiner_layers=1,
        text_embed_dim=32,
        text_embed_2_dim=16,
        image_embed_dim=16,
        rope_axes_dim=(8, 12, 12),
        task_type="t2v",
    ).eval()


def inputs_15(valid, valid_2, seed=0):
    """Qwen prompt of 20 tokens (``valid`` real), ByT5 of 10 (``valid_2``), 4 image tokens
    (zero: text-to-video, all of them padding)."""
    g = torch.Generator().manual_seed(seed)
    batch = len(valid)
    mask, mask_2 = torch.zeros(batch, 20), torch.zeros(batch, 10)
    for b in range(batch):
        mask[b, : valid[b]], mask_2[b, : valid_2[b]] = 1, 1
    return dict(
        hidden_states=torch.randn(batch, 4, 3, 8, 8, generator=g),
        timestep=torch.full((batch,), 500.0),
        encoder_hidden_states=torch.randn(batch, 20, 32, generator=g),
        encoder_attention_mask=mask,
        encoder_hidden_states_2=torch.randn(batch, 10, 16, generator=g),
        encoder_attention_mask_2=mask_2,
        image_embeds=torch.zeros(batch, 4, 16),
    )


def test_hunyuan_15_layout_dense_and_padding(transformer_15):
    inputs = inputs_15([12, 20], [3, 10])
    before = forward(transformer_15, inputs)
    spy = LayoutSpy()
    with dit_sparse.attached(transformer_15, spy):
        assert torch.equal(forward(transformer_15, inputs), before)
    assert set(spy.layouts) == {TokenLayout(3, 8, 8, text_len=34, text_first=False)}
    with dit_sparse.attached(transformer_15, FullPlan()) as handle:
        out = forward(transformer_15, inputs)
    assert {r["kind"] for r in handle.records()} == {"full-plan"}  # the mask was read
    assert (out - before).abs().max() <= 1e-5


@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_hunyuan_15_methods_run(transformer_15, method):
    with dit_sparse.attached(transformer_15, sparse_method(method)) as handle:
        out = forward(transformer_15, inputs_15([12], [3]))
    assert torch.isfinite(out).all()
    assert all(r["kind"] != "dense" for r in handle.records())
