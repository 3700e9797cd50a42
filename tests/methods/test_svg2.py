import pytest
import torch
import torch.nn.functional as F
from conftest import run_pipe

import dit_sparse
from dit_sparse import TokenLayout
from dit_sparse.kernels import block_sparse_attention, reference
from dit_sparse.kernels.reference import permute_tokens, unpermute_tokens
from dit_sparse.methods.base import AttentionCall
from dit_sparse.methods.svg2 import SparseVideoGen2
from dit_sparse.methods.svg2_clusters import (
    ClusterOrder,
    KMeansResult,
    cluster_map,
    cluster_probabilities,
    initial_centroids,
    kmeans,
)

SCALE = 0.25


def call_for(layout, cache, step=0, layer=0, branch="cond"):
    return AttentionCall(layout, layer, 4, step, 10, branch, cache)


def random_qkv(layout, seed, batch=1, heads=2, dim=16):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, layout.seq_len, dim, generator=g) for _ in range(3)]


def sparse(**options):
    return SparseVideoGen2(dense_steps=0, dense_layers=0, **options)


def given_clusters(groups, seq_len, clusters, dim, seed):
    """A `KMeansResult` with random labels (every cluster used) and random centroids."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(clusters, (groups, seq_len), generator=g)
    labels[:, :clusters] = torch.arange(clusters)
    sizes = torch.stack([torch.bincount(row, minlength=clusters) for row in labels])
    centroids = torch.randn(groups, clusters, dim, generator=g) * 2.0
    return KMeansResult(labels, centroids, sizes)


def reference_top_p(row, top_p, min_keep):
    """Indices of float64 ``row`` kept, largest first until they cover ``top_p`` (and at
    least ``min_keep`` of them), ties by index."""
    kept, covered = [], 0.0
    for rank, j in enumerate(sorted(range(len(row)), key=lambda j: (-row[j].item(), j))):
        if covered >= top_p and rank >= min_keep:
            break
        kept.append(j)
        covered += row[j].item()
    return kept


def reference_kept(q, k, top_p, min_keep):
    """bool [G, Cq, Ck] in float64, one query cluster at a time."""
    groups, q_clusters, _ = q.centroids.shape
    kept = torch.zeros(groups, q_clusters, k.centroids.shape[1], dtype=torch.bool)
    for g in range(groups):
        for c in range(q_clusters):
            scores = k.centroids[g].double() @ q.centroids[g, c].double() * SCALE
            weights = k.sizes[g].double() * torch.exp(scores - scores.max())
            kept[g, c, reference_top_p(weights / weights.sum(), top_p, min_keep)] = True
    return kept


def reference_block_mask(kept, q_perm, k_perm, q_labels, k_labels, block):
    """bool [G, nq, nk]: for every kept pair, the blocks its tokens sit in, pair by pair."""
    groups, seq_len = q_perm.shape
    blocks = -(-seq_len // block)
    mask = torch.zeros(groups, blocks, blocks, dtype=torch.bool)
    for g in range(groups):
        q_position = {c: [] for c in range(kept.shape[1])}
        k_position = {c: [] for c in range(kept.shape[2])}
        for p in range(seq_len):
            q_position[q_labels[g, q_perm[g, p]].item()].append(p)
            k_position[k_labels[g, k_perm[g, p]].item()].append(p)
        for cq, ck in kept[g].nonzero().tolist():
            for i in {p // block for p in q_position[cq]}:
                for j in {p // block for p in k_position[ck]}:
                    mask[g, i, j] = True
    return mask


def contiguous(order, labels):
    """Whether each cluster's tokens are one run of the sorted order."""
    sorted_labels = labels.gather(1, order.perm)
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[:, 1:] = sorted_labels[:, 1:] != sorted_labels[:, :-1]
    return all(
        row[start].unique().numel() == start.sum() for row, start in zip(sorted_labels, starts)
    )


