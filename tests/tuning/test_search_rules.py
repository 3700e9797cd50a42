"""The tune's rules without a model: quality targets, bisection, the early-stop rule, the time
model and the search over schedules (against a fake quality function)."""

import math

import pytest
import torch

from dit_sparse.layout import TokenLayout
from dit_sparse.methods import resolve_method
from dit_sparse.quality.metrics import VideoMetrics
from dit_sparse.tuning import space
from dit_sparse.tuning.bisect import first_passing
from dit_sparse.tuning.drift import (
    EarlyStopRule,
    StopGeneration,
    checkpoint_steps,
    latent_recorder,
    relative_drift,
)
from dit_sparse.tuning.target import QualityTarget
from dit_sparse.tuning.time_model import TimeModel
from dit_sparse.tuning.tuner import _Tuner

LAYOUT = TokenLayout(5, 16, 16)


@pytest.mark.parametrize("count", [0, 1, 6, 7, 8])
def test_bisection_finds_every_boundary_in_log_probes(count):
    for boundary in range(count + 1):
        probed = []

        def passes(i, boundary=boundary, probed=probed):
            probed.append(i)
            return i >= boundary

        assert first_passing(count, passes) == boundary
        assert len(probed) == len(set(probed)) <= math.ceil(math.log2(count + 1))


def test_target_parses_and_judges_mean_and_each_prompt():
    target = QualityTarget.parse(" PSNR=24 ", margin=2)
    assert (target.metric, target.value, target.margin) == ("psnr", 24.0, 2)
    assert target.met([25.0, 23.0]) and target.met([float("inf"), 22.5])
    assert not target.met([27.0, 21.5])  # mean 24.25, one prompt below 22
    assert not target.met([24.5, 23.0])  # each within the margin, mean 23.75
    assert not target.met([])
    lpips = QualityTarget.parse("lpips=0.1")  # lower is better, default margin 0.05
    assert lpips.met([0.08, 0.12]) and not lpips.met([0.05, 0.16])
    metrics = VideoMetrics(psnr=[30.0], ssim=[0.9], lpips=None, video_psnr=29.0)
    assert QualityTarget.parse("ssim=0.8").score(metrics) == 0.9
    assert target.score(metrics) == 29.0
    with pytest.raises(ValueError, match="lpips target needs LPIPS"):
        lpips.score(metrics)


@pytest.mark.parametrize(
    "text, message",
    [
        ("fid=3", "unknown target metric 'fid'; accepted: psnr, ssim, lpips"),
        ("psnr", "a target is METRIC=VALUE with METRIC one of psnr, ssim, lpips"),
        ("psnr=high", "e.g. psnr=24; got 'psnr=high'"),
        ("=24", "METRIC=VALUE"),
        ("psnr=inf", "finite number"),
    ],
)
def test_bad_targets_say_what_is_accepted(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        QualityTarget.parse(text)


def test_checkpoints_and_drift():
    assert checkpoint_steps(20) == [4, 9, 14, 19]
    assert checkpoint_steps(2) == [0, 1]
    reference = torch.tensor([3.0, 4.0])
    assert relative_drift(torch.tensor([3.0, 4.5]), reference) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="differ in shape"):
        relative_drift(torch.zeros(3), reference)


def test_early_stop_rule_needs_a_failure_on_that_prompt_and_takes_the_least():
    rule = EarlyStopRule()
    assert not rule.should_stop(0, 10.0)  # nothing failed yet: never stop
    rule.record_failure(0, 0.3)
    rule.record_failure(0, 0.2)
    rule.record_failure(0, 0.5)
    assert rule.bound(0) == 0.2 and rule.bound(1) is None
    assert rule.should_stop(0, 0.21) and not rule.should_stop(0, 0.2)
    assert not rule.should_stop(1, 0.9)


def test_recorder_keeps_checkpoints_measures_drift_and_stops_before_the_end():
    steps = [1, 3]
    reference = {1: torch.ones(4), 3: torch.ones(4)}
    kept, drifts = {}, {}
    record = latent_recorder(steps, kept, reference, drifts, stop=lambda d: d > 0.25)
    record(0, torch.zeros(4))  # not a checkpoint: ignored
    record(1, torch.full((4,), 1.2))  # drift 0.2: goes on
    assert set(kept) == {1} and drifts[1] == pytest.approx(0.2)
    with pytest.raises(StopGeneration) as stopped:
        latent_recorder(steps, {}, reference, {}, stop=lambda d: d > 0.25)(1, torch.full((4,), 2.0))
    assert (stopped.value.step, stopped.value.drift) == (1, pytest.approx(1.0))
    record(3, torch.full((4,), 2.0))  # the last step: scored, never stopped
    assert drifts[3] == pytest.approx(1.0)


