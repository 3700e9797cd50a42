import warnings

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from conftest import run_pipe

import dit_sparse
import dit_sparse.methods.radial as radial_module
from dit_sparse import TokenLayout
from dit_sparse.kernels.reference import block_sparse_attention_reference
from dit_sparse.mask_image import draw_block_mask
from dit_sparse.methods import resolve_method
from dit_sparse.methods.base import AttentionCall
from dit_sparse.methods.radial import Radial
from dit_sparse.pipelines.registry import layout_for
from dit_sparse.plan import BlockPlan


def radial_reference(layout, block, decay_factor, model_type, exact_upstream=False):
    """Upstream's ``gen_log_mask_shrinked``, re-derived token by token, one frame pair at a time.

    Each pair's token mask is placed in a zero-padded window that starts at the block holding
    the pair's first token, shrunk to blocks (kept when more than 60% of the non-empty columns
    have more than a third of the block's rows set), and ORed into the result.
    ``exact_upstream``: upstream's window of ``ceil(T / block)`` blocks and rows counted
    against ``block``. Otherwise dit_sparse's rules: the window covers every block the frames
    touch, a ragged last block counts against its real size, the diagonal is always kept.
    """
    frames, tokens = layout.frames, layout.tokens_per_frame
    scale = 2 ** tokens.bit_length()
    n = -(-layout.seq_len // block)
    out = torch.zeros(n, n, dtype=torch.bool)
    index = torch.arange(tokens)
    offset = (index[:, None] - index[None, :]).abs()
    real_sizes = [min(block, layout.seq_len - a * block) for a in range(n)]
    for i in range(frames):
        for j in range(frames):
            d = abs(i - j)
            if model_type == "wan" and j == 0:
                local = torch.ones(tokens, tokens, dtype=torch.bool)
            else:
                group = d.bit_length()
                if d == 0 or (d == 1 and model_type == "hunyuan"):
                    width = tokens
                elif d == 1:
                    width = tokens // 2
                else:
                    width = max(scale / 2**group * decay_factor, block)
                local = offset <= width
                decay_length = scale / 2**group
                if decay_length < block and d % int(block / decay_length) != 0:
                    local = torch.zeros_like(local)
            row, col = layout.video_start + i * tokens, layout.video_start + j * tokens
            rr, rc = row % block, col % block
            if exact_upstream:
                nr = nc = -(-tokens // block)
            else:
                nr, nc = -(-(rr + tokens) // block), -(-(rc + tokens) // block)
            padded = torch.zeros(rr + tokens + block, rc + tokens + block, dtype=torch.bool)
            padded[rr : rr + tokens, rc : rc + tokens] = local
            window = padded[: nr * block, : nc * block].reshape(nr, block, nc, block)
            a, b = row // block, col // block
            rows = torch.tensor(
                [block] * nr if exact_upstream else real_sizes[a : a + nr], dtype=torch.float32
            )
            column_density = window.sum(1) / rows[:, None, None]
            nonzero = (column_density > 0).sum(-1)
            high = (column_density > 1 / 3).sum(-1)
            out[a : a + nr, b : b + nc] |= high / (nonzero + 1e-9) > 0.6
    if not exact_upstream:
        out |= torch.eye(n, dtype=torch.bool)
    text_blocks = torch.arange(layout.seq_len)[layout.text_slice] // block
    out[text_blocks] = True
    out[:, text_blocks] = True
    return out


def call_for(layout, scale=None):
    return AttentionCall(
        layout=layout,
        layer=2,
        num_layers=4,
        step=5,
        num_steps=10,
        branch="cond",
        cache={},
        scale=scale,
    )


# Frames filling whole blocks (T a multiple of the block): upstream's exact construction.
@pytest.mark.parametrize(
    "layout, block, decay_factor, model_type",
    [
        (TokenLayout(6, 8, 16), 128, 0.2, "wan"),
        (TokenLayout(7, 16, 16), 128, 0.95, "hunyuan"),
        (TokenLayout(12, 4, 8), 32, 0.2, "wan"),
        (TokenLayout(17, 4, 8), 16, 0.8, "wan"),
        (TokenLayout(11, 8, 8, text_len=77), 64, 0.95, "hunyuan"),
        (TokenLayout(20, 4, 4), 16, 1.0, "hunyuan"),
    ],
)
def test_mask_equals_upstream_construction_on_whole_block_frames(
    layout, block, decay_factor, model_type
):
    method = Radial(block_size=block, decay_factor=decay_factor, model_type=model_type)
    mask = method.block_mask(layout)
    assert torch.equal(mask, radial_reference(layout, block, decay_factor, model_type))
    expected = radial_reference(layout, block, decay_factor, model_type, exact_upstream=True)
    assert torch.equal(mask, expected)
    assert 0.1 < mask.float().mean() < 1.0


# Frames straddling blocks, ragged ends, text first/last: the derivation with the spill judged.
@pytest.mark.parametrize(
    "layout, block, decay_factor, model_type",
    [
        (TokenLayout(5, 5, 7), 32, 0.2, "wan"),
        (TokenLayout(9, 6, 9), 32, 0.8, "wan"),
        (TokenLayout(6, 10, 13), 128, 0.2, "wan"),
        (TokenLayout(7, 5, 5, text_len=9), 16, 0.95, "hunyuan"),
        (TokenLayout(10, 4, 5, text_len=20, text_first=True), 16, 0.2, "wan"),
        (TokenLayout(6, 12, 12, text_len=37, text_first=True), 64, 1.0, "hunyuan"),
    ],
)
def test_mask_equals_derivation_on_unaligned_layouts(layout, block, decay_factor, model_type):
    method = Radial(block_size=block, decay_factor=decay_factor, model_type=model_type)
    mask = method.block_mask(layout)
    assert torch.equal(mask, radial_reference(layout, block, decay_factor, model_type))
    # dit_sparse's rules only ever add blocks to upstream's.
    upstream = radial_reference(layout, block, decay_factor, model_type, exact_upstream=True)
    assert torch.equal(mask | upstream, mask)


def test_ragged_tail_attends_where_upstream_leaves_it_nothing():
    # Frame 1 is tokens 100..199 and block 3 holds its last 8. Upstream's window for frame 1
    # (blocks 1, 2) misses block 3, and even judged, 8 rows are under a third of 64.
    layout = TokenLayout(2, 10, 10)
    upstream = radial_reference(layout, 64, 0.2, "wan", exact_upstream=True)
    assert not upstream[3].any()
    mask = Radial(block_size=64).block_mask(layout)
    # Block 3 attends like the rest of frame 1: the sink (blocks 0, 1) and its own frame.
    assert mask[3].tolist() == [True, True, True, True]


def test_frames_under_a_third_of_a_block_still_attend_to_their_own_block():
    # 4-token frames in 16-token blocks: no frame pair has more than 16 / 3 rows in blocks
    # 0 and 1; the ragged block 2 is frame 8 alone (4 of its 4 tokens), so it keeps the sink.
    layout = TokenLayout(9, 2, 2)
    mask = Radial().block_mask(layout)
    assert mask.int().tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert torch.equal(mask, radial_reference(layout, 16, 0.2, "wan"))


def test_tiny_layouts_shrink_the_block_and_match_the_hand_derived_frame_mask():
    # tiny-wan at 33x128x128 pixels: 9 frames of 8x8 tokens -> 64-token blocks, one per frame.
    # Bands: 64 tokens per frame, P = 128; the band outgrows the split threshold (64) only up
    # to distance 1, so distances 2-3 keep every 2nd, 4-7 every 4th, 8 every 8th: {0, 1, 2, 4, 8}.
    layout = TokenLayout(9, 8, 8)
    kept_distances = {0, 1, 2, 4, 8}
    frame = range(9)
    hunyuan = torch.tensor([[abs(i - j) in kept_distances for j in frame] for i in frame])
    wan = hunyuan.clone()
    wan[:, 0] = True  # attention sink
    assert Radial().block_size_for(layout) == 64
    assert torch.equal(Radial().block_mask(layout), wan)
    assert torch.equal(Radial(model_type="hunyuan").block_mask(layout), hunyuan)
    assert Radial().density(layout) == pytest.approx(wan.float().mean().item())
    # GPU layouts keep 128-token blocks.
    assert Radial().block_size_for(TokenLayout(21, 30, 52)) == 128
    assert Radial().block_size_for(TokenLayout(21, 45, 80)) == 128


def test_tiny_block_warns_once_per_frame_size():
    with pytest.warns(UserWarning, match="frames of 48 tokens.*using 32-token blocks"):
        assert Radial().block_size_for(TokenLayout(3, 6, 8)) == 32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Radial().block_mask(TokenLayout(5, 8, 6)).shape == (8, 8)
    assert not caught


@pytest.mark.parametrize("model_type", ["wan", "hunyuan"])
def test_density_falls_as_frames_double(model_type):
    method = Radial(model_type=model_type)
    densities = [method.density(TokenLayout(f, 30, 52)) for f in (6, 11, 21, 41, 81)]
    assert all(b < a for a, b in zip(densities, densities[1:])), densities
    # O(n log n): far below the O(n^2) of dense at 81 frames, and density x frames grows.
    assert densities[-1] < 0.2
    products = [d * f for d, f in zip(densities, (6, 11, 21, 41, 81))]
    assert all(b > a for a, b in zip(products, products[1:])), products
    if model_type == "wan":  # a pin on the closed-form mask at Wan2.1 480p, 81 frames
        assert densities[2] == pytest.approx(0.3203, abs=1e-4)


def test_block_mask_is_cached_per_layout(monkeypatch):
    builds = []
    build = radial_module._radial_block_mask
    monkeypatch.setattr(
        radial_module, "_radial_block_mask", lambda *a: builds.append(a) or build(*a)
    )
    method = Radial()
    layout = TokenLayout(21, 45, 80)  # Wan2.1-14B 720p, 81 frames: 75,600 tokens
    mask = method.block_mask(layout)
    assert mask.shape == (591, 591)
    plan = method.plan(layout)
    assert method.plan(layout) is plan and torch.equal(method.block_mask(layout), mask)
    assert plan.kv_counts.shape == (1, 1, 591) and torch.equal(plan.to_block_mask()[0, 0], mask)
    assert method.density(layout) == pytest.approx(plan.density, abs=1e-6)
    assert len(builds) == 1
    method.reset()
    method.block_mask(layout)
    assert len(builds) == 2


@pytest.mark.parametrize(
    "layout",
    [TokenLayout(5, 6, 9), TokenLayout(4, 6, 7, text_len=19, text_first=True)],
)
def test_attend_equals_reference_with_an_independent_plan(layout):
    torch.manual_seed(0)
    method = Radial(block_size=32)
    q, k, v = (torch.randn(2, 3, layout.seq_len, 16) for _ in range(3))
    assert layout.seq_len % 32  # ragged last block
    call = call_for(layout, scale=0.3)
    out = method.attend(q, k, v, call)
    mask = radial_reference(layout, 32, 0.2, "wan")
    plan = BlockPlan.from_block_mask(mask, 32, 32, layout.seq_len)
    expected = block_sparse_attention_reference(q, k, v, plan, scale=0.3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # And the same as dense attention with the token-level mask.
    blocks = torch.arange(layout.seq_len) // 32
    token_mask = mask[blocks][:, blocks]
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=token_mask, scale=0.3)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)
    assert call.info["kind"] == "radial"
    assert isinstance(call.info["density"], float)
    assert (
        call.info["density"] == pytest.approx(plan.density, abs=1e-6) and call.info["density"] < 1
    )
    with pytest.raises(ValueError, match="tokens but the layout"):
        method.attend(q[:, :, :-1], k[:, :, :-1], v[:, :, :-1], call)


@pytest.mark.parametrize("text_first", [True, False])
def test_text_blocks_are_dense_rows_and_columns(text_first):
    layout = TokenLayout(12, 4, 8, text_len=40, text_first=text_first)
    mask = Radial(block_size=32).block_mask(layout)
    has_text = torch.zeros(mask.shape[0], dtype=torch.bool)
    has_text[torch.arange(layout.seq_len)[layout.text_slice] // 32] = True
    assert has_text.sum() == 2  # 40 text tokens over 2 of the 14 blocks (424 tokens)
    assert mask[has_text].all() and mask[:, has_text].all()
    assert not mask[~has_text][:, ~has_text].all()
    assert torch.equal(mask, radial_reference(layout, 32, 0.2, "wan"))


def test_one_frame_layout_raises_a_clear_error():
    with pytest.raises(ValueError, match=r"Radial needs >= 2 frames.*for images use adaspa"):
        Radial().check_layout(TokenLayout(1, 30, 52))
    with pytest.raises(ValueError, match="needs >= 2 frames"):
        Radial().block_mask(TokenLayout(1, 8, 8, text_len=10))
    with pytest.raises(TypeError, match="TokenLayout"):
        Radial().block_mask((21, 30, 52))


def test_options_defaults_and_validation():
    method = resolve_method("radial", decay_factor=0.95, model_type="hunyuan", dense_layers=0)
    assert isinstance(method, dit_sparse.Radial)
    assert Radial().options() == {
        "dense_steps": 0.24,
        "dense_final_steps": 0,
        "dense_layers": 1,
        "precision": "bf16",
        "dense_precision": "model",
        "decay_factor": 0.2,
        "block_size": 128,
        "model_type": "wan",
    }
    for bad in (
        {"block_size": 96},
        {"block_size": 8},
        {"decay_factor": 0.0},
        {"model_type": "cog"},
    ):
        with pytest.raises(ValueError):
            Radial(**bad)


def test_tiny_wan_generates_sparse_with_radial(tiny_wan):
    # 17 frames 64x64: 5 latent frames of 4x4 tokens -> 16-token blocks, mask 22/25 dense
    # (distance 3 drops, except into the sink). 0.24 of 3 steps = step 0 dense; layer 0 dense.
    size = {"steps": 3, "frames": 17, "height": 64, "width": 64, "guidance": 1.0}
    dense = run_pipe(tiny_wan, **size)
    handle = dit_sparse.apply(tiny_wan, "radial")
    try:
        video = run_pipe(tiny_wan, **size)
        records = handle.records()
        report = handle.report()
    finally:
        dit_sparse.remove(tiny_wan)
    sparse = [r for r in records if r["kind"] == "radial"]
    assert {(r["step"], r["layer"]) for r in sparse} == {(s, n) for s in (1, 2) for n in (1, 2, 3)}
    assert all(r["density"] == pytest.approx(22 / 25) for r in sparse)
    assert all(r["density"] == 1.0 for r in records if r["kind"] == "dense")
    assert "radial density by latent frames" in report and "5 -> 0.880 (run) | 10 -> " in report
    assert torch.isfinite(video).all()
    difference = (video - dense).abs()
    assert 1e-5 < difference.mean() < 0.02 and difference.max() < 0.1


def test_layout_for_wan_pixel_sizes():
    assert layout_for("wan", 81, 480, 832) == TokenLayout(21, 30, 52)
    assert layout_for("wan", 81, 720, 1280).seq_len == 75_600
    assert layout_for("wan", 17, 64, 64, text_len=8, text_first=True) == TokenLayout(
        5, 4, 4, text_len=8, text_first=True
    )
    with pytest.raises(ValueError, match="4\\*n \\+ 1"):
        layout_for("wan", 80, 480, 832)
    with pytest.raises(ValueError, match="accepted: wan"):
        layout_for("sora", 81, 480, 832)


def test_draw_block_mask_writes_a_png_atomically(tmp_path):
    layout = layout_for("wan", 81, 480, 832)
    method = Radial()
    mask = method.block_mask(layout)
    path = draw_block_mask(
        mask,
        tmp_path / "radial.png",
        f"radial, wan {layout.describe()}",
        density=method.density(layout),
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["radial.png"]
    image = matplotlib.image.imread(path)
    assert min(image.shape[:2]) > 256  # at least one pixel per block
    # Both kept (dark blue) and skipped (white) blocks are drawn.
    rgb = torch.from_numpy(image[..., :3].copy())
    assert (rgb.min(-1).values > 0.98).any()
    kept_color = torch.tensor([0x1F, 0x3B, 0x73]) / 255
    assert ((rgb - kept_color).abs().max(-1).values < 0.02).any()
    with pytest.raises(TypeError, match="2-d bool tensor"):
        draw_block_mask(mask.float(), tmp_path / "x.png", "float")
