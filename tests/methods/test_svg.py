import pytest
import torch
from conftest import run_pipe

import dit_sparse
from dit_sparse import BlockPlan, TokenLayout
from dit_sparse.kernels.reference import (
    block_sparse_attention_reference,
    permute_tokens,
    unpermute_tokens,
)
from dit_sparse.methods.base import AttentionCall
from dit_sparse.methods.svg import SPATIAL, TEMPORAL, SparseVideoGen
from dit_sparse.methods.svg_masks import temporal_permutation

RAGGED = [
    TokenLayout(4, 3, 5),  # 15 tokens a frame: blocks of 16 straddle frames
    TokenLayout(5, 4, 6, text_len=7, text_first=True),  # text shifts every block
    TokenLayout(6, 5, 5, text_len=10, text_first=False),
]


def token_coords(layout, t):
    """(is_text, frame, position) of original token ``t``."""
    index = t - layout.video_start
    if not 0 <= index < layout.video_tokens:
        return True, None, None
    return False, index // layout.tokens_per_frame, index % layout.tokens_per_frame


def expected_token_mask(layout, kind, block, band):
    """bool [S, S] in the original order, built from the documented rule with plain loops."""
    frames, per_frame, start = layout.frames, layout.tokens_per_frame, layout.video_start
    order = list(range(layout.seq_len))
    if kind == TEMPORAL:
        later = [start + f * per_frame + p for p in range(per_frame) for f in range(1, frames)]
        order[layout.video_slice] = list(range(start, start + per_frame)) + later
    groups = []
    for first in range(0, layout.seq_len, block):
        members = order[first : first + block]
        text, sink, coords = False, False, []
        for t in members:
            is_text, f, p = token_coords(layout, t)
            text |= is_text
            if not is_text:
                sink |= f == 0
                coords.append(f * per_frame + p if kind == SPATIAL else p * frames + f)
        low, high = (min(coords), max(coords)) if coords else (None, None)
        groups.append((members, text, sink, low, high))
    mask = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
    for rows, q_text, _, q_low, q_high in groups:
        for cols, k_text, k_sink, k_low, k_high in groups:
            near = not (q_text or k_text) and k_low - q_high <= band and q_low - k_high <= band
            if q_text or k_text or k_sink or near:
                mask[torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = True
    return mask


def call_for(layout, **overrides):
    options = dict(layout=layout, layer=3, num_layers=8, step=5, num_steps=10, branch="cond")
    return AttentionCall(cache={}, **(options | overrides))


def synthetic_heads(layout, kinds, dim=32, strength=5.0, seed=0):
    """q, k, v [B, H, S, D]: spatial heads attend within their frame, temporal heads to their
    spatial position in every frame (one-hot q = k per frame or per position)."""
    g = torch.Generator().manual_seed(seed)
    batch, heads = kinds.shape
    assert dim >= layout.frames + layout.tokens_per_frame
    q = 0.1 * torch.randn(batch, heads, layout.seq_len, dim, generator=g)
    v = torch.randn(batch, heads, layout.seq_len, dim, generator=g)
    index = torch.arange(layout.video_tokens)
    tokens = layout.video_start + index
    frame_code = index // layout.tokens_per_frame
    position_code = layout.frames + index % layout.tokens_per_frame
    for b in range(batch):
        for h in range(heads):
            code = position_code if kinds[b, h] == TEMPORAL else frame_code
            q[b, h, tokens, code] += strength
    return q, q.clone(), v


def test_temporal_permutation_groups_positions_and_inverts_exactly():
    layout = TokenLayout(5, 3, 4, text_len=6, text_first=True)
    perm = temporal_permutation(layout)
    assert torch.equal(perm.sort().values, torch.arange(layout.seq_len))
    per_frame, start = layout.tokens_per_frame, layout.video_start
    # Text and frame 0 keep their places.
    assert torch.equal(perm[: start + per_frame], torch.arange(start + per_frame))
    # Then each position's frames 1..4 are consecutive.
    later = perm[start + per_frame :] - start
    assert torch.equal(
        later.view(per_frame, 4) % per_frame, torch.arange(12)[:, None].expand(-1, 4)
    )
    assert torch.equal(later.view(per_frame, 4) // per_frame, torch.arange(1, 5).expand(12, -1))

    masks = SparseVideoGen().masks(layout)
    kinds = torch.tensor([[SPATIAL, TEMPORAL, TEMPORAL], [TEMPORAL, SPATIAL, SPATIAL]])
    plan = masks.plan(kinds)
    # Two shared plans, picked per head by kind; one shared permutation, used by the temporal.
    assert plan.perm.shape == (1, 1, layout.seq_len) and plan.kv_counts.shape[:2] == (1, 2)
    assert torch.equal(plan.head_plans, kinds)
    assert torch.equal(plan.expanded().permuted, kinds == TEMPORAL)
    assert torch.equal(plan.expanded().kv_counts, masks.kv_counts[0][kinds])
    head_perms = plan.head_perms()
    assert head_perms.shape == (2, 3, layout.seq_len)
    assert torch.equal(head_perms[0, 0], torch.arange(layout.seq_len))
    assert torch.equal(head_perms[1, 0], perm) and torch.equal(head_perms[0, 2], perm)
    x = torch.randn(2, 3, layout.seq_len, 8)
    permuted = permute_tokens(x, head_perms)
    assert not torch.equal(permuted, x)
    assert torch.equal(unpermute_tokens(permuted, head_perms), x)


@pytest.mark.parametrize("layout", [TokenLayout(5, 4, 4), TokenLayout(5, 4, 4, text_len=8)])
def test_synthetic_heads_are_classified_per_batch_element(layout):
    kinds = torch.tensor([[SPATIAL, TEMPORAL, SPATIAL], [TEMPORAL, SPATIAL, TEMPORAL]])
    q, k, v = synthetic_heads(layout, kinds)
    method = SparseVideoGen()
    assert torch.equal(method.classify(q, k, v, layout), kinds)
    errors = method.sampled_errors(q, k, v, layout)
    chosen = errors.gather(-1, kinds[..., None])[..., 0]
    other = errors.gather(-1, 1 - kinds[..., None])[..., 0]
    assert (other > 20 * chosen).all()
    # One kernel call runs both kinds, per batch element, in the original order.
    masks = method.masks(layout)
    expected = torch.stack(
        [expected_token_mask(layout, kind, masks.block, masks.band) for kind in (SPATIAL, TEMPORAL)]
    )
    plan = BlockPlan.from_block_mask(expected[kinds], 1, 1, layout.seq_len)
    call = call_for(layout)
    out = method.attend(q, k, v, call)
    assert (out - block_sparse_attention_reference(q, k, v, plan)).abs().max() < 1e-5
    assert call.info["temporal_heads"].item() == 1.5


def test_sampled_errors_compare_masked_softmax_outputs_with_exact_ones():
    layout = RAGGED[1]
    method = SparseVideoGen(density=0.3, block_size=16, num_sampled_rows=8)
    masks = method.masks(layout)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, layout.seq_len, 16, generator=g) for _ in range(3))
    errors = method.sampled_errors(
        q, k, v, layout, scale=0.3, generator=torch.Generator().manual_seed(5)
    )
    rows = method.sample_rows(layout, "cpu", torch.Generator().manual_seed(5))
    q, k, v = q.double(), k.double(), v.double()
    scores = 0.3 * q[:, :, rows] @ k.transpose(-1, -2)
    exact = scores.softmax(-1) @ v
    for kind in (SPATIAL, TEMPORAL):
        keep = expected_token_mask(layout, kind, masks.block, masks.band)[rows]
        masked = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
        expected = (masked - exact).square().mean((-1, -2))
        assert torch.allclose(errors[..., kind], expected.float(), rtol=1e-4, atol=1e-7)
    assert (errors > 0).all()


