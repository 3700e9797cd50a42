"""The synthetic shapes world, its motion check, the pixel-space autoencoder and the shipped
``wan-shapes`` model (CPU, small sizes)."""

import re

import numpy as np
import pytest
import torch

import dit_sparse
from dit_sparse.pipelines.loading import load_pipeline
from dit_sparse.pipelines.presets import PRESETS
from dit_sparse.pipelines.shapes import MODEL_DIR, PixelSpaceVideoAutoencoder, load_wan_shapes
from dit_sparse.synthetic import (
    COLOURS,
    ClipAttributes,
    ClipBatch,
    all_attributes,
    check_motion,
    colour_mask,
    evaluate_motion,
    evaluation_prompts,
    parse_prompt,
    pass_rate,
    render_clips,
    sample_clip_batch,
    to_frames,
    vocabulary_size,
)
from dit_sparse.synthetic.attention import AttentionMassProbe, mass_block_share, summarize_probe
from dit_sparse.synthetic.motion import blob_track, unwrapped

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def drawn(count, frames, seed=0, size=64):
    generator = torch.Generator().manual_seed(seed)
    batch = sample_clip_batch(count, generator)
    return batch, to_frames(render_clips(batch, frames, size, size, generator).video)


# --- vocabulary -------------------------------------------------------------------------------


def test_every_prompt_has_an_index_and_parses_back():
    attributes = all_attributes()
    assert len(attributes) == vocabulary_size() == 576
    for index in (0, 1, 137, 575):
        item = attributes[index]
        assert item.index == index
        assert ClipAttributes.from_index(index) == item
        assert parse_prompt(item.prompt) == item
    assert len({a.prompt for a in attributes}) == 576


def test_bad_prompts_and_attributes_are_refused():
    with pytest.raises(ValueError, match="not a shapes prompt"):
        parse_prompt("a red ball rolls left")
    with pytest.raises(ValueError, match="colour must be one of"):
        ClipAttributes("purple", "circle", "left", "slowly", "plain")
    with pytest.raises(ValueError, match="attribute index"):
        ClipAttributes.from_index(576)


def test_evaluation_prompts_cover_colours_and_directions():
    prompts = evaluation_prompts(24)
    pairs = {(parse_prompt(p).colour, parse_prompt(p).direction) for p in prompts}
    assert len(pairs) == 24


# --- clips ------------------------------------------------------------------------------------


def test_clip_batch_index_matches_vocabulary():
    generator = torch.Generator().manual_seed(3)
    batch = sample_clip_batch(16, generator)
    assert [a.index for a in batch.attributes()] == batch.index.tolist()
    again = ClipBatch.from_attributes(batch.attributes())
    assert torch.equal(again.index, batch.index)


def test_render_is_deterministic_and_in_range():
    _, first = drawn(3, 9, seed=5)
    _, second = drawn(3, 9, seed=5)
    assert first.shape == (3, 9, 64, 64, 3)
    assert torch.equal(first, second)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_render_without_shape_draws_the_same_static_background():
    batch, with_shape = drawn(4, 9, seed=6)
    generator = torch.Generator().manual_seed(6)
    sample_clip_batch(4, generator)
    without = to_frames(render_clips(batch, 9, 64, 64, generator, shape=False).video)
    # Nothing moves without the shape; with it, the shape's pixels differ, a small share.
    assert torch.equal(without, without[:, :1].expand_as(without))
    changed = (with_shape - without).abs().amax(-1) > 0
    share = changed.float().mean((2, 3))
    assert float(share.min()) > 0.01 and float(share.max()) < 0.2
    for clip, base, attributes in zip(with_shape, without, batch.attributes()):
        colour = torch.tensor(COLOURS[attributes.colour])
        inside = (clip - colour).abs().amax(-1) < 0.2
        assert bool(inside.any()) and bool(((clip - base).abs().amax(-1) > 0)[inside].all())


def test_shapes_wrap_around_whole_and_start_anywhere():
    generator = torch.Generator().manual_seed(8)
    batch = sample_clip_batch(64, generator)
    video, motion = render_clips(batch, 61, 64, 64, generator)
    coverage = motion.abs().amax(1) > 0  # where the shape is
    # On a torus the shape keeps its whole area every frame, even while it crosses an edge
    # (the field is the constant step times the shape's coverage).
    area = motion.norm(dim=1).sum((2, 3))
    assert float((area / area[:, :1]).sub(1).abs().max()) < 0.02
    # Where a shape starts says nothing of its direction: right movers start on both halves.
    right = torch.tensor([a.direction == "right" for a in batch.attributes()])
    column = coverage[:, 0].float().sum(1).argmax(-1)  # the first frame's fullest column
    assert {bool(c < 32) for c in column[right]} == {True, False}


