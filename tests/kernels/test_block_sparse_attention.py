"""The Triton block-sparse attention kernel (run by Triton's interpreter) against the float64
torch reference, on fresh random inputs and plans each run."""

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from triton_interpreter import triton_interpreter  # noqa: F401 (selects the interpreter)

from dit_sparse import BlockPlan
from dit_sparse.kernels import dense_attention_with_lse, launch
from dit_sparse.kernels.block_sparse_attention import (
    block_sparse_attention,
    default_config,
    launch_block_sparse_attention,
)
from dit_sparse.kernels.reference import block_sparse_attention_reference

TOLERANCE = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


pytestmark = pytest.mark.usefixtures("triton_interpreter")


def generator():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def qkv(batch, heads, seq_len, dim, dtype, g, token_major=False):
    """Random q, k, v; ``token_major`` gives diffusers' ``[B, S, H, D]``-transposed strides."""
    shape = (batch, seq_len, heads, dim) if token_major else (batch, heads, seq_len, dim)
    tensors = [torch.randn(shape, generator=g).to(dtype) for _ in range(3)]
    return [t.transpose(1, 2) for t in tensors] if token_major else tensors


def random_perms(batch, heads, seq_len, g):
    """int64 ``[batch, heads, seq_len]``: a random permutation per (batch, head)."""
    return torch.stack([torch.randperm(seq_len, generator=g) for _ in range(batch * heads)]).view(
        batch, heads, seq_len
    )