def test_sampled_rows_cover_the_whole_video():
    layout = TokenLayout(21, 30, 52, text_len=100, text_first=True)
    method = SparseVideoGen()
    rows = method.sample_rows(layout, "cpu", torch.Generator().manual_seed(3))
    stratum = layout.video_tokens / 64
    strata = torch.arange(64)
    assert rows.shape == (64,)
    assert ((rows - layout.video_start) // stratum == strata).all()  # one row in each 64th
    other = method.sample_rows(layout, "cpu", torch.Generator().manual_seed(4))
    assert not torch.equal(rows, other)
    # Fewer video tokens than rows: every video token once.
    small = TokenLayout(2, 4, 4, text_len=5)
    assert torch.equal(method.sample_rows(small, "cpu", None), torch.arange(32))


@pytest.mark.parametrize("layout", RAGGED)
@pytest.mark.parametrize("density", [0.3, 0.6])
def test_output_equals_reference_with_explicit_token_masks(layout, density, monkeypatch):
    method = SparseVideoGen(density=density, block_size=16)
    masks = method.masks(layout)
    expected = torch.stack(
        [expected_token_mask(layout, kind, masks.block, masks.band) for kind in (SPATIAL, TEMPORAL)]
    )
    # The rows profiled see exactly the masks the kernel runs.
    rows = torch.arange(layout.seq_len)
    assert torch.equal(masks.token_masks(rows), expected)

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, layout.seq_len, 16, generator=g) for _ in range(3))
    chosen = []
    profile = method._profile

    def spy(*args, **kwargs):
        chosen.append(profile(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(method, "_profile", spy)
    call = call_for(layout, scale=0.2)
    out = method.attend(q, k, v, call)
    ((_, kinds, temporal),) = chosen
    assert float(temporal) == kinds.sum().item()
    token_mask = expected[kinds]  # [B, H, S, S], original order
    reference = block_sparse_attention_reference(
        q, k, v, BlockPlan.from_block_mask(token_mask, 1, 1, layout.seq_len), scale=0.2
    )
    assert (out - reference).abs().max() < 1e-5
    assert call.info["kind"] == "svg"
    assert call.info["density"].item() == pytest.approx(token_mask.float().mean().item(), abs=1e-6)
    assert call.info["temporal_heads"].item() == pytest.approx(kinds.float().sum().item() / 2)
    assert call.info["density"].item() < 1.0


def test_density_of_mixed_kinds_is_the_mean_of_their_densities():
    masks = SparseVideoGen(density=0.3, block_size=16).masks(TokenLayout(6, 5, 5))
    assert masks.densities[0] != masks.densities[1]
    kinds = torch.tensor([[0, 1, 1], [0, 0, 1]])
    expected = masks.densities[kinds].mean()
    assert float(masks.density(kinds)) == pytest.approx(float(expected), rel=1e-6)
    temporal = kinds.sum(dtype=torch.float32)
    assert float(masks.density_of(temporal, kinds.numel())) == pytest.approx(float(expected))


def test_kinds_follow_position_and_frame_on_aligned_layout():
    # 16 tokens a frame and 16 later frames: a spatial block is one frame, a temporal block one
    # spatial position in frames 1..16. The smallest band keeps just the block itself.
    layout = TokenLayout(17, 4, 4)
    masks = SparseVideoGen(density=0.01).masks(layout)
    assert masks.block == 16 and masks.band == 0
    spatial, temporal = masks.token_masks(torch.arange(layout.seq_len))
    frame = torch.arange(layout.seq_len) // 16
    position = torch.arange(layout.seq_len) % 16
    sink = (frame == 0)[None, :]
    later_rows = (frame > 0)[:, None]
    same_frame = frame[:, None] == frame[None, :]
    same_position = position[:, None] == position[None, :]
    assert torch.equal(spatial, same_frame | sink)
    assert torch.equal(temporal[frame > 0], (same_position | sink)[frame > 0])
    # Frame-0 queries of a temporal head span coordinates 0 .. 15 * 17: positions 0..14 in every
    # frame (position 15 of frame 1 is coordinate 15 * 17 + 1, just past a band of 0).
    assert temporal[:16, position < 15].all()
    assert not temporal[:16, (position == 15) & (frame > 0)].any()
    assert not (temporal & ~same_position & ~sink & later_rows).any()


@pytest.mark.parametrize("text_first", [True, False])
def test_text_rows_and_columns_are_dense_in_both_kinds(text_first):
    layout = TokenLayout(6, 4, 8, text_len=40, text_first=text_first)
    masks = SparseVideoGen(density=0.05, block_size=16).masks(layout)
    token_masks = masks.token_masks(torch.arange(layout.seq_len))
    text = layout.text_slice
    assert token_masks[:, text].all() and token_masks[:, :, text].all()
    assert not token_masks[:, layout.video_slice, layout.video_slice].all()


def test_band_follows_density():
    layout = TokenLayout(21, 15, 26)  # Wan 480p's 21 frames, 390 tokens a frame
    densities = []
    for density in (0.15, 0.25, 0.3, 0.5):
        masks = SparseVideoGen(density=density).masks(layout)
        assert masks.block == 128
        densities.append(masks.densities.mean().item())
        # A band one block wider or narrower moves the density by about 2 / 64 blocks.
        assert densities[-1] == pytest.approx(density, abs=0.02)
    assert densities == sorted(densities)


def test_small_frames_shrink_the_block_with_a_warning():
    with pytest.warns(UserWarning, match="blocks of 16"):
        masks = SparseVideoGen(block_size=32).masks(TokenLayout(5, 4, 4))
    assert masks.block == 16
    assert SparseVideoGen().masks(TokenLayout(9, 8, 8)).block == 64
    assert SparseVideoGen().masks(TokenLayout(3, 30, 52)).block == 128


def test_one_frame_layout_and_bad_options_raise():
    with pytest.raises(ValueError, match="adaspa"):
        SparseVideoGen().check_layout(TokenLayout(1, 8, 8))
    with pytest.raises(ValueError, match="density"):
        SparseVideoGen(density=0.0)
    with pytest.raises(ValueError, match="power of two"):
        SparseVideoGen(block_size=48)
    with pytest.raises(ValueError, match="num_sampled_rows"):
        SparseVideoGen(num_sampled_rows=0)


def test_masks_are_cached_per_layout_until_reset():
    method = SparseVideoGen()
    layouts = [TokenLayout(5, 4, 4, text_len=n) for n in range(9)]
    first = method.masks(layouts[0])
    assert method.masks(layouts[0]) is first
    for layout in layouts[1:]:  # the 9th layout pushes the least recently used one out
        method.masks(layout)
    assert method.masks(layouts[0]) is not first
    recent = method.masks(layouts[8])
    assert method.masks(layouts[8]) is recent
    method.reset()
    assert method.masks(layouts[8]) is not recent


def test_tiny_wan_generates_with_svg(tiny_wan):
    dense = run_pipe(tiny_wan, steps=3, frames=17, height=64, width=64)
    with dit_sparse.attached(tiny_wan, "svg") as handle:
        video = run_pipe(tiny_wan, steps=3, frames=17, height=64, width=64)
        records = handle.records()
        report = handle.report()
    assert torch.isfinite(video).all() and video.shape == dense.shape
    assert (video - dense).abs().max() > 1e-4
    # 0.2 of 3 steps rounds to 1 dense step; 0.03 of 4 layers to none.
    assert {r["kind"] for r in records if r["step"] == 0} == {"dense"}
    sparse = [r for r in records if r["step"] > 0]
    assert len(sparse) == 2 * 2 * 4 and {r["kind"] for r in sparse} == {"svg"}
    assert all(0 <= r["temporal_heads"] <= r["heads"] == 4 for r in sparse)
    # 5 latent frames of 4x4 tokens: blocks of 16, spatial 0.36 and temporal 0.52 dense.
    assert all(0.35 < r["density"] < 0.53 for r in sparse)
    assert handle.summary()["mean_density"] < 0.7
    assert "svg head kinds" in report
    split = [line for line in report.splitlines() if line.startswith("transformer") and "%" in line]
    assert len(split) == 4  # steps 1 and 2, cond and uncond
    assert all(len(line.split("%")[1].split()) == 4 for line in split)  # one cell per layer
