"""The Triton block-mass kernel (run by Triton's interpreter) against dense softmax in float64."""

import pytest
import torch
from triton_interpreter import triton_interpreter  # noqa: F401 (selects the interpreter)

from dit_sparse.kernels import block_attention_mass, dense_attention_with_mass
from dit_sparse.kernels.block_mass import MassPartials
from dit_sparse.kernels.launch import KernelConfig
from dit_sparse.kernels.reference import block_attention_mass_reference

pytestmark = pytest.mark.usefixtures("triton_interpreter")


def generator():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def softmax_block_mass(q, k, block_q, block_k, scale):
    """Dense softmax in float64, summed per (query block, key block), over rows per block."""
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) * scale, dim=-1)
    seq_len = q.shape[2]
    nq, nk = -(-seq_len // block_q), -(-seq_len // block_k)
    padded = torch.zeros(*probs.shape[:2], nq * block_q, nk * block_k, dtype=torch.float64)
    padded[..., :seq_len, :seq_len] = probs
    sums = padded.view(*probs.shape[:2], nq, block_q, nk, block_k).sum((3, 5))
    rows = torch.full((nq,), float(block_q), dtype=torch.float64)
    rows[-1] = seq_len - (nq - 1) * block_q
    return sums / rows[:, None]


def dense_lse(q, k, scale):
    return torch.logsumexp(q.double() @ k.double().transpose(-1, -2) * scale, -1).float()


@pytest.mark.parametrize(
    "seq_len,block_q,block_k,dim,dtype",
    [
        (200, 64, 32, 16, torch.float32),  # ragged; one tile spans several key blocks
        (333, 32, 128, 32, torch.float16),
        (300, 256, 64, 16, torch.float32),  # query blocks split into tiles
        (300, 64, 256, 16, torch.float32),  # key blocks split into tiles
    ],
)
def test_dense_lse_gives_rows_summing_to_one(seq_len, block_q, block_k, dim, dtype):
    g = generator()
    q, k = (torch.randn(2, 2, seq_len, dim, generator=g).to(dtype) for _ in range(2))
    mass = block_attention_mass(q, k, dense_lse(q, k, 0.3), block_q, block_k, scale=0.3)
    assert mass.dtype == torch.float32
    assert (mass.double() - softmax_block_mass(q, k, block_q, block_k, 0.3)).abs().max() < 1e-5
    assert (mass.sum(-1) - 1).abs().max() < 1e-5


@pytest.mark.parametrize(
    "seq_len,block_q,rows,block_k",
    [
        (333, 64, 16, 32),  # ragged last block: 13 rows, 4 sampled
        (200, 32, 16, 64),
        (130, 128, 32, 16),  # one tile splits the sampled rows of a block
        (70, 64, 16, 64),  # the last block has 6 rows: 2 sampled
        (100, 16, 1, 16),  # one row per block
    ],
)
def test_sampled_rows_average_the_softmax_of_those_rows(seq_len, block_q, rows, block_k):
    g = generator()
    q, k = (torch.randn(1, 3, seq_len, 16, generator=g) for _ in range(2))
    mass = block_attention_mass(q, k, dense_lse(q, k, 0.3), block_q, block_k, scale=0.3, rows=rows)
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 0.3, dim=-1)
    stride = block_q // rows
    nk = -(-seq_len // block_k)
    key_sums = torch.zeros(*probs.shape[:3], nk, dtype=torch.float64)
    key_sums.index_add_(-1, torch.arange(seq_len) // block_k, probs)
    expected = torch.stack(
        [
            key_sums[:, :, start : start + block_q : stride].mean(2)
            for start in range(0, seq_len, block_q)
        ],
        dim=2,
    )
    assert mass.shape == expected.shape
    assert (mass.double() - expected).abs().max() < 1e-5


def test_rows_must_be_a_power_of_two_within_the_block():
    q = torch.zeros(1, 1, 64, 16)
    for rows, match in ((24, "rows must be a power of two"), (0, "power of two"), (128, "at most")):
        with pytest.raises(ValueError, match=match):
            block_attention_mass(q, q, torch.zeros(1, 1, 64), 64, 64, rows=rows)


def test_any_lse_matches_reference_and_minus_inf_rows_add_nothing():
    g = generator()
    q, k = (torch.randn(1, 2, 180, 16, generator=g) for _ in range(2))
    lse = dense_lse(q, k, 0.25) + torch.rand(1, 2, 180, generator=g)
    lse[..., :40] = float("-inf")
    mass = block_attention_mass(q, k, lse, 64, 32, scale=0.25)
    expected = block_attention_mass_reference(q.double(), k.double(), lse.double(), 64, 32, 0.25)
    assert torch.isfinite(mass).all()
    assert (mass.double() - expected).abs().max() < 1e-6


def test_reference_matches_dense_softmax():
    g = generator()
    q, k = (torch.randn(2, 1, 150, 8, generator=g, dtype=torch.float64) for _ in range(2))
    lse = torch.logsumexp(q @ k.transpose(-1, -2) * 0.5, -1)
    mass = block_attention_mass_reference(q, k, lse, 32, 16, 0.5)
    assert (mass - softmax_block_mass(q, k, 32, 16, 0.5)).abs().max() < 1e-12


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(lse=torch.zeros(1, 1, 63)), ValueError, r"lse must be float32 \[B, H, S\]"),
        (dict(lse=torch.zeros(1, 1, 64, dtype=torch.float64)), ValueError, "float32"),
        (dict(k=torch.zeros(1, 1, 64, 32)), ValueError, "one shape"),
        (dict(q=torch.zeros(1, 1, 64, 16, dtype=torch.float64)), TypeError, "float16"),
        (dict(block_q=48), ValueError, "block_q must be a power of two >= 16"),
        (dict(block_k=8), ValueError, "block_k must be a power of two >= 16"),
        (dict(scale=0.0), ValueError, "positive"),
    ],
)
def test_bad_inputs_raise_with_what_is_accepted(change, error, match):
    args = dict(
        q=torch.zeros(1, 1, 64, 16),
        k=torch.zeros(1, 1, 64, 16),
        lse=torch.zeros(1, 1, 64),
        block_q=32,
        block_k=32,
        scale=None,
    )
    args.update(change)
    with pytest.raises(error, match=match):
        block_attention_mass(
            args["q"], args["k"], args["lse"], args["block_q"], args["block_k"], scale=args["scale"]
        )