def random_plan(
    batch, heads, seq_len, block_q, block_k, g, empty_rows=True, perm=False, key_perm=False
):
    """Each query block keeps 1..all key blocks at random; a few keep none. ``perm``: a random
    permutation per head; ``key_perm``: another one for the keys and values."""
    nq, nk = -(-seq_len // block_q), -(-seq_len // block_k)
    scores = torch.rand(batch, heads, nq, nk, generator=g)
    keep = torch.randint(1, nk + 1, (batch, heads, nq, 1), generator=g)
    if empty_rows:
        keep[torch.rand(batch, heads, nq, 1, generator=g) < 0.15] = 0
    mask = scores.argsort(-1).argsort(-1) < keep
    permutation = random_perms(batch, heads, seq_len, g) if perm or key_perm else None
    plan = BlockPlan.from_block_mask(mask, block_q, block_k, seq_len, perm=permutation)
    if key_perm:
        plan = dataclasses.replace(plan, key_perm=random_perms(batch, heads, seq_len, g))
    return plan


def run_kernel(q, k, v, plan, scale):
    """Launch into NaN-poisoned O and LSE buffers, so that any element left unwritten shows."""
    out = torch.full_like(q, float("nan"))
    lse = torch.full(q.shape[:3], float("nan"))
    config = default_config(q.shape[-1], plan.block_q, plan.block_k, q.device)
    launch_block_sparse_attention(q, k, v, plan, scale, out, lse, config)
    return out, lse


def assert_matches_reference(q, k, v, plan, scale, out, lse):
    expected, expected_lse = block_sparse_attention_reference(
        q.double(), k.double(), v.double(), plan, scale, return_lse=True
    )
    assert not out.isnan().any() and not lse.isnan().any()
    tolerance = TOLERANCE[q.dtype]
    assert (out.double() - expected).abs().max() < tolerance
    empty = expected_lse == float("-inf")
    assert torch.equal(lse == float("-inf"), empty)
    # all(), not max(): a random plan may leave every row empty (then nothing is left to compare).
    assert ((lse.double() - expected_lse)[~empty].abs() < tolerance).all()


@pytest.mark.parametrize(
    "seq_len,block_q,block_k,dim,dtype,plan_batch,plan_heads",
    [
        (128, 128, 128, 64, torch.float32, 2, 2),  # one block
        (200, 64, 32, 16, torch.float32, 1, 2),  # ragged; batch-1 plan broadcasts
        (333, 64, 64, 32, torch.float16, 2, 1),  # ragged; head-1 plan broadcasts
        (300, 64, 256, 16, torch.float32, 2, 2),  # key blocks split into tiles
        (400, 256, 32, 16, torch.float32, 1, 1),  # query blocks split into tiles
    ],
)
def test_random_plans_match_reference(
    seq_len, block_q, block_k, dim, dtype, plan_batch, plan_heads
):
    g = generator()
    q, k, v = qkv(2, 2, seq_len, dim, dtype, g)
    plan = random_plan(plan_batch, plan_heads, seq_len, block_q, block_k, g)
    out, lse = run_kernel(q, k, v, plan, 0.3)
    assert_matches_reference(q, k, v, plan, 0.3, out, lse)


# Query block i's key blocks at S = 200, blocks of 64: block 3 holds the last 8 tokens.
PARTIAL_BLOCK_LISTS = [[0, 1], [3], [1, 3], [0, 1, 2]]


def partial_block_plan(seq_len=200, block=64):
    """Rows that list the sequence's partial last block and rows that do not."""
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    for row, blocks in enumerate(PARTIAL_BLOCK_LISTS):
        mask[0, 0, row, blocks] = True
    return BlockPlan.from_block_mask(mask, block, block, seq_len)


def test_only_rows_listing_the_partial_block_mask_it():
    # K and V past the end of the sequence are huge: a tile read there without its mask shows.
    g = generator()
    q, k, v = qkv(1, 2, 256, 32, torch.float32, g)
    k[:, :, 200:], v[:, :, 200:] = 1e4, 1e4
    q, k, v = q[:, :, :200], k[:, :, :200], v[:, :, :200]
    plan = partial_block_plan()
    out, lse = run_kernel(q, k, v, plan, 0.3)
    assert_matches_reference(q, k, v, plan, 0.3, out, lse)


@pytest.mark.parametrize("plan_batch", [1, 2])
def test_perm_is_fused_into_loads_and_stores(plan_batch):
    g = generator()
    q, k, v = qkv(2, 2, 210, 16, torch.float32, g, token_major=True)
    plan = random_plan(plan_batch, 2, 210, 64, 32, g, perm=True)
    out, lse = run_kernel(q, k, v, plan, 1 / math.sqrt(16))
    assert_matches_reference(q, k, v, plan, 1 / math.sqrt(16), out, lse)


def test_heads_not_marked_permuted_are_read_in_place():
    g = generator()
    q, k, v = qkv(2, 3, 200, 16, torch.float32, g)
    plan = random_plan(2, 3, 200, 64, 32, g, perm=True)
    permuted = torch.tensor([[True, False, True], [False, False, True]])
    # Unmarked heads carry the identity, as Sparse VideoGen's spatial heads do.
    perm = torch.where(permuted[..., None], plan.perm, torch.arange(200))
    plan = dataclasses.replace(plan, perm=perm, permuted=permuted)
    out, lse = run_kernel(q, k, v, plan, 0.25)
    assert_matches_reference(q, k, v, plan, 0.25, out, lse)
    with pytest.raises(ValueError, match=r"permuted must be bool \[B\|1, 3\]"):
        dataclasses.replace(plan, permuted=permuted[:, :2])


def test_one_shared_perm_with_per_head_flags_matches_per_head_perms():
    g = generator()
    q, k, v = qkv(2, 3, 200, 16, torch.float32, g, token_major=True)
    plan = random_plan(2, 3, 200, 64, 32, g, perm=True)
    shared = plan.perm[:1, :1]
    permuted = torch.tensor([[True, False, True], [False, True, False]])
    plan = dataclasses.replace(plan, perm=shared, permuted=permuted)
    # The same plan spelled out head by head, with no flags: what the reference applies.
    spelled = dataclasses.replace(
        plan, perm=torch.where(permuted[..., None], shared, torch.arange(200)), permuted=None
    )
    out, lse = run_kernel(q, k, v, plan, 0.25)
    assert_matches_reference(q, k, v, spelled, 0.25, out, lse)
    with pytest.raises(ValueError, match="plan.permuted batch dim must be 1 or 1"):
        block_sparse_attention(
            q[:1],
            k[:1],
            v[:1],
            dataclasses.replace(plan, kv_indices=plan.kv_indices[:1], kv_counts=plan.kv_counts[:1]),
        )


@pytest.mark.parametrize("plan_batch,plan_heads", [(1, 2), (2, 2), (2, 1)])
@pytest.mark.parametrize("key_dtype", [torch.int64, torch.int32])
def test_keys_gathered_through_their_own_permutation(plan_batch, plan_heads, key_dtype):
    """Queries through ``perm`` and keys and values through ``key_perm`` (ragged S, batch 2;
    plans per head or broadcast): the reference's result, which differs from that of ``perm``
    for both."""
    g = generator()
    q, k, v = qkv(2, 2, 210, 16, torch.float32, g, token_major=True)
    plan = random_plan(plan_batch, plan_heads, 210, 64, 32, g, empty_rows=False, key_perm=True)
    plan = dataclasses.replace(plan, key_perm=plan.key_perm.to(key_dtype))
    out, lse = run_kernel(q, k, v, plan, 0.25)
    assert_matches_reference(q, k, v, plan, 0.25, out, lse)
    one_perm, _ = run_kernel(q, k, v, dataclasses.replace(plan, key_perm=None), 0.25)
    assert (out - one_perm).abs().max() > 0.1


def test_key_perm_of_heads_not_marked_permuted_is_not_read():
    """``permuted`` governs both permutations: unmarked heads read q, k, v in place, whatever
    their ``perm`` and ``key_perm`` rows hold; one shared ``perm`` beside per-head key ones."""
    g = generator()
    q, k, v = qkv(2, 3, 200, 16, torch.float32, g)
    plan = random_plan(2, 3, 200, 64, 32, g, key_perm=True)
    permuted = torch.tensor([[True, False, True], [False, False, True]])
    plan = dataclasses.replace(plan, perm=plan.perm[:1, :1], permuted=permuted)
    out, lse = run_kernel(q, k, v, plan, 0.25)
    assert_matches_reference(q, k, v, plan, 0.25, out, lse)
    in_place = dataclasses.replace(plan, perm=None, permuted=None, key_perm=None)
    plain_out, plain_lse = run_kernel(q, k, v, in_place, 0.25)
    assert torch.equal(out[~permuted], plain_out[~permuted])
    assert torch.equal(lse[~permuted], plain_lse[~permuted])


@pytest.mark.parametrize("heads_batch", [1, 2])
def test_heads_pick_shared_plans_as_if_each_had_its_own(heads_batch):
    """``head_plans``: three shared plans, the last two permuted, picked per head in the
    kernel; O and LSE equal the kernel's and the reference's on the expanded per-head plan."""
    g = generator()
    q, k, v = qkv(2, 4, 150, 32, torch.float32, g)
    shared = random_plan(1, 3, 150, 32, 16, g, perm=True)
    pick = torch.randint(0, 3, (heads_batch, 4), generator=g)
    plan = BlockPlan(
        shared.kv_indices, shared.kv_counts, 32, 16, 150, perm=shared.perm,
        permuted=torch.tensor([[False, True, True]]), head_plans=pick,
    )  # fmt: skip
    expanded = plan.expanded()
    assert expanded.kv_indices.shape == (heads_batch, 4, *shared.kv_indices.shape[2:])
    assert torch.equal(expanded.permuted, pick > 0)
    out, lse = block_sparse_attention(q, k, v, plan, return_lse=True)
    own_out, own_lse = block_sparse_attention(q, k, v, expanded, return_lse=True)
    assert torch.allclose(out, own_out, atol=1e-6) and torch.equal(lse.isinf(), own_lse.isinf())
    ref_out, ref_lse = block_sparse_attention_reference(
        q.double(), k.double(), v.double(), plan, return_lse=True
    )
    assert (out.double() - ref_out).abs().max() < TOLERANCE[torch.float32]
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite)
    assert (lse.double() - ref_lse)[finite].abs().max() < TOLERANCE[torch.float32]
    with pytest.raises(ValueError, match=r"head_plans must be int \[B\|1, H\]"):
        dataclasses.replace(plan, head_plans=pick.float())


