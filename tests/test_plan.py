import dataclasses

import pytest
import torch

from dit_sparse import BlockPlan, TokenLayout


def random_mask(batch, heads, nq, nk, generator):
    mask = torch.rand(batch, heads, nq, nk, generator=generator) < 0.4
    mask[..., 0, :] = False  # an empty row
    mask[..., -1, :] = False
    mask[..., -1, nk - 1] = True  # a row with one block (the only row when nq == 1)
    return mask


@pytest.mark.parametrize(
    "seq_len,block_q,block_k", [(200, 32, 16), (333, 64, 64), (64, 64, 32), (100, 32, 64)]
)
def test_block_mask_round_trip(seq_len, block_q, block_k):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    nq, nk = -(-seq_len // block_q), -(-seq_len // block_k)
    mask = random_mask(2, 3, nq, nk, g)
    plan = BlockPlan.from_block_mask(mask, block_q, block_k, seq_len)
    assert torch.equal(plan.to_block_mask(), mask)
    assert torch.equal(plan.kv_counts, mask.sum(-1).int())
    for b, h, i in [(0, 0, nq // 2), (1, 2, nq - 1)]:
        count = plan.kv_counts[b, h, i]
        expected = torch.nonzero(mask[b, h, i]).flatten().int()
        assert torch.equal(plan.kv_indices[b, h, i, :count], expected)


def test_density_counts_token_pairs_with_ragged_tail():
    # 3 query blocks of 64, 64, 2 tokens against the same key blocks: keep only the last one.
    seq_len, block = 130, 64
    mask = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    mask[..., 2] = True
    plan = BlockPlan.from_block_mask(mask, block, block, seq_len)
    assert plan.density == pytest.approx(130 * 2 / 130**2)
    dense = BlockPlan.dense(2, 4, seq_len, 64, 32)
    assert dense.density == pytest.approx(1.0)
    assert dense.to_block_mask().all()


def test_plan_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="needs"):
        BlockPlan.from_block_mask(torch.ones(1, 1, 3, 3, dtype=torch.bool), 64, 64, 100)
    with pytest.raises(TypeError, match="bool"):
        BlockPlan.from_block_mask(torch.ones(2, 2), 64, 64, 100)


def test_token_layout():
    layout = TokenLayout(frames=3, height=4, width=5, text_len=7, text_first=True)
    assert layout.video_tokens == 60 and layout.seq_len == 67
    assert layout.video_slice == slice(7, 67) and layout.text_slice == slice(0, 7)
    last = TokenLayout(frames=3, height=4, width=5, text_len=7)
    assert last.video_slice == slice(0, 60) and last.text_slice == slice(60, 67)
    with pytest.raises(ValueError, match="frames"):
        TokenLayout(frames=0, height=1, width=1)


def _perm_plan(**fields):
    """A dense plan of 2 heads and 40 tokens with a random ``perm`` per head, and ``fields``."""
    g = torch.Generator().manual_seed(0)
    perm = torch.stack([torch.randperm(40, generator=g) for _ in range(2)])[None]
    return dataclasses.replace(BlockPlan.dense(1, 2, 40, 16, 16), **{"perm": perm, **fields})


def test_key_perms_per_head():
    """`head_key_perms`: ``key_perm`` where given, else ``perm``; the identity where a head is
    not marked permuted; `head_perms` stays the queries'. `expanded` and `to` carry it."""
    plan = _perm_plan()
    assert torch.equal(plan.head_key_perms(), plan.head_perms())
    key_perm = torch.stack([torch.arange(40).flip(0), torch.arange(40).roll(3)])[None]
    keyed = dataclasses.replace(plan, key_perm=key_perm.int())
    assert keyed.head_key_perms().dtype == torch.int64
    assert torch.equal(keyed.head_key_perms(), key_perm)
    assert torch.equal(keyed.head_perms(), plan.perm)
    flagged = dataclasses.replace(keyed, permuted=torch.tensor([[False, True]]))
    assert torch.equal(flagged.head_key_perms()[0, 0], torch.arange(40))
    assert torch.equal(flagged.head_key_perms()[0, 1], key_perm[0, 1])
    assert torch.equal(flagged.head_perms()[0, 0], torch.arange(40))
    # Two shared plans, each with its own key order, picked per head.
    shared = dataclasses.replace(flagged, head_plans=torch.tensor([[1, 0, 1]]))
    assert torch.equal(shared.expanded().key_perm, key_perm[:, [1, 0, 1]])
    picked = shared.head_key_perms()[0]
    assert torch.equal(picked[0], key_perm[0, 1]) and torch.equal(picked[2], key_perm[0, 1])
    assert torch.equal(picked[1], torch.arange(40))
    one_order = dataclasses.replace(shared, key_perm=key_perm[:, :1])
    assert one_order.expanded().key_perm.shape == (1, 1, 40)
    assert BlockPlan.dense(1, 1, 40).head_key_perms() is None
    moved = keyed.to("meta").key_perm
    assert moved.device.type == "meta" and moved.shape == key_perm.shape


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(perm=None, key_perm=torch.zeros(1, 2, 40)), r"key_perm .* without a perm"),
        (dict(key_perm=torch.zeros(1, 2, 39)), r"key_perm must be \[B\|1, 2\|1, 40\]"),
        (dict(key_perm=torch.zeros(1, 3, 40)), r"got \(1, 3, 40\)"),
        (dict(key_perm=torch.zeros(2, 40)), r"key_perm must be \[B\|1, 2\|1, 40\]"),
        (
            dict(key_perm=torch.zeros(2, 2, 40), head_plans=torch.zeros(1, 2, dtype=torch.long)),
            "head_plans must be int .* with a batch dim of 1",
        ),
    ],
)
def test_plan_rejects_bad_key_perms(fields, match):
    with pytest.raises(ValueError, match=match):
        _perm_plan(**fields)
