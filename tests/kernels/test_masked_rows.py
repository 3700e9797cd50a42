"""The split-K profiling kernel (Triton's interpreter) against masked softmax in float64."""

import pytest
import torch
from triton_interpreter import triton_interpreter  # noqa: F401 (selects the interpreter)

from dit_sparse import SparseVideoGen
from dit_sparse.kernels import masked_row_errors
from dit_sparse.kernels.masked_rows import pack_keep_bits
from dit_sparse.kernels.reference import masked_row_errors_reference, rows_token_masks
from dit_sparse.layout import TokenLayout

pytestmark = pytest.mark.usefixtures("triton_interpreter")


def masked_softmax_errors(q, k, v, rows, masks, scale):
    """float64 [B, H, 2]: per mask, mean squared error of the rows' masked softmax output."""
    scores = scale * q.double()[:, :, rows] @ k.double().transpose(-1, -2)
    exact = scores.softmax(-1) @ v.double()
    errors = []
    for keep in masks:  # [R, S]
        masked = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v.double()
        errors.append((masked - exact).square().mean((-1, -2)))
    return torch.stack(errors, -1)


@pytest.mark.parametrize(
    "layout,rows,dim,dtype,splits",
    [
        (TokenLayout(5, 4, 6), 20, 16, torch.float32, 3),  # 120 tokens: ragged key tiles
        (TokenLayout(6, 5, 5, text_len=7), 37, 32, torch.float16, None),  # rows over 2 tiles
        (TokenLayout(4, 8, 8), 64, 16, torch.float32, 1),
        (TokenLayout(4, 5, 5), 70, 16, torch.float32, 2),  # 24 merge tiles: not a power of 2
    ],
)
def test_errors_match_masked_softmax(layout, rows, dim, dtype, splits):
    seed = torch.seed() % 2**31
    g = torch.Generator().manual_seed(seed)
    masks = SparseVideoGen(density=0.4, block_size=16).masks(layout)
    q, k, v = (torch.randn(2, 3, layout.seq_len, dim, generator=g).to(dtype) for _ in range(3))
    picked = torch.randperm(layout.seq_len, generator=g)[:rows]
    errors, choice, count = masked_row_errors(
        q, k, v, picked, masks.token_blocks, masks.block_masks, scale=0.4, splits=splits,
        with_choice=True,
    )  # fmt: skip
    expected = masked_softmax_errors(
        q, k, v, picked, rows_token_masks(masks.token_blocks, masks.block_masks, picked), 0.4
    )
    assert errors.shape == (2, 3, 2) and errors.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(errors.double(), expected, rtol=tolerance, atol=1e-7), f"seed {seed}"
    assert (errors > 0).all()
    # The choice follows the reference wherever the two errors are not within the tolerance.
    clear = (expected[..., 1] - expected[..., 0]).abs() > 4 * tolerance * expected.amax(-1)
    assert clear.any()
    want = (expected[..., 1] < expected[..., 0])[clear].long()
    assert torch.equal(choice[clear], want), f"seed {seed}"
    assert choice.dtype == torch.int64 and float(count) == choice.sum().item()


def test_bad_masks_raise_with_what_is_accepted():
    q = torch.zeros(1, 1, 32, 16)
    rows = torch.arange(4)
    blocks = torch.zeros(2, 32, dtype=torch.long)
    masks = torch.ones(2, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"token_blocks must be int \[2, S\]"):
        masked_row_errors(q, q, q, rows, blocks[:, :31], masks)
    with pytest.raises(ValueError, match=r"block_masks must be bool \[2, nq, nk\]"):
        masked_row_errors(q, q, q, rows, blocks, masks.long())
    with pytest.raises(ValueError, match="rows must be a non-empty int"):
        masked_row_errors(q, q, q, rows[:0], blocks, masks)
    with pytest.raises(ValueError, match="splits must be a positive int"):
        masked_row_errors(q, q, q, rows, blocks, masks, splits=0)


