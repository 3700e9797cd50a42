import math

import pytest
import torch
import torch.nn.functional as F

from dit_sparse import BlockPlan
from dit_sparse.kernels import reference
from dit_sparse.kernels.reference import block_sparse_attention_reference


@pytest.fixture(params=["flash_cpu", "gathered"], autouse=True)
def attend_path(request, monkeypatch):
    """Each test runs both ways the reference computes: the fused CPU op (what CPU tensors
    take) and the gathered blocks (what other devices take)."""
    if request.param == "gathered":
        monkeypatch.setattr(
            reference, "_attend_masked_flash_cpu", reference._attend_gathered_blocks
        )
    return request.param


def token_mask(plan, batch):
    block_mask = plan.to_block_mask().expand(batch, plan.heads, -1, -1)
    rows = torch.arange(plan.seq_len) // plan.block_q
    cols = torch.arange(plan.seq_len) // plan.block_k
    return block_mask[:, :, rows][..., cols]


def inputs(batch, heads, seq_len, dim, dtype=torch.float64):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    return [torch.randn(batch, heads, seq_len, dim, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("seq_len,block_q,block_k", [(64, 64, 64), (200, 32, 16), (333, 64, 32)])
def test_full_plan_is_dense_attention(seq_len, block_q, block_k):
    q, k, v = inputs(2, 3, seq_len, 16, torch.float32)
    plan = BlockPlan.dense(1, 3, seq_len, block_q, block_k)
    out, lse = block_sparse_attention_reference(q, k, v, plan, return_lse=True)
    expected = F.scaled_dot_product_attention(q, k, v)
    assert (out - expected).abs().max() < 1e-5
    scores = q @ k.transpose(-1, -2) / math.sqrt(16)
    assert (lse - torch.logsumexp(scores, -1)).abs().max() < 1e-4


@pytest.mark.parametrize("seq_len", [37, 200, 333])
def test_random_plans_match_sdpa_with_boolean_mask(seq_len):
    batch, heads, block_q, block_k = 2, 3, 32, 16
    q, k, v = inputs(batch, heads, seq_len, 8)
    nq, nk = -(-seq_len // block_q), -(-seq_len // block_k)
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    mask = torch.rand(batch, heads, nq, nk, generator=g) < 0.3
    mask[..., torch.arange(nq), torch.arange(nq) * block_q // block_k] = True  # no empty row
    mask[0, 0, 0] = False
    mask[0, 0, 0, nk - 1] = True  # a row whose only block is the ragged tail
    plan = BlockPlan.from_block_mask(mask, block_q, block_k, seq_len)
    out = block_sparse_attention_reference(q, k, v, plan, scale=0.3)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask(plan, batch), scale=0.3)
    assert out.dtype == torch.float64
    assert (out - expected).abs().max() < 1e-10


def test_empty_rows_give_zero_and_minus_inf_lse():
    q, k, v = inputs(1, 1, 50, 8)
    mask = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    mask[..., 1, :] = True
    plan = BlockPlan.from_block_mask(mask, 32, 32, 50)
    out, lse = block_sparse_attention_reference(q, k, v, plan, return_lse=True)
    assert torch.all(out[..., :32, :] == 0) and torch.all(lse[..., :32] == float("-inf"))
    assert torch.isfinite(lse[..., 32:]).all()


def test_batch_one_plan_broadcasts_and_perm_round_trips():
    q, k, v = inputs(3, 2, 96, 8)
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    mask = torch.rand(1, 2, 3, 3, generator=g) < 0.5
    mask[..., 0] = True
    perm = torch.stack([torch.randperm(96, generator=g) for _ in range(2)])[None]
    plan = BlockPlan.from_block_mask(mask, 32, 32, 96, perm=perm)
    out = block_sparse_attention_reference(q, k, v, plan)
    # In permuted order, the same computation is a plan without perm; then undo the order.
    index = perm.expand(3, -1, -1)[..., None].expand(-1, -1, -1, 8)
    qp, kp, vp = (t.gather(2, index) for t in (q, k, v))
    plain = BlockPlan.from_block_mask(mask, 32, 32, 96)
    expected_p = block_sparse_attention_reference(qp, kp, vp, plain)
    expected = torch.empty_like(expected_p).scatter_(2, index, expected_p)
    assert (out - expected).abs().max() < 1e-12