def model(measured=False):
    # dense: 10 s wall, 4 s of attention over 80 calls (10 steps x 4 layers x 2 branches)
    summary = {"calls": 80, "attention_seconds": 4.0, "mean_density": 1.0, "mass_passes": 0}
    return TimeModel.from_dense([(12.0, summary), (10.0, summary)], 10, 4, LAYOUT, measured)


def test_time_model_counts_density_where_timing_says_nothing():
    m = model()
    assert (m.non_attention_s, m.dense_call_s, m.calls_per_slot) == (6.0, 0.05, 2.0)
    half = {"calls": 80, "attention_seconds": 9.0, "mean_density": 0.5, "mass_passes": 4}
    assert m.predict(half) == pytest.approx(6.0 + 0.05 * (40 + 4))
    assert m.predict({**half, "layers_skipped": 0.5}) == pytest.approx(3.0 + 0.05 * 44)
    assert model(measured=True).predict(half) == pytest.approx(6.0 + 9.0)
    svg = resolve_method("svg", dense_steps=0.2, dense_layers=1)
    # 2 dense steps x 4 layers, then 8 steps of 1 dense and 3 sparse layers at 0.25
    assert m.lower_bound(svg, 0.25) == pytest.approx(6.0 + 0.05 * 2 * (8 + 8 * 1.75))
    assert m.lower_bound(svg, 1.0) == pytest.approx(10.0)  # no faster than dense


def test_a_setting_over_prompts_is_its_mean_modelled_and_its_quickest_run_measured():
    # Modelled: densities follow content, so the mean; measured: the first run also timed
    # a kernel's compilation, so the quickest.
    first = {"calls": 80, "attention_seconds": 30.0, "mean_density": 0.5, "mass_passes": 0}
    second = {"calls": 80, "attention_seconds": 2.0, "mean_density": 0.25, "mass_passes": 0}
    assert model().predict_runs([first, second]) == pytest.approx(6.0 + 0.05 * 30)
    assert model(measured=True).predict_runs([first, second]) == pytest.approx(6.0 + 2.0)


class FakeTuner(_Tuner):
    """`_Tuner.search` over a fake quality: a setting passes when its svg density plus its
    dense step share reaches ``need``; predicted time grows with both."""

    def __init__(self, need):
        self.model = model()
        self.need = need
        self.runs = []
        self.pruned = []
        self.best = {"predicted_seconds": 10.0}

    def evaluate(self, setting, phase):
        config = setting.method
        self.runs.append((config.dense_steps, config.dense_layers, config.density))
        passed = config.density + config.dense_steps >= self.need - 1e-9
        seconds = self.model.lower_bound(config, config.density)
        if passed and seconds < self.best["predicted_seconds"]:
            self.best = {"predicted_seconds": seconds, "label": setting.label}
        return {"passed": passed}


def test_search_bisects_each_schedule_and_shares_boundaries():
    tuner = FakeTuner(need=0.4)  # svg values: 0.05 0.1 0.15 0.2 0.3 0.4 0.6
    tuner.search("svg", space.schedules((0.1, 0.2), (0,)))
    # 0.1 dense steps: bisection over 7 values, boundary at density 0.3, in 3 runs
    assert [r[2] for r in tuner.runs if r[0] == 0.1] == [0.2, 0.4, 0.3]
    # 0.2 keeps dense all that 0.1 did, so it passes at 0.3 too: only 0.05-0.2 are searched
    assert [r[2] for r in tuner.runs if r[0] == 0.2] == [0.15, 0.2]
    assert tuner.best["label"] == "svg(dense_layers=0, density=0.2)"  # dense_steps 0.2: default


def test_search_never_runs_what_cannot_beat_the_best():
    tuner = FakeTuner(need=0.0)
    tuner.best = {"predicted_seconds": 0.0}  # nothing can beat this
    tuner.search("svg", space.schedules((0.1,), (0,)))
    assert tuner.runs == []
    (pruned,) = tuner.pruned
    assert pruned["values"] == list(space.KNOBS["svg"].values)


def test_unknown_methods_and_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="unknown method 'dense' for a tune; accepted: radial"):
        space.knob_for("dense")
    with pytest.raises(ValueError, match=r"shares of the steps, in \[0, 1\]; got 2"):
        space.schedules((2,), (0,))
    with pytest.raises(ValueError, match="counts >= 0; got -1"):
        space.schedules((0.1,), (-1,))