@pytest.mark.parametrize("seq_len", [40, 200, 300])
def test_keep_bits_hold_each_query_blocks_token_mask(seq_len):
    generator = torch.Generator().manual_seed(torch.seed() % 2**31)
    nq = -(-seq_len // 16)
    token_blocks = torch.stack([torch.arange(seq_len) // 16, torch.randperm(seq_len) // 16])
    block_masks = torch.rand(2, nq, nq, generator=generator) < 0.4
    packed = pack_keep_bits(token_blocks, block_masks)
    assert packed.dtype == torch.uint8 and packed.shape == (2, nq, -(-seq_len // 128) * 16)
    bits = (packed[..., None] >> torch.arange(8, dtype=torch.uint8)) & 1  # [2, nq, bytes, 8]
    bits = bits.flatten(2).bool()
    for mask in range(2):
        rows = torch.nonzero(token_blocks[mask][:, None] == torch.arange(nq))[:, 0]
        # A row of each query block: its original index is where token_blocks names the block.
        first = torch.stack([rows[token_blocks[mask][rows] == b][0] for b in range(nq)])
        expected = rows_token_masks(token_blocks, block_masks, first)[mask]
        assert torch.equal(bits[mask, :, :seq_len], expected)
        assert not bits[mask, :, seq_len:].any()


def test_rows_a_mask_keeps_nothing_of_get_zero_output():
    """Mask 0 keeps no key for the first query block's rows: their masked output is 0, so
    their error is their exact output's square; mask 1 keeps everything (error 0)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 100, 16) for _ in range(3))
    token_blocks = torch.stack([torch.arange(100) // 32, torch.arange(100) // 32])
    block_masks = torch.ones(2, 4, 4, dtype=torch.bool)
    block_masks[0, 0] = False
    rows = torch.tensor([3, 40, 7, 99])
    errors = masked_row_errors(q, k, v, rows, token_blocks, block_masks, scale=0.3, splits=2)
    expected = masked_row_errors_reference(
        q.double(), k.double(), v.double(), rows, token_blocks, block_masks, 0.3
    )
    exact = (0.3 * q.double()[:, :, rows] @ k.double().transpose(-1, -2)).softmax(-1) @ v.double()
    by_hand = exact[:, :, [0, 2]].square().sum((-1, -2)) / (len(rows) * 16)
    assert torch.allclose(errors[..., 0].double(), by_hand, rtol=1e-5)
    assert torch.allclose(errors.double(), expected, rtol=1e-5, atol=1e-9)
    assert (errors[..., 1] < 1e-10).all()
    with pytest.raises(ValueError, match=r"keep_bits must be pack_keep_bits"):
        masked_row_errors(
            q, k, v, rows, token_blocks, block_masks,
            keep_bits=pack_keep_bits(token_blocks, block_masks)[:, :3],
        )  # fmt: skip
    packed = pack_keep_bits(token_blocks, block_masks)
    # The kernel reads the bits as 64-bit words: a copy one byte off its allocation is refused.
    shifted = torch.empty(packed.numel() + 1, dtype=torch.uint8)[1:].view(packed.shape)
    shifted.copy_(packed)
    with pytest.raises(ValueError, match="8-byte boundary"):
        masked_row_errors(q, k, v, rows, token_blocks, block_masks, keep_bits=shifted)


def test_key_splits_fill_whole_waves_at_wan_sizes():
    """On 132 SMs: Wan 480p (12 heads, 32,760 keys) in one full wave of 11 splits; 720p (40
    heads, 75,600 keys) in 13 splits, 3.9 waves (747-762 us on an H200, against 835-855 us for
    14 or 21 splits)."""
    from dit_sparse.kernels.masked_rows import _key_splits, _split_keys

    assert _key_splits(32760, 12, 132) == 11
    assert _key_splits(75600, 40, 132) == 13
    # Never shorter than the minimum split, never more splits than keys allow.
    assert _key_splits(2000, 1, 132) == 1
    for seq_len, programs in ((32760, 1), (75600, 2), (5000, 3)):
        splits = _key_splits(seq_len, programs, 132)
        assert _split_keys(seq_len, splits) >= 1536


def test_choice_over_pair_and_tile_chunks(monkeypatch):
    """The choice kernel walks (batch, head) pairs and row tiles in chunks: with chunks smaller
    than both, it still sums every tile and counts every pair."""
    from dit_sparse.kernels import masked_rows

    monkeypatch.setattr(masked_rows, "_CHOOSE_PAIRS", 4)
    monkeypatch.setattr(masked_rows, "_CHOOSE_TILES", 2)
    layout = TokenLayout(6, 5, 5)  # with this seed and density, 3 of the 9 pairs pick mask 1
    masks = SparseVideoGen(density=0.6, block_size=16).masks(layout)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(3, 3, layout.seq_len, 16, generator=g) for _ in range(3))
    rows = torch.randperm(layout.seq_len, generator=g)[:45]
    errors, choice, count = masked_row_errors(
        q, k, v, rows, masks.token_blocks, masks.block_masks, with_choice=True
    )
    expected = masked_row_errors_reference(
        q.double(), k.double(), v.double(), rows, masks.token_blocks, masks.block_masks, 0.25
    )
    assert torch.allclose(errors.double(), expected, rtol=1e-5, atol=1e-9)
    assert torch.equal(choice, (expected[..., 1] < expected[..., 0]).long())
    assert float(count) == choice.sum().item() and 0 < float(count) < 9