@pytest.mark.parametrize("order_keys", [False, True])
@pytest.mark.parametrize(("top_p", "min_kc_ratio"), [(0.5, 0.0), (0.8, 0.25)])
def test_plan_from_given_centroids_equals_a_float64_reference(order_keys, top_p, min_kc_ratio):
    batch, heads, seq_len = 2, 3, 150  # 150 tokens: a ragged last block of 16
    q = given_clusters(batch * heads, seq_len, 7, 8, seed=1)
    k = given_clusters(batch * heads, seq_len, 11, 8, seed=2)
    method = sparse(top_p=top_p, min_kc_ratio=min_kc_ratio, block_size=16, selection="clusters")
    method.order_key_clusters = order_keys
    arranged = method.arrange(q, k, batch, SCALE)
    expected_kept = reference_kept(q, k, top_p, int(min_kc_ratio * 11))
    assert torch.equal(arranged.kept, expected_kept)
    for order, result in ((arranged.q_order, q), (arranged.k_order, k)):
        assert torch.equal(order.perm.sort(-1).values, torch.arange(seq_len).expand(6, -1))
        assert torch.equal(order.labels, result.labels.gather(1, order.perm))
        assert contiguous(order, result.labels)
    if not order_keys:  # clusters by id: labels non-decreasing
        assert (arranged.k_order.labels.diff(dim=-1) >= 0).all()
    expected = reference_block_mask(
        expected_kept, arranged.q_order.perm, arranged.k_order.perm, q.labels, k.labels, 16
    )
    plan = arranged.plan
    assert (plan.batch, plan.heads, plan.block_q, plan.block_k) == (batch, heads, 16, 16)
    assert torch.equal(plan.to_block_mask().view(6, 10, 10), expected)
    assert 0 < plan.density < 1


def reference_block_selection(q, k, q_perm, k_perm, top_p, min_keep, block):
    """bool [G, nq, nk] in float64: the cluster estimate summed token by token over each
    (query block, key block), a key cluster's share split evenly over its tokens, then the
    fewest key blocks per query block covering top_p of the row."""
    groups, seq_len = q_perm.shape
    blocks = -(-seq_len // block)
    mask = torch.zeros(groups, blocks, blocks, dtype=torch.bool)
    for g in range(groups):
        scores = q.centroids[g].double() @ k.centroids[g].double().T * SCALE
        weights = k.sizes[g].double() * torch.exp(scores - scores.amax(-1, keepdim=True))
        probs = weights / weights.sum(-1, keepdim=True)
        per_token = probs / k.sizes[g].double()  # [Cq, Ck]: one key token of each cluster
        q_of = q.labels[g][q_perm[g]]
        k_of = k.labels[g][k_perm[g]]
        mass = torch.zeros(blocks, blocks, dtype=torch.float64)
        for p in range(seq_len):
            for r in range(seq_len):
                mass[p // block, r // block] += per_token[q_of[p], k_of[r]]
        for i in range(blocks):
            mask[g, i, reference_top_p(mass[i] / mass[i].sum(), top_p, min_keep)] = True
    return mask


@pytest.mark.parametrize(("top_p", "min_kc_ratio"), [(0.4, 0.0), (0.8, 0.3)])
def test_block_selection_equals_a_float64_reference(top_p, min_kc_ratio):
    batch, heads, seq_len = 2, 2, 120  # blocks of 16, the last one ragged
    q = given_clusters(batch * heads, seq_len, 6, 8, seed=11)
    k = given_clusters(batch * heads, seq_len, 13, 8, seed=12)
    method = sparse(top_p=top_p, min_kc_ratio=min_kc_ratio, block_size=16)
    assert method.selection == "blocks"  # the default
    arranged = method.arrange(q, k, batch, SCALE)
    expected = reference_block_selection(
        q, k, arranged.q_order.perm, arranged.k_order.perm, top_p, int(min_kc_ratio * 8), 16
    )
    assert torch.equal(arranged.plan.to_block_mask().view(4, 8, 8), expected)
    assert 0 < arranged.plan.density < 1


def test_key_cluster_order_lowers_block_density_on_clustered_keys():
    # Keys and queries in 6 well separated groups; each query cluster keeps its group's keys.
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 16, generator=g) * 6
    x = centers[torch.randint(6, (1, 960), generator=g)] + torch.randn(1, 960, 16, generator=g)
    q = kmeans(x, x[:, torch.arange(0, 960, 160)], 10)
    k = kmeans(x, x[:, torch.arange(0, 960, 40)], 10)
    options = dict(top_p=0.5, min_kc_ratio=0, block_size=32, selection="clusters")
    by_id = sparse(order_key_clusters=False, **options)
    ordered = sparse(**options)
    scale = 16**-0.5
    kept = by_id.arrange(q, k, 1, scale).kept
    assert torch.equal(ordered.arrange(q, k, 1, scale).kept, kept)
    assert ordered.arrange(q, k, 1, scale).plan.density < by_id.arrange(q, k, 1, scale).plan.density


@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9])
def test_top_p_keeps_the_fewest_key_clusters_covering_the_share(top_p):
    q = given_clusters(4, 200, 9, 8, seed=3)
    k = given_clusters(4, 200, 23, 8, seed=4)
    probs = cluster_probabilities(q.centroids, k.centroids, k.sizes, SCALE).double()
    assert torch.allclose(probs.sum(-1), torch.ones(4, 9, dtype=torch.float64))
    kept = cluster_map(probs.float(), top_p)
    covered = (probs * kept).sum(-1)
    smallest = torch.where(kept, probs, torch.inf).amin(-1)
    assert (covered >= top_p - 1e-6).all()  # the stated share of the estimated attention ...
    assert (covered - smallest < top_p).all()  # ... and no key cluster more than needed
    # Every kept cluster has at least the estimated attention of any dropped one.
    assert (smallest >= torch.where(kept, -torch.inf, probs).amax(-1) - 1e-7).all()
    # min_keep: at least that many per row, the largest ones.
    floor = cluster_map(probs.float(), top_p, min_keep=12)
    assert (floor.sum(-1) >= 12).all() and (floor >= kept).all()
    assert cluster_map(probs.float(), 1.0).all()


