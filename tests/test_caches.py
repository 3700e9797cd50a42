"""diffusers' step caches with dit_sparse attached (issue 30), on tiny-wan.

Every cache config, enabled before or after `dit_sparse.apply` and removed in either order:
with ``dense`` the generation is bit-identical to the cache alone, removing one piece leaves
the other computing exactly what it computes alone, the step tracking sees every denoising
step once per branch whatever the cache skipped, and the report lists the skipped forwards.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from conftest import run_pipe

import dit_sparse
from dit_sparse import caches

STEPS = 8
# Settings under which each cache skips work on tiny-wan within 8 steps (random weights change
# little between steps); TextKVCache is lossless and skips no layer.
SPECS = {
    "FirstBlockCacheConfig": "FirstBlockCache:threshold=0.2",
    "MagCacheConfig": "MagCache:threshold=0.5",
    "TaylorSeerCacheConfig": "TaylorSeerCache:cache_interval=2,disable_cache_before_step=2",
    "FasterCacheConfig": "FasterCache",
    "PyramidAttentionBroadcastConfig": "PyramidAttentionBroadcast:spatial_attention_block_skip_range=2",
    "SeaCacheConfig": "SeaCache:threshold=0.5",
}


@pytest.fixture
def pipe(tiny_wan):
    return tiny_wan


def _latents(pipe) -> torch.Tensor:
    return run_pipe(pipe, steps=STEPS, latent=True)


@pytest.fixture(scope="module")
def baseline(tiny_wan) -> torch.Tensor:
    return _latents(tiny_wan)


def _spec(pipe, name: str) -> str:
    spec = SPECS[name]
    if name == "MagCacheConfig":
        ratios = caches.calibrate_mag_ratios(pipe, lambda: _latents(pipe), STEPS)
        assert len(ratios) == STEPS and ratios[0] == 1.0
        spec += f",mag_ratios={ratios}"
    return spec


def _check_tracking(handle) -> float:
    """Every denoising step once per branch; returns the share of layer calls skipped."""
    forwards = handle.forwards()
    for branch in ("cond", "uncond"):
        assert [f["step"] for f in forwards if f["branch"] == branch] == list(range(STEPS))
    ran = {(r["step"], r["branch"]) for r in handle.records()}
    assert ran == {(f["step"], f["branch"]) for f in forwards if f["layers_run"]}
    return handle.summary()["layers_skipped"]


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("cache_first", [True, False], ids=["cache-first", "sparse-first"])
def test_cache_with_dense_is_the_cache_alone_and_each_removes_cleanly(
    pipe, baseline, name, cache_first
):
    spec = _spec(pipe, name)
    config = caches.enable_cache(pipe, spec, num_steps=STEPS)
    assert type(config).__name__ == name
    alone = _latents(pipe)
    assert not torch.equal(alone, baseline), "the cache changed nothing: it skipped no work"
    caches.disable_cache(pipe)
    try:
        if cache_first:
            caches.enable_cache(pipe, spec, num_steps=STEPS)
            handle = dit_sparse.apply(pipe, "dense")
        else:
            handle = dit_sparse.apply(pipe, "dense")
            caches.enable_cache(pipe, spec, num_steps=STEPS)
        assert torch.equal(_latents(pipe), alone)
        skipped = _check_tracking(handle)
        assert 0.0 < skipped < 1.0
        assert "step cache:" in handle.report()
        if cache_first:  # remove in the order applied: the other piece stays
            caches.disable_cache(pipe)
            handle.reset_stats()
            assert torch.equal(_latents(pipe), baseline)
            assert _check_tracking(handle) == 0.0
        else:
            dit_sparse.remove(pipe)
            assert torch.equal(_latents(pipe), alone)
    finally:
        dit_sparse.remove(pipe)
        caches.disable_cache(pipe)
    # Nothing of either hook is left wrapped around the forward (diffusers' own removal of a
    # hook registered before FasterCache's denoiser hook used to leave ours there).
    assert inspect.ismethod(pipe.transformer.forward), pipe.transformer.forward
    assert torch.equal(_latents(pipe), baseline)


def test_text_kv_cache_is_lossless_beside_dense(pipe, baseline):
    pipe.transformer.enable_cache(caches.cache_config(pipe, "TextKVCache"))
    try:
        handle = dit_sparse.apply(pipe, "dense")
        torch.testing.assert_close(_latents(pipe), baseline, rtol=1e-5, atol=1e-6)
        assert _check_tracking(handle) == 0.0
    finally:
        dit_sparse.remove(pipe)
        caches.disable_cache(pipe)


def test_skipped_steps_do_not_shift_the_method_schedules(pipe):
    """TaylorSeer (interval 2, from step 2) skips every attention layer at steps 2, 4 and 6:
    the dense warm-up still ends after step 1, AdaSpa's search at step 3 still happens at
    denoising step 3, whichever forwards ran before."""
    caches.enable_cache(pipe, SPECS["TaylorSeerCacheConfig"], num_steps=STEPS)
    try:
        handle = dit_sparse.apply(pipe, "adaspa", dense_steps=1, search_steps=(3,))
        _latents(pipe)
        assert _check_tracking(handle) == pytest.approx(3 / 8)
        kinds = {(r["step"], r["kind"]) for r in handle.records() if r["branch"] == "cond"}
        assert kinds == {(0, "dense"), (1, "search"), (3, "cached-search"), (5, "reuse"),
                         (7, "reuse")}  # fmt: skip
        report = handle.report()
        assert "6 of 16 forwards skipped attention layers" in report
        assert "2(0/4) 4(0/4) 6(0/4)" in report
    finally:
        dit_sparse.remove(pipe)
        caches.disable_cache(pipe)


def test_cache_specs_parse_and_adapters_fill_model_fields(pipe):
    assert caches.parse_cache_spec("first_block_cache:threshold=0.1") == (
        "FirstBlockCacheConfig",
        {"threshold": 0.1},
    )
    name, fields = caches.parse_cache_spec(
        "PyramidAttentionBroadcastConfig:spatial_attention_timestep_skip_range=(100, 800),x=abc"
    )
    assert name == "PyramidAttentionBroadcastConfig"
    assert fields == {"spatial_attention_timestep_skip_range": (100, 800), "x": "abc"}
    with pytest.raises(ValueError, match="accepted: FirstBlockCacheConfig"):
        caches.parse_cache_spec("TeaCache")
    with pytest.raises(ValueError, match="not key=value"):
        caches.parse_cache_spec("FirstBlockCache:0.1")
    taylor = caches.cache_config(pipe, "TaylorSeerCache")
    assert taylor.cache_identifiers == [r"blocks\.\d+\.attn1", r"blocks\.\d+\.attn2"]
    mine = caches.cache_config(pipe, "TaylorSeerCache:cache_identifiers=['blocks\\.0\\.ffn']")
    assert mine.cache_identifiers == [r"blocks\.0\.ffn"]  # given fields win
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SyntaxWarning for a regex's unknown escapes
        _, fields = caches.parse_cache_spec(r"TaylorSeerCache:cache_identifiers=['blocks\.\d+']")
    assert fields == {"cache_identifiers": [r"blocks\.\d+"]}
    pab = caches.cache_config(pipe, "PyramidAttentionBroadcast")
    pipe._current_timestep = 321
    assert pab.current_timestep_callback() == 321
    pipe._current_timestep = None
    mag = caches.cache_config(pipe, "MagCache:mag_ratios=[1.0, 0.9]", num_steps=4)
    assert mag.num_inference_steps == 4 and len(mag.mag_ratios) == 4


def test_generate_with_a_cache_reports_its_skips(tmp_path, capsys):
    from dit_sparse.cli import main

    out = tmp_path / "clip.mp4"
    size = ["--frames", "9", "--height", "32", "--width", "32", "--steps", "6"]
    argv = ["generate", "--model", "tiny-wan", "--method", "radial", *size, "--output", str(out)]
    cache = "TaylorSeerCache:cache_interval=2,disable_cache_before_step=2"
    assert main([*argv, "--cache", cache, "--report"]) == 0
    printed = capsys.readouterr().out
    # Steps 2 and 4 skipped, both branches (the CLI's default guidance runs two).
    assert "step cache: 4 of 12 forwards skipped attention layers" in printed
    assert main([*argv, "--cache", "TeaCache:threshold=0.1"]) == 2
    assert "unknown cache 'TeaCache'" in capsys.readouterr().err


def test_bench_runs_cache_alone_sparse_alone_and_both(pipe):
    from dit_sparse.generation import GenerationRequest
    from dit_sparse.quality.harness import Case, make_settings, run_bench, summarize_runs
    from dit_sparse.quality.report import summary_dict

    cache = "FirstBlockCache:threshold=0.2"
    settings = make_settings(["dense", "radial"], {"radial": {"dense_steps": 1}}, None, [cache])
    labels = [s.label for s in settings]
    assert labels == ["dense", "radial(dense_steps=1)", f"dense + {cache}",
                      f"radial(dense_steps=1) + {cache}"]  # fmt: skip
    request = GenerationRequest(prompt="", frames=9, height=32, width=32, steps=6)
    result = run_bench(pipe, request, [Case(0, "a red ball", 0)], settings, progress=False)
    runs = {r.setting.label: r for r in result.runs}
    assert all(r.ok for r in runs.values()), [r.error for r in runs.values()]
    assert runs["dense"].attention["layers_skipped"] == 0.0
    assert runs["radial(dense_steps=1)"].attention["layers_skipped"] == 0.0
    for label in labels[2:]:
        assert 0.0 < runs[label].attention["layers_skipped"] < 1.0
        assert runs[label].metrics.video_psnr < float("inf")  # not the dense video
    assert getattr(pipe.transformer, "_cache_config", None) is None  # disabled after
    summaries = {s.setting.label: summary_dict(s) for s in summarize_runs(result)}
    assert summaries["dense"]["cache"] is None and summaries["dense"]["layers_skipped"] == 0.0
    both = summaries[labels[3]]
    assert (
        both["cache"] == cache
        and both["layers_skipped"] == runs[labels[3]].attention["layers_skipped"]
    )