def test_motion_field_is_the_step_between_frames_on_the_shape():
    generator = torch.Generator().manual_seed(9)
    batch = sample_clip_batch(6, generator)
    video, motion = render_clips(batch, 17, 64, 64, generator)
    assert motion.shape == (6, 2, 17, 64, 64)
    for clip, field, attributes in zip(to_frames(video), motion, batch.attributes()):
        mask = colour_mask(clip, attributes.colour)
        centres, visible = blob_track(mask, 4)
        assert bool(visible.all())
        track = unwrapped(centres, 64, 64)
        moved = (track[-1] - track[0]) / 16
        # Fully covered pixels hold the step itself; the rest a share of it, or nothing.
        flat = field.flatten(1)
        step = flat[:, flat.norm(dim=0).argmax()]
        torch.testing.assert_close(step, moved, atol=0.05, rtol=0)
        share = (step @ flat) / step.square().sum()
        torch.testing.assert_close(flat, step[:, None] * share[None], atol=1e-5, rtol=0)
        assert float(share.min()) >= -1e-6 and float(share.max()) <= 1 + 1e-6
        # ... and the covered area is the shape's, frame by frame.
        covered, shape = share.view(17, 64, 64).sum((1, 2)), mask.float().sum((1, 2))
        assert float(((covered - shape).abs() / shape).max()) < 0.15


def test_unwrapped_takes_the_short_way_round():
    points = torch.tensor([[60.0, 10.0], [63.0, 8.0], [2.0, 6.0], [5.0, 62.0]])
    track = unwrapped(points, 64, 64)
    assert torch.allclose(
        track, torch.tensor([[60.0, 10.0], [63.0, 8.0], [66.0, 6.0], [69.0, -2.0]])
    )


# --- motion check -----------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [17, 61])
def test_check_passes_drawn_clips_and_rejects_wrong_prompts(frames):
    batch, clips = drawn(24, frames, seed=frames)
    prompts = batch.prompts()
    assert pass_rate([check_motion(c, p) for c, p in zip(clips, prompts)]) == 1.0
    flipped = [re.sub(r"moves (\w+)", lambda m: f"moves {OPPOSITE[m[1]]}", p) for p in prompts]
    assert pass_rate([check_motion(c, p) for c, p in zip(clips, flipped)]) == 0.0
    colours = list(COLOURS)
    # Only the shape's colour word: "red" also appears inside "checkered".
    recoloured = [
        re.sub(r"^a (\w+)", lambda m: f"a {colours[(colours.index(m[1]) + 1) % 6]}", p)
        for p in prompts
    ]
    verdicts = [check_motion(c, p) for c, p in zip(clips, recoloured)]
    assert pass_rate(verdicts) == 0.0
    assert all(v.visible_frames == 0 for v in verdicts)


def test_check_rejects_noise_and_still_shapes():
    batch, clips = drawn(8, 17, seed=1)
    prompts = batch.prompts()
    noise = torch.rand(clips.shape, generator=torch.Generator().manual_seed(0))
    assert pass_rate([check_motion(c, p) for c, p in zip(noise, prompts)]) == 0.0
    still = clips[:, :1].expand_as(clips)
    verdicts = [check_motion(c, p) for c, p in zip(still, prompts)]
    assert pass_rate(verdicts) == 0.0
    assert all(v.visible_frames > 0 for v in verdicts)  # seen, but not moving


def test_check_takes_numpy_and_validates_shape():
    batch, clips = drawn(1, 17)
    assert check_motion(clips[0].numpy(), batch.prompts()[0]).passed
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        check_motion(np.zeros((17, 64, 64)), batch.prompts()[0])


# --- autoencoder ------------------------------------------------------------------------------


def test_pixel_autoencoder_round_trips_and_keeps_wan_frame_rule():
    autoencoder = PixelSpaceVideoAutoencoder()
    video = torch.rand(2, 3, 13, 16, 24) * 2 - 1
    latents = autoencoder.encode(video)
    assert latents.shape == (2, 48, 4, 8, 12)  # (13 - 1) / 4 + 1 latent frames
    assert torch.equal(autoencoder.decode(latents, return_dict=False)[0], video)
    with pytest.raises(ValueError, match=r"4\*n \+ 1"):
        autoencoder.encode(video[:, :, :12])
    with pytest.raises(ValueError, match="z_dim"):
        PixelSpaceVideoAutoencoder(z_dim=16)