@pytest.mark.parametrize(
    "seq_len,block,dim,dtype",
    [
        (200, 64, 32, torch.float32),  # 128-row programs over two mass blocks, ragged end
        (100, 32, 16, torch.float16),  # 16-token plan blocks: mass blocks span tiles
        (300, 16, 64, torch.float32),  # a 128-key tile spans eight mass blocks
        (130, 128, 32, torch.float32),
    ],
)
def test_dense_pass_with_fused_mass_matches_the_separate_passes(seq_len, block, dim, dtype):
    g = generator()
    q, k, v = (torch.randn(2, 3, seq_len, dim, generator=g).to(dtype) for _ in range(3))
    # The LSE of a slightly different q, as a cached one from the previous step would be.
    stale = dense_lse(q.float() + 0.1 * torch.randn(q.shape, generator=g), k, 0.3)
    stale[0, 0, :7] = float("-inf")  # rows that attended to nothing add no mass
    out, lse, mass = dense_attention_with_mass(q, k, v, stale, block, block, scale=0.3)
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 0.3, dim=-1)
    assert out.dtype == dtype and lse.dtype == mass.dtype == torch.float32
    assert (out.double() - probs @ v.double()).abs().max() < (
        1e-5 if dtype == torch.float32 else 2e-3
    )
    assert (lse.double() - dense_lse(q, k, 0.3).double()).abs().max() < 1e-5
    expected = block_attention_mass_reference(
        q.double(), k.double(), stale.double(), block, block, 0.3
    )
    assert mass.shape == expected.shape
    assert (mass.double() - expected).abs().max() < 1e-5 * max(1.0, float(expected.max()))


def test_fused_mass_checks_its_inputs():
    q = torch.zeros(1, 1, 64, 16)
    lse = torch.zeros(1, 1, 64)
    with pytest.raises(ValueError, match=r"lse must be float32 \[B, H, S\]"):
        dense_attention_with_mass(q, q, q, lse[..., :63], 64, 64)
    with pytest.raises(ValueError, match="block_k must be a power of two >= 16"):
        dense_attention_with_mass(q, q, q, lse, 64, 48)
    with pytest.raises(ValueError, match="one shape"):
        dense_attention_with_mass(q, q, torch.zeros(1, 1, 32, 16), lse, 64, 64)


def test_mass_partials_add_up_row_groups_and_key_chunks_into_blocks():
    # 100 query rows in blocks of 32 (the last holds 4), 70 keys in blocks of 64; programs of
    # 64 rows with 32-key tiles store sums per 16 rows and per 32 keys.
    q = torch.zeros(1, 2, 100, 16)
    partials = MassPartials.allocate(q, 70, 32, 64, KernelConfig(64, 32, 4, 1), key_tile=32)
    assert partials.sums.shape == (1, 2, 8, 4)
    assert (partials.group_rows, partials.chunk_keys) == (16, 32)
    assert (partials.sums[..., 3:] == 0).all()  # keys 96..127: no tile reaches them
    partials.sums[..., :3] = torch.rand(1, 2, 8, 3, generator=generator())
    expected = torch.zeros(1, 2, 4, 2)
    for i in range(4):
        for j in range(2):
            block = partials.sums[..., 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].sum((-1, -2))
            expected[..., i, j] = block / min(32, 100 - 32 * i)
    assert torch.allclose(partials.total(), expected)
