import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from test_block_sparse_attention import random_perms

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


def test_queries_and_keys_in_their_own_orders_equal_masked_attention_by_hand():
    """``perm`` for queries, ``key_perm`` for keys and values, per-head ``permuted`` flags, a
    batch-2 plan and ragged S: the same as sorting q by its order and k, v by theirs (the
    identity where a head is not marked), masking by the plan's blocks, a softmax, and
    putting the rows back."""
    batch, heads, seq_len, block_q, block_k = 2, 3, 100, 32, 16
    q, k, v = inputs(batch, heads, seq_len, 8)
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    nq, nk = -(-seq_len // block_q), -(-seq_len // block_k)
    mask = torch.rand(batch, heads, nq, nk, generator=g) < 0.4
    mask[..., torch.arange(nq), torch.arange(nq) * block_q // block_k] = True  # no empty row
    perm, key_perm = (random_perms(batch, heads, seq_len, g) for _ in range(2))
    permuted = torch.tensor([[True, False, True], [True, True, False]])
    plan = dataclasses.replace(
        BlockPlan.from_block_mask(mask, block_q, block_k, seq_len, perm=perm),
        permuted=permuted,
        key_perm=key_perm,
    )
    out, lse = block_sparse_attention_reference(q, k, v, plan, scale=0.3, return_lse=True)
    identity = torch.arange(seq_len)
    q_order = torch.where(permuted[..., None], perm, identity)
    k_order = torch.where(permuted[..., None], key_perm, identity)
    expected, expected_lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=q.dtype)
    allowed = token_mask(plan, batch)
    for b in range(batch):
        for h in range(heads):
            qs, ks, vs = q[b, h, q_order[b, h]], k[b, h, k_order[b, h]], v[b, h, k_order[b, h]]
            scores = (qs @ ks.T * 0.3).masked_fill(~allowed[b, h], float("-inf"))
            expected[b, h, q_order[b, h]] = torch.softmax(scores, -1) @ vs
            expected_lse[b, h, q_order[b, h]] = torch.logsumexp(scores, -1)
    assert (out - expected).abs().max() < 1e-10
    assert (lse - expected_lse).abs().max() < 1e-10


def test_one_head_plan_with_perm_broadcasts_over_heads():
    """A plan of one head (``perm`` ``[1, 1, S]``) serves every head of q, as the kernel
    reads it: the same as that plan spelled out per head."""
    q, k, v = inputs(2, 3, 80, 8)
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    mask = torch.rand(1, 1, 5, 5, generator=g) < 0.5
    mask[..., torch.arange(5), torch.arange(5)] = True
    plan = BlockPlan.from_block_mask(mask, 16, 16, 80, perm=random_perms(1, 1, 80, g))
    spelled = BlockPlan.from_block_mask(
        mask.expand(1, 3, -1, -1), 16, 16, 80, perm=plan.perm.expand(1, 3, -1)
    )
    out = block_sparse_attention_reference(q, k, v, plan)
    assert out.shape == q.shape
    assert torch.equal(out, block_sparse_attention_reference(q, k, v, spelled))