def test_motion_channels_hold_the_cell_average_of_the_motion_field():
    autoencoder = PixelSpaceVideoAutoencoder(z_dim=50, motion_channels=2)
    video = torch.rand(2, 3, 9, 8, 8) * 2 - 1
    motion = torch.randn(2, 2, 9, 8, 8)
    latents = autoencoder.encode(video, motion)
    assert latents.shape == (2, 50, 3, 4, 4)
    assert autoencoder.pixel_channels == 48
    assert torch.equal(latents[:, :48], PixelSpaceVideoAutoencoder().encode(video))
    # Latent frame 1, cell (row 1, column 2): pixel frames 1-4, rows 2-3, columns 4-5.
    expected = motion[:, :, 1:5, 2:4, 4:6].mean((2, 3, 4))
    assert torch.allclose(latents[:, 48:, 1, 1, 2], expected, atol=1e-6)
    assert torch.allclose(latents[:, 48:, 0, 0, 0], motion[:, :, 0, :2, :2].mean((2, 3)), atol=1e-6)
    assert torch.equal(autoencoder.decode(latents, return_dict=False)[0], video)
    scaled = PixelSpaceVideoAutoencoder(
        z_dim=50, motion_channels=2, latents_mean=[0.5] * 50, latents_std=[0.25] * 50
    )
    torch.testing.assert_close(scaled.normalize(latents), (latents - 0.5) / 0.25)
    torch.testing.assert_close(scaled.denormalize(scaled.normalize(latents)), latents)
    with pytest.raises(ValueError, match="needs motion"):
        autoencoder.encode(video)
    with pytest.raises(ValueError, match="motion_channels must be 0 or 2"):
        PixelSpaceVideoAutoencoder(z_dim=49, motion_channels=1)


# --- attention probe --------------------------------------------------------------------------


def test_mass_share_of_uniform_and_one_hot_attention():
    uniform = torch.zeros(1, 2, 256, 16)
    assert torch.allclose(mass_block_share(uniform, uniform, 64), torch.ones(1, 2))
    q = torch.randn(1, 1, 512, 64, generator=torch.Generator().manual_seed(0)) * 10
    assert torch.allclose(mass_block_share(q, q.clone(), 64), torch.tensor([[1 / 8]]))
    with pytest.raises(ValueError, match="multiple of block"):
        mass_block_share(uniform[:, :, :100], uniform[:, :, :100], 64)


# --- the shipped model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_pipe():
    pipe = load_wan_shapes()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_weights_are_small_and_load_as_preset():
    weights = MODEL_DIR / "transformer" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 40 * 2**20
    assert PRESETS["wan-shapes"].random_weights is False
    pipe = load_pipeline("wan-shapes")
    assert type(pipe.transformer).__name__ == "WanTransformer3DModel"
    assert pipe.transformer.dtype == torch.float32


def test_default_size_gives_the_video_tokens_the_description_says(shapes_pipe):
    preset = PRESETS["wan-shapes"]
    vae, patch = shapes_pipe.vae.config, shapes_pipe.transformer.config.patch_size
    frames = (preset.frames - 1) // vae.scale_factor_temporal + 1
    side = preset.height // vae.scale_factor_spatial // patch[1]
    size = f"{preset.frames}x{preset.height}x{preset.width} = {frames * side * side:,} video tokens"
    assert size in preset.description


def test_shipped_model_moves_the_prompted_colour_the_prompted_way(shapes_pipe):
    """The motion check at a CPU size: 10 prompts, 17 frames, 20 steps (about 3 minutes on 2
    cores); at least 80% pass. Fewer steps move shapes too little for the check's 1 px (70% at
    12 or 16 steps: ``training/sampling_steps.json``). The GPU evaluation (72 prompts, 61
    frames too) is in ``training/run.json``.
    """
    prompts = evaluation_prompts(10)
    evaluation = evaluate_motion(
        shapes_pipe, prompts, frames=17, height=64, width=64, steps=20, batch_size=10
    )
    assert evaluation.frames.shape == (10, 17, 64, 64, 3)
    assert pass_rate(evaluation.verdicts) >= 0.8, [v.reason for v in evaluation.verdicts]


def test_attention_probe_runs_through_the_plugin(shapes_pipe):
    probe = AttentionMassProbe(block_size=64)
    with dit_sparse.attached(shapes_pipe, probe) as handle:
        shapes_pipe(
            prompt=evaluation_prompts(1),
            num_frames=5,
            height=64,
            width=64,
            num_inference_steps=1,
            guidance_scale=1.0,
            output_type="latent",
        )
        summary = summarize_probe(handle.records())
    assert len(summary["layers"]) == 8
    assert 0.0 < summary["mass_share"] <= 1.0