def test_cluster_probabilities_weight_key_clusters_by_size():
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    sizes = torch.tensor([[3, 1, 0]])  # the third cluster is empty: no attention, however close
    probs = cluster_probabilities(q, k, sizes, 1.0)[0, 0]
    e = torch.exp(torch.tensor(1.0))
    assert torch.allclose(
        probs, torch.stack([3 * e, torch.tensor(1.0), torch.tensor(0.0)]) / (3 * e + 1)
    )


def test_permutation_round_trip_is_exact():
    q = given_clusters(6, 77, 5, 4, seed=5)
    order = ClusterOrder.of(q)
    x = torch.randn(2, 3, 77, 16, dtype=torch.bfloat16)
    perm = order.perm.view(2, 3, 77)
    permuted = permute_tokens(x, perm)
    assert torch.equal(unpermute_tokens(permuted, perm), x)
    # In the sorted order each cluster's rows are consecutive.
    labels = q.labels.view(2, 3, 77).gather(2, perm)
    assert (labels.diff(dim=-1) >= 0).all()
    assert torch.equal(permuted[0, 1, 0], x[0, 1, perm[0, 1, 0]])


def loop_kmeans(x, centroids, iterations):
    """float64 Lloyd iterations, one group and one cluster at a time."""
    centroids = centroids.double().clone()
    for _ in range(iterations):
        labels = torch.cdist(x.double(), centroids).argmin(-1)
        for g in range(x.shape[0]):
            for c in range(centroids.shape[1]):
                members = x[g][labels[g] == c].double()
                if len(members):
                    centroids[g, c] = members.mean(0)
    return labels, centroids


