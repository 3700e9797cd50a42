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
