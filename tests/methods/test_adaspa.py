import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import dit_sparse
from dit_sparse import TokenLayout
from dit_sparse.kernels.reference import block_sparse_attention_reference
from dit_sparse.methods import AttentionCall, resolve_method
from dit_sparse.methods import adaspa as adaspa_module
from dit_sparse.methods.adaspa import WARMUP_LSE_MIN_STEPS, AdaSpa
from dit_sparse.methods.adaspa_select import (
    hierarchical_groups,
    hierarchical_levels,
    keep_count,
    text_key_blocks,
)
from dit_sparse.parallel import HeadPartition

# --- helpers: the exact block mass, computed densely, independent of the kernels -------------


def exact_lse(q, k, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.logsumexp(q.double() @ k.double().transpose(-1, -2) * scale, -1)


def exact_mass(q, k, block, scale=None, row_stride=1):
    """fp64 [B, H, nq, nk]: per query block, mean over its rows (every ``row_stride``-th) of the
    softmax mass per key block."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) * scale, -1)
    blocks = torch.arange(q.shape[2]) // block
    nb = int(blocks[-1]) + 1
    per_key = torch.zeros(*probs.shape[:3], nb, dtype=probs.dtype).index_add_(-1, blocks, probs)
    rows = torch.arange(q.shape[2]) % row_stride == 0
    per_key, row_blocks = per_key[:, :, rows], blocks[rows]
    sums = torch.zeros(*probs.shape[:2], nb, nb, dtype=probs.dtype)
    sums.index_add_(2, row_blocks, per_key)
    return sums / torch.bincount(row_blocks).double()[:, None]


def structured_qkv(heads, seq_len, block, sharpness, dim=32, seed=0):
    """q/k whose attention concentrates, per query block, on a few random key blocks; head
    ``h`` is as sharp as ``sharpness[h]`` (0 = diffuse noise)."""
    g = torch.Generator().manual_seed(seed)
    nb = -(-seq_len // block)
    centers = torch.randn(heads, nb, dim, generator=g)
    key_block = torch.arange(seq_len) // block
    k = centers[:, key_block] + 0.3 * torch.randn(heads, seq_len, dim, generator=g)
    targets = torch.randint(0, nb, (heads, nb, 3), generator=g)
    q = centers.gather(1, targets.flatten(1)[..., None].expand(-1, -1, dim)).view(heads, nb, 3, dim)
    q = q.sum(2)[:, key_block] + 0.3 * torch.randn(heads, seq_len, dim, generator=g)
    q = q * torch.tensor(sharpness, dtype=torch.float32)[:, None, None]
    v = torch.randn(heads, seq_len, dim, generator=g)
    return q[None], k[None], v[None]


def kept(plan, mass):
    """Mass the plan keeps per (b, h, query block), measured on ``mass``."""
    return (mass * plan.to_block_mask().double()).sum(-1)


def drive(method, q, k, v, layout, steps, num_steps, cache, branch="cond", layer=0):
    """Run steps as the runtime would; returns (outputs, infos) of the steps the method
    computed (dense ones only where ``attend_dense`` took them)."""
    outs, infos = {}, {}
    for step in steps:
        call = AttentionCall(layout, layer, 1, step, num_steps, branch, cache)
        if method.runs_dense(call):
            out = method.attend_dense(q[step], k[step], v[step], call)
        else:
            out = method.attend(q[step], k[step], v[step], call)
        if out is not None:
            outs[step], infos[step] = out, call.info
    return outs, infos


# --- options ---------------------------------------------------------------------------------


def test_defaults_and_validation():
    method = AdaSpa()
    assert (method.sparsity, method.coverage, method.dense_steps) == (0.8, None, 0.2)
    assert method.search_steps == (0.2, 0.6) and method.block_size == 64
    assert resolve_method("adaspa", coverage=0.9).sparsity is None
    assert AdaSpa(search_steps=5).search_steps == (5,)
    assert dit_sparse.AdaSpa is AdaSpa
    bad = [
        ({"sparsity": 0.5, "coverage": 0.9}, "not both"),
        ({"sparsity": 1.0}, r"\[0, 1\)"),
        ({"coverage": 0.0}, r"\(0, 1\]"),
        ({"search_steps": (1.5,)}, "share"),
        ({"search_steps": (-2,)}, ">= 0"),
        ({"block_size": 48}, "power of two"),
        ({"block_size": 8}, "power of two"),
        ({"search_rows": 12}, "search_rows must be a power of two or None"),
        ({"min_density": 0.5, "max_density": 0.2}, "above max_density"),
        ({"max_density": 0.0}, r"\(0, 1\]"),
        ({"recall_threshold": 1.0}, r"\(0, 1\)"),
        ({"dense_steps": 1.5}, "share"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            AdaSpa(**options)
    with pytest.raises(TypeError, match=r"search_steps takes .*a list \(each a number\)"):
        AdaSpa(search_steps=(True,))
    with pytest.raises(TypeError, match="warmup_lse takes true or false or None, got 'false'"):
        AdaSpa(warmup_lse="false")


def test_search_step_indices():
    assert AdaSpa().search_step_indices(50) == {10, 30}
    assert AdaSpa(search_steps=(0.5, 7, 7)).search_step_indices(4) == {2, 7}
    assert AdaSpa(search_steps=(0.5, 7)).search_step_indices(None) == {7}


def test_block_shrinks_for_short_sequences():
    method = AdaSpa()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert method.block_for(80) == 16  # tiny-wan 17x64x64: 5 blocks of 16 is the floor
        assert method.block_for(256) == 32  # 8 blocks of 32
        assert method.block_for(576) == 64  # 33x128x128: 9 blocks of 64, unchanged
        assert method.block_for(80) == 16
    assert len(caught) == 2 and "blocks of 16" in str(caught[0].message)


# --- selection -------------------------------------------------------------------------------


def test_coverage_keeps_the_fewest_blocks_reaching_the_target():
    layout = TokenLayout(5, 8, 8)  # 320 tokens, 10 blocks of 32
    q, k, v = structured_qkv(4, 320, 32, sharpness=[2.0, 1.0, 0.5, 0.1])
    for target, rows in ((0.5, None), (0.9, None), (0.9, 8)):
        method = AdaSpa(coverage=target, block_size=32, search_rows=rows)
        plan, coverage = method.search(q, k, v, layout)
        # With search_rows, the mass (and so the choice) comes from every 4th row of a block.
        mass = exact_mass(q, k, 32, row_stride=32 // (rows or 32))
        counts = plan.kv_counts.long()
        # The fewest: the top-c blocks by exact mass reach the target only for c >= counts.
        cum = mass.sort(-1, descending=True).values.cumsum(-1)
        fewest = (cum < target - 1e-6).sum(-1) + 1
        assert torch.equal(counts, fewest)
        assert (kept(plan, mass) >= target - 1e-5).all()
        weights = torch.full((10,), 32 / 320)
        assert torch.allclose(coverage.double(), (kept(plan, mass) * weights).sum(-1), atol=1e-5)
    # Sharper heads need fewer blocks for the same coverage.
    per_head = plan.kv_counts.float().mean(-1)[0]
    assert per_head[0] < per_head[3]
    # Density bounds clamp each row: 10 blocks, at most 2 and at least 3 of them.
    plan, _ = AdaSpa(coverage=0.9, block_size=32, max_density=0.2).search(q, k, v, layout)
    assert plan.kv_counts.max() == 2 and plan.max_kv == 2
    plan, _ = AdaSpa(coverage=0.1, block_size=32, min_density=0.3).search(q, k, v, layout)
    assert (plan.kv_counts == 3).all()


def test_topk_rows_keep_k_best_blocks():
    layout = TokenLayout(10, 8, 8)  # 640 tokens, 10 blocks of 64
    q, k, v = structured_qkv(3, 640, 64, sharpness=[0.1, 0.1, 0.1])  # diffuse: no head moves
    plan, coverage = AdaSpa(sparsity=0.7).search(q, k, v, layout)
    assert (plan.kv_counts == 3).all()
    mass = exact_mass(q, k, 64)
    best = mass.sort(-1, descending=True).values[..., :3].sum(-1)
    assert torch.allclose(kept(plan, mass), best, atol=1e-6)
    assert (coverage < 0.8).all()
    assert math.isclose(plan.density, 0.3, abs_tol=1e-6)
    # Per-head density bounds clamp the budget.
    plan, _ = AdaSpa(sparsity=0.7, max_density=0.2).search(q, k, v, layout)
    assert (plan.kv_counts == 2).all()
    plan, _ = AdaSpa(sparsity=0.9, min_density=0.25).search(q, k, v, layout)
    assert (plan.kv_counts == 3).all()


def test_hierarchical_levels_and_groups_keep_the_mean():
    assert hierarchical_levels(0.8) == pytest.approx((0.9, 0.8, 0.7))
    assert hierarchical_levels(0.2) == pytest.approx((0.6, 0.2, 0.0))  # denser level clamped
    recall = torch.tensor([[0.95, 0.3, 0.85, 0.5, 0.9, 0.6], [0.1, 0.99, 0.2, 0.3, 0.4, 0.5]])
    groups = hierarchical_groups(recall, 0.8)
    # Row 0: n = 3 heads above 0.8 -> they go sparser, the 3 lowest denser.
    assert groups[0].tolist() == [0, 2, 0, 2, 0, 2]
    # Row 1: n = 1 -> the best head sparser, the worst denser, the rest at the base.
    assert groups[1].tolist() == [2, 0, 1, 1, 1, 1]
    # n is capped at half the heads: 5 of 6 above the threshold moves 3 up and 3 down.
    capped = hierarchical_groups(torch.tensor([[0.9, 0.91, 0.92, 0.93, 0.94, 0.1]]), 0.8)
    assert sorted(capped[0].tolist()) == [0, 0, 0, 2, 2, 2]
    for s in (0.4, 0.8, 0.95):
        levels = torch.tensor(hierarchical_levels(s), dtype=torch.float64)
        assert levels[groups].mean(-1).tolist() == pytest.approx([s, s])
    assert keep_count(0.05, 20, forced=0) == 1 and keep_count(0.1, 20, forced=3) == 3


def test_hierarchical_search_moves_heads_by_recall():
    layout = TokenLayout(20, 4, 4)  # 320 tokens, 20 blocks of 16 (block_size=16)
    sharpness = [3.0, 0.05, 2.5, 0.1, 0.2, 0.3]
    q, k, v = structured_qkv(6, 320, 16, sharpness=sharpness)
    method = AdaSpa(sparsity=0.8, block_size=16)
    plan, coverage = method.search(q, k, v, layout)
    mass = exact_mass(q, k, 16)
    base_recall = mass.sort(-1, descending=True).values[..., :4].sum(-1).mean(-1)[0]
    assert (base_recall > 0.8).sum() == 2  # the two sharp heads
    counts = plan.kv_counts[0]
    assert (counts == counts[:, :1]).all()  # row-wise: one budget per head
    expected = torch.full((6,), 4)
    order = base_recall.argsort(descending=True)
    expected[order[:2]] = 2  # sparsity 0.9 -> 2 of 20 blocks
    expected[order[-2:]] = 6  # sparsity 0.7 -> 6 of 20 blocks
    assert counts[:, 0].tolist() == expected.tolist()
    assert counts.float().mean() == 4  # mean density unchanged
    assert torch.allclose(coverage[0].double(), kept(plan, mass)[0].mean(-1), atol=1e-5)


def test_batch_items_are_searched_independently():
    layout = TokenLayout(8, 4, 4)
    one = structured_qkv(4, 128, 16, sharpness=[3.0, 0.1, 2.0, 0.2], seed=1)
    two = structured_qkv(4, 128, 16, sharpness=[0.1, 3.0, 0.2, 2.0], seed=2)
    batch = [torch.cat(pair) for pair in zip(one, two)]
    for options in ({"sparsity": 0.75}, {"coverage": 0.8}):
        method = AdaSpa(block_size=16, **options)
        plan, coverage = method.search(*batch, layout)
        assert plan.batch == 2 and coverage.shape == (2, 4)
        for b, single in enumerate((one, two)):
            alone, alone_coverage = method.search(*single, layout)
            assert torch.equal(plan.to_block_mask()[b], alone.to_block_mask()[0])
            assert torch.allclose(coverage[b], alone_coverage[0], atol=1e-6)


def test_ulysses_slice_ranks_heads_over_the_whole_group(monkeypatch):
    """Rank 1 of 2 holds heads 2, 3; the sharp heads 0, 1 live on rank 0. Alone, rank 1 would
    see no head above the recall threshold; with the group's recall it makes heads 2, 3 denser,
    exactly as one process with all 4 heads does."""
    layout = TokenLayout(20, 4, 4)  # 320 tokens, 20 blocks of 16
    q, k, v = structured_qkv(4, 320, 16, sharpness=[3.0, 2.5, 0.1, 0.2])
    method = AdaSpa(block_size=16)
    whole, _ = method.search(q, k, v, layout)
    assert whole.kv_counts[0, :, 0].tolist() == [2, 2, 6, 6]
    mass = exact_mass(q[:, :2], k[:, :2], 16)
    rank0_recall = mass.sort(-1, descending=True).values[..., :4].sum(-1).mean(-1).float()

    def all_gather(parts, tensor, group):
        assert group == "ulysses" and len(parts) == 2
        parts[0].copy_(rank0_recall)
        parts[1].copy_(tensor)

    monkeypatch.setattr(torch.distributed, "all_gather", all_gather)
    local = (t[:, 2:] for t in (q, k, v))
    heads = HeadPartition(offset=2, local=2, total=4, group="ulysses")
    plan, _ = method.search(*local, layout, heads=heads)
    assert torch.equal(plan.to_block_mask(), whole.to_block_mask()[:, 2:])
    alone, _ = method.search(*(t[:, 2:] for t in (q, k, v)), layout)
    assert alone.kv_counts[0, :, 0].tolist() == [4, 4]


@pytest.mark.parametrize("text_first", [True, False])
@pytest.mark.parametrize("options", [{"sparsity": 0.9}, {"coverage": 0.3}])
def test_text_blocks_are_always_kept(text_first, options):
    layout = TokenLayout(4, 8, 8, text_len=40, text_first=text_first)  # 296 tokens
    q, k, v = structured_qkv(2, 296, 16, sharpness=[2.0, 2.0])
    plan, _ = AdaSpa(block_size=16, **options).search(q, k, v, layout)
    text = text_key_blocks(layout, 16)
    assert len(text) == 3 and (text.start == 0) == text_first
    mask = plan.to_block_mask()
    assert mask[..., text.start : text.stop].all()
    if "sparsity" in options:  # the budget of 2 blocks grows to hold all 3 text blocks
        assert (plan.kv_counts == 3).all()


# --- the schedule: search, LSE-cached search, reuse ------------------------------------------


def counting(monkeypatch):
    counts = {"dense": 0, "mass": 0, "sparse": 0, "fused": 0}
    for name, label in [
        ("dense_attention_with_lse", "dense"),
        ("block_attention_mass", "mass"),
        ("block_sparse_attention", "sparse"),
        ("dense_attention_with_mass", "fused"),
    ]:
        original = getattr(adaspa_module, name)

        def wrapper(*args, _original=original, _label=label, **kwargs):
            counts[_label] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(adaspa_module, name, wrapper)
    return counts


def step_inputs(steps, seq_len, heads=2, seed=0):
    """Slowly drifting q/k/v per step, like consecutive denoising steps."""
    q, k, v = structured_qkv(heads, seq_len, 16, sharpness=[1.0] * heads, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    drift = [0.2 * s * torch.randn(q.shape, generator=g) for s in range(steps)]
    return [q + d for d in drift], [k - d for d in drift], [v + d for d in drift]


@pytest.mark.parametrize(
    "warmup_lse, first",
    [
        # The last warm-up step keeps its LSE: the first search's dense pass sums the mass.
        (True, [("dense-lse", 1, 0, 0, 0), ("search", 0, 0, 0, 1)]),
        # The paper's first search: its own dense pass with LSE, then the mass pass.
        (False, [("dense", 0, 0, 0, 0), ("search", 1, 1, 0, 0)]),
    ],
)
def test_plans_are_searched_then_reused(monkeypatch, warmup_lse, first):
    counts = counting(monkeypatch)
    layout = TokenLayout(8, 4, 4)  # 128 tokens, 8 blocks of 16
    q, k, v = step_inputs(7, 128)
    method = AdaSpa(dense_steps=1, search_steps=(2, 5), block_size=16, warmup_lse=warmup_lse)
    cache: dict = {}
    seen, plans = [], []
    for step in range(7):
        before = dict(counts)
        _, infos = drive(method, q, k, v, layout, [step], 7, cache)
        done = tuple(counts[key] - before[key] for key in ("dense", "mass", "sparse", "fused"))
        info = infos.get(step, {"kind": "dense"})
        seen.append((info["kind"], *done))
        if step:
            assert (info["dense_passes"], info["mass_passes"]) == (done[0] + done[3], done[1])
            plans.append(cache[("adaspa", 0)].plan)
    assert seen == [
        *first,
        ("cached-search", 0, 1, 1, 0),
        ("reuse", 0, 0, 1, 0),
        ("reuse", 0, 0, 1, 0),
        ("cached-search", 0, 1, 1, 0),
        ("reuse", 0, 0, 1, 0),
    ]
    # Reuse steps keep the very plan of the last search; searches replace it.
    assert plans[1] is plans[2] is plans[3] and plans[4] is plans[5]
    assert plans[0] is not plans[1] and plans[3] is not plans[4]
    # The drift changes the pattern, so the refreshes found new plans.
    assert not torch.equal(plans[0].to_block_mask(), plans[4].to_block_mask())


def test_cached_search_uses_the_lse_of_the_previous_search():
    layout = TokenLayout(8, 4, 4)
    q, k, v = step_inputs(3, 128)
    method = AdaSpa(dense_steps=0, search_steps=(0, 2), block_size=16)
    cache: dict = {}
    outs, infos = drive(method, q, k, v, layout, range(3), 3, cache)
    assert [infos[s]["kind"] for s in range(3)] == ["search", "reuse", "cached-search"]
    lse0 = exact_lse(q[0], k[0]).float()
    assert torch.allclose(cache[("adaspa", 0)].lse, lse0, atol=1e-4)
    plan, coverage = method.search(q[2], k[2], v[2], layout, lse=lse0)
    assert torch.equal(cache[("adaspa", 0)].plan.to_block_mask(), plan.to_block_mask())
    assert torch.allclose(infos[2]["head_coverage"], coverage.mean(0), atol=1e-6)
    # A fresh search at step 2 (its own LSE) measures a different coverage: the stale LSE
    # really was used.
    _, fresh = method.search(q[2], k[2], v[2], layout)
    assert not torch.allclose(fresh, coverage, atol=1e-4)
    expected = block_sparse_attention_reference(q[2], k[2], v[2], plan)
    assert torch.allclose(outs[2], expected, atol=1e-5)


def test_warmup_lse_feeds_the_first_search():
    layout = TokenLayout(8, 4, 4)
    q, k, v = step_inputs(4, 128)
    method = AdaSpa(dense_steps=2, search_steps=(), block_size=16, warmup_lse=True)
    cache: dict = {}
    outs, infos = drive(method, q, k, v, layout, range(4), 4, cache)
    # Only the last warm-up step is computed here (exactly); the one before is the model's.
    assert list(infos) == [1, 2, 3]
    assert infos[1] == {"kind": "dense-lse", "density": 1.0}
    assert torch.allclose(outs[1], F.scaled_dot_product_attention(q[1], k[1], v[1]), atol=1e-5)
    # The first search's output is exact; it ranks blocks with step 1's LSE and keeps its own
    # LSE for later searches.
    plan, coverage = method.search(q[2], k[2], v[2], layout, lse=exact_lse(q[1], k[1]).float())
    state = cache[("adaspa", 0)]
    assert infos[2]["kind"] == "search" and infos[3]["kind"] == "reuse"
    assert torch.allclose(outs[2], F.scaled_dot_product_attention(q[2], k[2], v[2]), atol=1e-5)
    assert torch.equal(state.plan.to_block_mask(), plan.to_block_mask())
    assert torch.allclose(infos[2]["head_coverage"], coverage.mean(0), atol=1e-6)
    assert torch.allclose(state.lse, exact_lse(q[2], k[2]).float(), atol=1e-4)
    expected = block_sparse_attention_reference(q[3], k[3], v[3], plan)
    assert torch.allclose(outs[3], expected, atol=1e-5)
    # No warm-up LSE is kept where no sparse step follows: a dense layer, the final steps.
    for options, step in (({"dense_layers": 1}, 1), ({"dense_final_steps": 2}, 1)):
        other = AdaSpa(dense_steps=2, block_size=16, warmup_lse=True, **options)
        _, infos = drive(other, q, k, v, layout, [step], 4, {})
        assert infos == {}


def test_warmup_lse_by_default_only_in_runs_of_many_steps():
    layout = TokenLayout(8, 4, 4)
    q, k, v = step_inputs(2, 128)
    many = WARMUP_LSE_MIN_STEPS
    method = AdaSpa(dense_steps=2, search_steps=(), block_size=16)
    assert [method.uses_warmup_lse(n) for n in (many, many - 1, None)] == [True, False, False]
    assert not AdaSpa(warmup_lse=False).uses_warmup_lse(50)
    assert AdaSpa(warmup_lse=True).uses_warmup_lse(8)
    _, infos = drive(method, q, k, v, layout, [1], many, {})
    assert infos[1]["kind"] == "dense-lse"
    _, infos = drive(method, q, k, v, layout, [1], many - 1, {})
    assert infos == {}


def test_search_output_is_exact_and_reuse_matches_the_reference():
    layout = TokenLayout(8, 4, 4)
    q, k, v = step_inputs(2, 128)
    method = AdaSpa(dense_steps=0, search_steps=(), block_size=16, sparsity=0.5)
    cache: dict = {}
    outs, infos = drive(method, q, k, v, layout, range(2), 2, cache)
    assert torch.allclose(outs[0], F.scaled_dot_product_attention(q[0], k[0], v[0]), atol=1e-5)
    assert infos[0]["density"] == 1.0
    plan = cache[("adaspa", 0)].plan
    assert torch.allclose(
        outs[1], block_sparse_attention_reference(q[1], k[1], v[1], plan), atol=1e-5
    )
    density = infos[1]["density"]
    assert isinstance(density, torch.Tensor) and density.dim() == 0
    assert math.isclose(float(density), plan.density, rel_tol=1e-6)
    assert 0.4 < float(density) < 0.6
    assert infos[0]["head_density"].shape == (2,) and infos[0]["block"] == 16


def test_layout_change_branches_and_layers_have_their_own_plans():
    method = AdaSpa(dense_steps=0, search_steps=(), block_size=16)
    cond, uncond = {}, {}
    q, k, v = step_inputs(3, 128)
    _, infos = drive(method, q, k, v, TokenLayout(8, 4, 4), range(2), 3, cond)
    assert [i["kind"] for i in infos.values()] == ["search", "reuse"]
    _, infos = drive(method, q, k, v, TokenLayout(8, 4, 4), [1], 3, uncond, branch="uncond")
    assert infos[1]["kind"] == "search"  # the first sparse step of a branch searches
    _, infos = drive(method, q, k, v, TokenLayout(8, 4, 4), [1], 3, cond, layer=1)
    assert infos[1]["kind"] == "search"
    # Same token count, another layout: the plan is not reused.
    _, infos = drive(method, q, k, v, TokenLayout(4, 4, 8), [2], 3, cond)
    assert infos[2]["kind"] == "search"
    assert cond[("adaspa", 0)].key[0] == TokenLayout(4, 4, 8)


def test_single_frame_layout():
    layout = TokenLayout(1, 16, 24)  # an image: 384 tokens, 6 blocks of 64 -> blocks of 32
    q, k, v = structured_qkv(2, 384, 32, sharpness=[1.5, 0.5], seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = AdaSpa(dense_steps=0, search_steps=())
        cache: dict = {}
        outs, infos = drive(method, [q, q], [k, k], [v, v], layout, range(2), 2, cache)
    plan = cache[("adaspa", 0)].plan
    assert plan.block_q == 32 and plan.num_k_blocks == 12
    assert infos[1]["kind"] == "reuse" and float(infos[1]["density"]) < 0.5
    assert torch.isfinite(outs[1]).all()


# --- end to end ------------------------------------------------------------------------------


def test_tiny_wan_generates_with_adaspa(tiny_wan):
    def generate(guidance):
        return tiny_wan(
            prompt="a red ball rolls left",
            num_frames=17,
            height=64,
            width=64,  # 5 x 4 x 4 = 80 tokens -> 5 blocks of 16
            num_inference_steps=4,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        ).frames

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # block shrink, CPU kernel fallback
        with dit_sparse.attached(tiny_wan, "adaspa") as handle:
            latents = generate(5.0)
            first = handle.records()
            handle.reset_stats()
            generate(1.0)  # a new generation starts from an empty cache
            second = handle.records()
            report = handle.report()
    assert torch.isfinite(latents).all()
    for records, branches in ((first, ("cond", "uncond")), (second, ("cond",))):
        kinds = {(r["branch"], r["step"]): set() for r in records}
        for r in records:
            kinds[(r["branch"], r["step"])].add(r["kind"])
        assert {branch for branch, _ in kinds} == set(branches)
        for branch in branches:
            # 4 steps: 0.2 -> 1 dense step; searches at round(0.8) = 1 and round(2.4) = 2.
            assert [kinds[(branch, s)] for s in range(4)] == [
                {"dense"},
                {"search"},
                {"cached-search"},
                {"reuse"},
            ]
        reuse = [r for r in records if r["kind"] == "reuse"]
        assert len(reuse) == len(branches) * 4 and all(r["density"] < 1 for r in reuse)
        assert sum(r["dense_passes"] + r["mass_passes"] for r in reuse) == 0
    assert "cached-search" in report and "1:search 2:cached-search" in report
    assert "coverage" in report and "density" in report