@pytest.mark.parametrize("shared_key_perm", [False, True])
def test_shared_plans_with_key_perms(shared_key_perm):
    """``head_plans`` over plans with a ``key_perm`` each (or one for all): the kernel's O and
    LSE equal the reference's and the kernel's on the expanded per-head plan."""
    g = generator()
    q, k, v = qkv(2, 4, 150, 32, torch.float32, g)
    shared = random_plan(1, 3, 150, 32, 16, g, key_perm=True)
    key_perm = shared.key_perm[:, :1] if shared_key_perm else shared.key_perm
    plan = dataclasses.replace(
        shared, key_perm=key_perm, permuted=torch.tensor([[True, False, True]]),
        head_plans=torch.randint(0, 3, (2, 4), generator=g),
    )  # fmt: skip
    out, lse = run_kernel(q, k, v, plan, 0.2)
    assert_matches_reference(q, k, v, plan, 0.2, out, lse)
    own_out, own_lse = run_kernel(q, k, v, plan.expanded(), 0.2)
    assert torch.allclose(out, own_out, atol=1e-6) and torch.equal(lse.isinf(), own_lse.isinf())


def test_token_major_strides_and_out_buffer():
    g = generator()
    q, k, v = qkv(1, 3, 150, 32, torch.float16, g, token_major=True)
    plan = random_plan(1, 3, 150, 64, 64, g, empty_rows=False)
    out = torch.full_like(q, float("nan"))
    result, lse = block_sparse_attention(q, k, v, plan, return_lse=True, out=out)
    assert result is out and out.dtype == torch.float16 and lse.dtype == torch.float32
    assert_matches_reference(q, k, v, plan, 1 / math.sqrt(32), out, lse)


