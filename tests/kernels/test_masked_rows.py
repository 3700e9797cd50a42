"""The split-K profiling kernel (Triton's interpreter) against masked softmax in float64."""

import pytest
import torch
from triton_interpreter import triton_interpreter  # noqa: F401 (selects the interpreter)

from dit_sparse import SparseVideoGen
from dit_sparse.kernels import masked_row_errors
from dit_sparse.kernels.reference import rows_token_masks
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
    ],
)
def test_errors_match_masked_softmax(layout, rows, dim, dtype, splits):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    masks = SparseVideoGen(density=0.4, block_size=16).masks(layout)
    q, k, v = (torch.randn(2, 3, layout.seq_len, dim, generator=g).to(dtype) for _ in range(3))
    picked = torch.randperm(layout.seq_len, generator=g)[:rows]
    errors = masked_row_errors(
        q, k, v, picked, masks.token_blocks, masks.block_masks, scale=0.4, splits=splits
    )
    expected = masked_softmax_errors(
        q, k, v, picked, rows_token_masks(masks.token_blocks, masks.block_masks, picked), 0.4
    )
    assert errors.shape == (2, 3, 2) and errors.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(errors.double(), expected, rtol=tolerance, atol=1e-7)
    assert (errors > 0).all()


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
