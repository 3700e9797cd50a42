"""The bench's Pareto figure: quality against what holds on the device, one panel per metric
that has values, never an empty panel."""

import pytest

from dit_sparse.methods import Dense, resolve_method
from dit_sparse.quality.harness import Setting, SettingSummary
from dit_sparse.quality.plots import pareto_figure


def summary(method, density, speedup, psnr=None, ssim=None, lpips=None):
    return SettingSummary(
        setting=Setting(method.name, method),
        runs=1,
        failed=0,
        seconds=1.0,
        speedup=speedup,
        attention_seconds=0.5,
        attention_share=0.5,
        mean_density=density,
        layers_skipped=None,
        psnr=psnr,
        ssim=ssim,
        lpips=lpips,
    )


DENSE = summary(Dense(), 1.0, 1.0)


def labels(figure):
    return [(axes.get_xlabel(), axes.get_ylabel()) for axes in figure.axes]


def test_on_the_cpu_quality_is_drawn_against_density_and_ssim_stands_in_for_lpips():
    runs = [
        DENSE,
        summary(resolve_method("radial"), 0.8, 0.9, psnr=34.0, ssim=0.96),
        summary(resolve_method("svg"), 0.4, 0.6, psnr=float("inf"), ssim=1.0),
    ]
    figure = pareto_figure(runs, None, x="density")
    assert [y for _, y in labels(figure)] == [
        "PSNR vs dense, dB (higher is better)",
        "SSIM vs dense (higher is better)",
    ]
    assert all(x.startswith("attention density") for x, _ in labels(figure))
    for axes in figure.axes:  # both points in each panel, at their densities
        (points,) = axes.collections
        assert sorted(points.get_offsets()[:, 0].tolist()) == [0.4, 0.8]
    assert "density vs quality" in figure._suptitle.get_text()


def test_with_lpips_there_are_three_panels_and_speedup_where_timing_holds():
    runs = [DENSE, summary(resolve_method("radial"), 0.8, 1.5, psnr=30.0, ssim=0.9, lpips=0.1)]
    figure = pareto_figure(runs, "a note", x="speedup")
    assert [y.split(" vs")[0] for _, y in labels(figure)] == ["PSNR", "SSIM", "LPIPS"]
    assert {x for x, _ in labels(figure)} == {"end-to-end speedup vs dense"}
    assert "a note" in figure._suptitle.get_text()


@pytest.mark.parametrize("x", ["density", "speedup"])
def test_nothing_scored_draws_no_empty_panel(x):
    failed = summary(resolve_method("radial"), None, None)
    figure = pareto_figure([DENSE, failed], None, x=x)
    assert figure.axes == []
    assert "no method setting has quality numbers" in [t.get_text() for t in figure.texts]


def test_tuned_settings_are_red_stars_beside_the_plain_points():
    tuned = Setting("tuned svg", resolve_method("svg", density=0.4))
    runs = [
        DENSE,
        summary(resolve_method("radial"), 0.8, 0.9, psnr=34.0),
        SettingSummary(**{**vars(summary(tuned.method, 0.5, 1.2, psnr=30.0)), "setting": tuned}),
    ]
    (axes,) = pareto_figure(runs, None, x="density", highlight=["tuned svg"]).axes
    plain, stars = axes.collections
    assert plain.get_offsets().tolist() == [[0.8, 34.0]]
    assert stars.get_offsets().tolist() == [[0.5, 30.0]] and stars.get_label() == "tuned"