def test_rows_without_blocks_give_zero_and_minus_inf():
    g = generator()
    q, k, v = qkv(1, 1, 100, 16, torch.float32, g)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 2, 1] = mask[..., 3, 3] = True
    out, lse = run_kernel(q, k, v, BlockPlan.from_block_mask(mask, 32, 32, 100), 0.25)
    assert torch.all(out[..., :64, :] == 0) and torch.all(lse[..., :64] == float("-inf"))
    assert torch.isfinite(lse[..., 64:]).all()


def test_bf16_computes_in_fp32_under_the_interpreter():
    g = generator()
    q, k, v = qkv(1, 2, 160, 16, torch.bfloat16, g)
    plan = random_plan(1, 2, 160, 32, 32, g)
    out, lse = block_sparse_attention(q, k, v, plan, return_lse=True)
    assert out.dtype == torch.bfloat16
    assert_matches_reference(q, k, v, plan, 1 / math.sqrt(16), out, lse)


def test_dense_attention_with_lse_matches_sdpa():
    g = generator()
    q, k, v = qkv(1, 2, 140, 32, torch.float32, g)
    out, lse = dense_attention_with_lse(q, k, v, scale=0.2)
    assert (out - F.scaled_dot_product_attention(q, k, v, scale=0.2)).abs().max() < 1e-5
    scores = (q.double() @ k.double().transpose(-1, -2)) * 0.2
    assert (lse.double() - torch.logsumexp(scores, -1)).abs().max() < 1e-5


def test_cpu_without_interpreter_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(launch, "_warned", set())
    g = generator()
    q, k, v = qkv(1, 1, 64, 16, torch.float32, g)
    plan = random_plan(1, 1, 64, 32, 32, g)
    with pytest.warns(UserWarning, match="torch reference"):
        out = block_sparse_attention(q, k, v, plan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        block_sparse_attention(q, k, v, plan)
    assert torch.equal(out, block_sparse_attention_reference(q, k, v, plan))


def _plan(seq_len=64, block=32, batch=1, heads=1, key_perm=None):
    plan = BlockPlan.dense(batch, heads, seq_len, block, block)
    if key_perm is None:
        return plan
    return dataclasses.replace(plan, perm=torch.arange(seq_len)[None, None], key_perm=key_perm)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(q=torch.zeros(1, 1, 64, 16, dtype=torch.float64)), TypeError, "float16, bfloat16"),
        (dict(q=torch.zeros(1, 1, 64, 16, dtype=torch.int32)), TypeError, "float16, bfloat16"),
        (dict(k=torch.zeros(1, 1, 64, 16, dtype=torch.float16)), TypeError, "one dtype"),
        (dict(q=torch.zeros(1, 64, 16)), ValueError, r"\[B, H, S, D\]"),
        (dict(k=torch.zeros(1, 1, 32, 16)), ValueError, "one shape"),
        (dict(q="q"), TypeError, "torch.Tensor"),
        (dict(plan="dense"), TypeError, "BlockPlan"),
        (dict(plan=_plan(seq_len=96)), ValueError, "seq_len 96"),
        (dict(plan=_plan(batch=2)), ValueError, "broadcast"),
        (dict(plan=_plan(block=24)), ValueError, "power of two >= 16"),
        (dict(plan=_plan(block=8)), ValueError, "power of two >= 16"),
        (dict(plan=_plan().to("meta")), ValueError, "plan.to"),
        (dict(plan=_plan(key_perm=torch.zeros(1, 1, 64))), TypeError, "int32 or int64"),
        (
            dict(plan=_plan(key_perm=torch.zeros(2, 1, 64, dtype=torch.long))),
            ValueError,
            "plan.key_perm batch dim must be 1 or 1, got 2",
        ),
        (
            dict(plan=_plan(key_perm=torch.zeros(1, 1, 64, dtype=torch.long, device="meta"))),
            ValueError,
            "plan is on meta",
        ),
        (dict(scale=-1.0), ValueError, "positive"),
        (dict(out=torch.zeros(1, 1, 64, 8)), ValueError, "out must be"),
    ],
)
def test_bad_inputs_raise_with_what_is_accepted(change, error, match):
    args = dict(
        q=torch.zeros(1, 1, 64, 16),
        k=torch.zeros(1, 1, 64, 16),
        v=torch.zeros(1, 1, 64, 16),
        plan=_plan(),
        scale=None,
        out=None,
    )
    args.update(change)
    with pytest.raises(error, match=match):
        block_sparse_attention(
            args["q"], args["k"], args["v"], args["plan"], scale=args["scale"], out=args["out"]
        )


def test_head_dim_outside_the_supported_set_raises():
    q = torch.zeros(1, 1, 64, 48)
    with pytest.raises(ValueError, match=r"head dim must be one of \(16, 32, 64, 128, 256\)"):
        block_sparse_attention(q, q, q, _plan())
