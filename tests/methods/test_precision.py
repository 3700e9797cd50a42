"""Every method's ``precision`` (sparse steps) and ``dense_precision`` (dense calls) fields: the
values accepted, and that they reach the attention kernel."""

import pytest
import torch

from dit_sparse.kernels.reference import (
    block_sparse_attention_8bit_reference,
    block_sparse_attention_reference,
)
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import METHODS, AttentionCall, resolve_method
from dit_sparse.plan import BlockPlan


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_takes_both_fields_and_names_what_they_accept(name):
    method = resolve_method(name, precision="8bit", dense_precision="8bit")
    assert method.options()["precision"] == method.options()["dense_precision"] == "8bit"
    defaults = resolve_method(name)
    assert (defaults.precision, defaults.dense_precision) == ("bf16", "model")
    with pytest.raises(ValueError, match=r"precision must be one of 'bf16', '8bit'; got 'fp8'"):
        resolve_method(name, precision="fp8")
    with pytest.raises(ValueError, match=r"dense_precision must be one of 'model', '8bit'"):
        resolve_method(name, dense_precision="bf16")


def _call(layout, step=0):
    return AttentionCall(layout, 0, 2, step, 10, "cond", {})


def _qkv(layout, dim=32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, layout.seq_len, dim, generator=g) for _ in range(3)]


def test_dense_precision_8bit_runs_the_8bit_kernel_on_a_full_plan():
    layout = TokenLayout(2, 8, 8)
    q, k, v = _qkv(layout)
    call = _call(layout)
    assert resolve_method("radial").attend_dense(q, k, v, call) is None
    out = resolve_method("radial", dense_precision="8bit").attend_dense(q, k, v, call)
    plan = BlockPlan.dense(1, 1, layout.seq_len)
    assert torch.equal(out, block_sparse_attention_8bit_reference(q, k, v, plan))
    assert call.info["kind"] == "dense-8bit"


def test_sparse_steps_follow_precision():
    layout = TokenLayout(4, 8, 8)
    q, k, v = _qkv(layout)
    plan = resolve_method("radial", block_size=32).plan(layout)
    for precision, reference in (
        ("bf16", block_sparse_attention_reference),
        ("8bit", block_sparse_attention_8bit_reference),
    ):
        method = resolve_method("radial", block_size=32, precision=precision, dense_steps=0)
        out = method.attend(q, k, v, _call(layout, step=5))
        assert torch.equal(out, reference(q, k, v, plan))