@pytest.mark.parametrize("chunk", [1 << 28, 100])  # one chunk, and chunks of a few tokens
def test_kmeans_equals_a_loop_reference(chunk, monkeypatch):
    monkeypatch.setattr(reference, "_KMEANS_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 90, 16, generator=g)
    start = x[:, :12].clone() + 0.01
    start[:, 11] = 100.0  # far from every vector: stays empty, keeps its centroid
    result = kmeans(x, start, 3)
    labels, centroids = loop_kmeans(x, start, 3)
    assert torch.equal(result.labels, labels)
    assert torch.allclose(result.centroids.double(), centroids, atol=1e-5)
    assert torch.equal(result.sizes, torch.stack([torch.bincount(r, minlength=12) for r in labels]))
    assert (result.sizes[:, 11] == 0).all() and (result.centroids[:, 11] == 100.0).all()


def test_initial_centroids_of_a_head_do_not_depend_on_the_head_split():
    x = torch.randn(2, 4, 50, 8)  # batch 2, 4 heads
    full = initial_centroids(x.reshape(8, 50, 8), 5, torch.Generator().manual_seed(3))
    half = initial_centroids(
        x[:, 2:].reshape(4, 50, 8), 5, torch.Generator().manual_seed(3), heads=(2, 2, 4)
    )
    assert torch.equal(half, full.view(2, 4, 5, 8)[:, 2:].reshape(4, 5, 8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kmeans_in_half_precision_follows_fp32(dtype):
    # Norms of ~1,000: squared centroid norms overflow fp16 (max 65,504); compared in bf16.
    x = torch.randn(2, 300, 16, generator=torch.Generator().manual_seed(13)) * 250
    start = x[:, :10].clone()
    half, full = kmeans(x.to(dtype), start, 1), kmeans(x.to(dtype).float(), start, 1)
    assert torch.isfinite(half.centroids).all()
    assert (half.labels == full.labels).float().mean() > 0.95  # near ties may flip


def test_top_p_one_equals_dense_attention():
    layout = TokenLayout(3, 6, 8)
    q, k, v = random_qkv(layout, 7, batch=2, heads=3)
    call = call_for(layout, {})
    out = sparse(top_p=1.0, q_clusters=10, k_clusters=20, block_size=16).attend(q, k, v, call)
    assert call.info["density"] == pytest.approx(1.0)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() < 1e-5


def test_sparse_output_equals_masked_attention_in_the_original_order():
    layout = TokenLayout(4, 6, 8)
    q, k, v = random_qkv(layout, 8)
    method = sparse(top_p=0.5, q_clusters=6, k_clusters=12, block_size=16)
    call = call_for(layout, {})
    out = method.attend(q, k, v, call)
    # Recluster from the same start to get the plan, then mask token pairs by hand.
    again = method.arrange(*method.cluster(q, k, call_for(layout, {}))[:2], 1, 0.25)
    mask = again.plan.to_block_mask()[0].repeat_interleave(16, 1).repeat_interleave(16, 2)
    q_perm = again.q_order.perm.view(1, 2, -1)
    k_perm = again.k_order.perm.view(1, 2, -1)
    token_mask = torch.zeros(2, layout.seq_len, layout.seq_len, dtype=torch.bool)
    for h in range(2):
        token_mask[h][q_perm[0, h][:, None], k_perm[0, h][None, :]] = mask[h]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask[None])
    assert 0.2 < call.info["density"] < 1
    assert (out - expected).abs().max() < 1e-5


def test_attend_sorts_through_the_plan_as_torch_permutations_did():
    """`attend` hands the kernel q, k, v in their original order with the plan's ``perm``
    (query clusters) and ``key_perm`` (key clusters): the output of sorting q, k, v in torch,
    the plan without permutations, and scattering the output back (batch 2, ragged S)."""
    layout = TokenLayout(3, 5, 7)  # 105 tokens: a ragged last block of 16
    q, k, v = random_qkv(layout, 12, batch=2, heads=3)
    method = sparse(top_p=0.5, q_clusters=6, k_clusters=12, block_size=16)
    call = call_for(layout, {})
    out = method.attend(q, k, v, call)
    again = method.arrange(*method.cluster(q, k, call_for(layout, {}))[:2], 2, SCALE)
    sorting = again.sorting_plan()
    q_perm, k_perm = again.q_order.perm.view(2, 3, -1), again.k_order.perm.view(2, 3, -1)
    assert torch.equal(sorting.perm, q_perm) and torch.equal(sorting.key_perm, k_perm)
    assert not torch.equal(q_perm, k_perm) and again.plan.perm is None
    sorted_out = block_sparse_attention(
        permute_tokens(q, q_perm), permute_tokens(k, k_perm), permute_tokens(v, k_perm),
        again.plan, scale=SCALE,
    )  # fmt: skip
    torch.testing.assert_close(out, unpermute_tokens(sorted_out, q_perm), rtol=0, atol=1e-6)
    assert set(call.info) == {"kind", "density", "cluster_density", "block"}
    assert call.info["kind"] == "svg2-init" and call.info["block"] == 16
    assert float(call.info["density"]) == pytest.approx(again.plan.density)


def test_centroids_warm_start_per_layer_and_branch_until_reset_or_new_layout():
    layout = TokenLayout(3, 4, 8)
    q, k, v = random_qkv(layout, 9)
    method = sparse(q_clusters=5, k_clusters=9, kmeans_iter_init=4, kmeans_iter_step=1)
    cache = {}
    kinds = []
    for step, layer, branch in [(0, 0, "cond"), (0, 1, "cond"), (1, 0, "cond"), (1, 1, "cond")]:
        call = call_for(layout, cache, step, layer, branch)
        method.attend(q, k, v, call)
        kinds.append(call.info["kind"])
    assert kinds == ["svg2-init", "svg2-init", "svg2", "svg2"]
    # A warm step is kmeans_iter_step iterations from the layer's cached centroids.
    state = cache[("svg2", 0)]
    expected = kmeans(k.reshape(2, -1, 16), state.k_centroids, 1)
    method.cluster(q, k, call_for(layout, cache, 2, 0))
    assert torch.equal(cache[("svg2", 0)].k_centroids, expected.centroids)
    other = {}  # another guidance branch has its own cache: it starts over
    call = call_for(layout, other, 2, 0, "uncond")
    method.attend(q, k, v, call)
    assert call.info["kind"] == "svg2-init"
    method.reset()  # what `remove` calls
    call = call_for(layout, cache, 3, 0)
    method.attend(q, k, v, call)
    assert call.info["kind"] == "svg2-init"
    bigger = TokenLayout(4, 4, 8)
    q2, k2, v2 = random_qkv(bigger, 19)
    call = call_for(bigger, cache, 4, 0)
    method.attend(q2, k2, v2, call)
    assert call.info["kind"] == "svg2-init"


def test_zero_step_init_clusters_during_warm_up():
    layout = TokenLayout(3, 4, 8)
    q, k, v = random_qkv(layout, 10)
    method = SparseVideoGen2(dense_steps=1, dense_layers=0, q_clusters=4, k_clusters=8)
    cache = {}
    warm = call_for(layout, cache, 0)
    assert method.runs_dense(warm) and method.attend_dense(q, k, v, warm) is None
    assert cache == {}  # off by default, as in the official scripts
    method.zero_step_kmeans_init = True
    method.dense_layers = 1
    assert method.attend_dense(q, k, v, call_for(layout, cache, 0, layer=0)) is None
    assert cache == {}  # a dense layer never runs sparse: no centroids to warm
    warm = call_for(layout, cache, 0, layer=1)
    assert method.attend_dense(q, k, v, warm) is None and warm.info["kind"] == "dense-kmeans"
    assert ("svg2", 1) in cache
    call = call_for(layout, cache, 1, layer=1)
    method.attend(q, k, v, call)
    assert call.info["kind"] == "svg2"


def test_defaults_and_validation():
    method = dit_sparse.SparseVideoGen2()
    assert (method.q_clusters, method.k_clusters, method.top_p, method.min_kc_ratio) == (
        300,
        1000,
        0.9,
        0.1,
    )
    assert (method.kmeans_iter_init, method.kmeans_iter_step) == (50, 2)
    assert (method.dense_steps, method.dense_layers, method.zero_step_kmeans_init) == (
        0.2,
        0.03,
        False,
    )
    assert method.block_for(32_760) == 128 and method.block_for(192) == 16
    assert (method.selection, method.order_key_clusters) == ("blocks", True)
    bad_options = (dict(top_p=0.0), dict(top_p=1.5), dict(min_kc_ratio=-0.1), dict(q_clusters=0))
    bad_options += (dict(k_clusters=0),)
    for bad in (*bad_options, dict(selection="ranges")):
        with pytest.raises(ValueError):
            SparseVideoGen2(**bad)
    with pytest.raises(ValueError, match="power of two"):
        SparseVideoGen2(block_size=96)


def test_cluster_counts_are_at_most_the_sequence_length():
    method = dit_sparse.SparseVideoGen2()
    assert method.cluster_counts(75_600) == method.cluster_counts(32_760) == (300, 1000)
    assert method.cluster_counts(500) == (300, 500)  # at most one token a cluster
    layout = TokenLayout(3, 6, 8)
    q, k, v = random_qkv(layout, 14)
    q_result, k_result, _ = sparse(q_clusters=2, k_clusters=7).cluster(q, k, call_for(layout, {}))
    assert q_result.centroids.shape[1] == 2 and k_result.centroids.shape[1] == 7


def test_tiny_wan_with_full_plan_reproduces_the_unpatched_pipeline(tiny_wan):
    dense = run_pipe(tiny_wan, steps=2, frames=9)
    full = sparse(top_p=1.0)
    with dit_sparse.attached(tiny_wan, full) as handle:
        video = run_pipe(tiny_wan, steps=2, frames=9)
        records = handle.records()
    assert (video - dense).abs().max() < 1e-4
    assert {r["branch"] for r in records} == {"cond", "uncond"}
    assert all(r["density"] == pytest.approx(1.0) for r in records)


def test_tiny_wan_generates_with_svg2_and_guidance(tiny_wan):
    dense = run_pipe(tiny_wan, steps=3, frames=17, height=64, width=64)
    options = dict(dense_steps=1, top_p=0.3, q_clusters=5, k_clusters=10, min_kc_ratio=0.0)
    with dit_sparse.attached(tiny_wan, "svg2", **options) as handle:
        video = run_pipe(tiny_wan, steps=3, frames=17, height=64, width=64)
        records = handle.records()
        report = handle.report()
    assert torch.isfinite(video).all() and video.shape == dense.shape
    assert "svg2" in report and handle.summary()["mean_density"] < 1
    assert (video - dense).abs().max() > 1e-4
    assert {r["kind"] for r in records if r["step"] == 0} == {"dense"}
    for branch in ("cond", "uncond"):  # centroids per branch: each starts once per layer
        kinds = [(r["step"], r["kind"]) for r in records if r["branch"] == branch]
        assert sorted(kinds) == [(0, "dense")] * 4 + [(1, "svg2-init")] * 4 + [(2, "svg2")] * 4
    assert all(0 < r["density"] < 1 for r in records if r["step"] > 0)
