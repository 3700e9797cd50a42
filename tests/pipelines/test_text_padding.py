"""Text-padding masks: which masks are read as padding, and attention without the padding."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dit_sparse import TokenLayout
from dit_sparse.methods import AttentionCall
from dit_sparse.text_padding import attend_without_padding, text_padding

TEXT_LAST = TokenLayout(2, 4, 4, text_len=8)
TEXT_FIRST = TokenLayout(2, 4, 4, text_len=8, text_first=True)


def key_mask(layout, valid, form="keys"):
    """HunyuanVideo's [B, 1, 1, S] mask (``form="keys"``) or 1.5's [B, 1, S, S] (``"pairs"``)."""
    keys = torch.ones(len(valid), layout.seq_len, dtype=torch.bool)
    for b, count in enumerate(valid):
        keys[b, layout.text_slice.start + count : layout.text_slice.stop] = False
    if form == "keys":
        return keys[:, None, None, :]
    return keys[:, None, :, None] & keys[:, None, None, :]


def qkv(batch, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 2, layout.seq_len, 8, generator=g) for _ in range(3)]


def call_for(layout):
    return AttentionCall(
        layout=layout, layer=0, num_layers=1, step=0, num_steps=1, branch="cond", cache={}
    )


def sdpa_rows(rows, k, v, mask):
    return F.scaled_dot_product_attention(rows, k, v, attn_mask=mask)


@pytest.mark.parametrize("layout", [TEXT_LAST, TEXT_FIRST], ids=["text-last", "text-first"])
@pytest.mark.parametrize("form", ["keys", "pairs"])
def test_padding_masks_are_read(layout, form):
    padding = text_padding(key_mask(layout, [5, 8], form), layout, batch=2)
    assert padding is not None and padding.valid == (5, 8)
    broadcast = text_padding(key_mask(layout, [3])[0, 0, 0], layout, batch=2)  # [S]
    assert broadcast is not None and broadcast.valid == (3, 3)
    assert broadcast.mask.shape == (1, 1, 1, layout.seq_len)
    additive = torch.zeros(2, 1, 1, layout.seq_len).masked_fill(
        ~key_mask(layout, [5, 8]), float("-inf")
    )
    assert text_padding(additive, layout, batch=2).valid == (5, 8)


@pytest.mark.parametrize(
    "change",
    [
        "hides a video token",
        "hole in the text",
        "per-head mask",
        "query rows differ",
        "finite bias",
        "no text in layout",
    ],
)
def test_other_masks_are_refused(change):
    layout, mask = TEXT_LAST, key_mask(TEXT_LAST, [5, 8])
    if change == "hides a video token":
        mask[1, ..., 3] = False
    elif change == "hole in the text":
        mask[0, ..., layout.text_slice.start + 1] = False
    elif change == "per-head mask":
        mask = mask.expand(2, 2, 1, -1)
    elif change == "query rows differ":
        mask = key_mask(layout, [5, 8], "pairs").clone()
        mask[0, 0, 3, 1] = False  # a video query that misses a video key
    elif change == "finite bias":
        mask = torch.zeros(2, 1, 1, layout.seq_len).masked_fill(~mask, -100.0)
    else:
        layout = TokenLayout(3, 4, 4)
    assert text_padding(mask, layout, batch=2) is None


def test_padded_query_rows_may_see_anything_in_a_pairs_mask():
    mask = key_mask(TEXT_LAST, [5, 8], "pairs").clone()
    mask[0, 0, TEXT_LAST.text_slice.start + 6] = True  # a padded query row sees everything
    assert text_padding(mask, TEXT_LAST, batch=2).valid == (5, 8)


class Recorder:
    """A method that computes exact attention and records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, k, v, call):
        self.calls.append((q.shape, call.layout, id(call.cache)))
        call.info.update(kind="exact", density=float(call.layout.text_len))
        return F.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("layout", [TEXT_LAST, TEXT_FIRST], ids=["text-last", "text-first"])
@pytest.mark.parametrize("form", ["keys", "pairs"])
@pytest.mark.parametrize("valid", [[5, 5], [5, 8], [0, 3]])
def test_exact_method_without_padding_equals_masked_attention(layout, form, valid):
    q, k, v = qkv(2, layout)
    mask = key_mask(layout, valid, form)
    padding = text_padding(mask, layout, batch=2)
    method, call = Recorder(), call_for(layout)
    out = attend_without_padding(q, k, v, padding, call, method, sdpa_rows)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (out - expected).abs().max() <= 1e-6
    # One method call per distinct valid count, on that many text tokens, each with its cache.
    assert sorted(layout_.text_len for _, layout_, _ in method.calls) == sorted(set(valid))
    assert len({cache for _, _, cache in method.calls}) == len(method.calls)
    # Numbers in info are averaged over the batch (the recorder's "density" is text_len).
    assert call.info["kind"] == "exact"
    assert call.info["density"] == pytest.approx(sum(valid) / len(valid))


@pytest.mark.parametrize("layout", [TEXT_LAST, TEXT_FIRST], ids=["text-last", "text-first"])
def test_method_sees_exactly_the_unpadded_tokens(layout):
    q, k, v = qkv(1, layout)
    valid = 5
    padding = text_padding(key_mask(layout, [valid]), layout, batch=1)
    seen = []

    def method(q_, k_, v_, call):
        seen.append((q_, call.layout))
        return torch.zeros_like(q_)

    attend_without_padding(q, k, v, padding, call_for(layout), method, sdpa_rows)
    ((q_seen, layout_seen),) = seen
    keep = torch.ones(layout.seq_len, dtype=torch.bool)
    keep[layout.text_slice.start + valid : layout.text_slice.stop] = False
    assert layout_seen == dataclasses.replace(layout, text_len=valid)
    assert torch.equal(q_seen, q[:, :, keep])
