"""`dit_sparse.tune` on the tiny-wan preset (random weights, 2 steps): the search, the early
stop, the profile and applying it."""

import dataclasses
import json
import warnings

import numpy as np
import pytest

import dit_sparse
from dit_sparse.generation import GenerationRequest, generate
from dit_sparse.methods import resolve_method
from dit_sparse.quality.harness import Setting
from dit_sparse.tuning import space
from dit_sparse.tuning.profile import Profile
from dit_sparse.tuning.target import QualityTarget
from dit_sparse.tuning.tuner import _Tuner, tune

PROMPTS = ["a red ball rolls left", "a blue cube spins"]
# 3 latent frames of 4x4 tokens; adaspa at sparsity 0.4 scores about 105 dB here, sparser
# settings about 98 dB, so a 100 dB target puts the boundary inside the knob's values.
SIZE = dict(frames=9, height=64, width=64, steps=2)


@pytest.fixture(scope="module")
def profile(tiny_wan):
    return tune(
        tiny_wan,
        PROMPTS,
        "psnr=100",
        margin=0.0,
        methods=["adaspa"],
        dense_steps=(0.0,),
        dense_layers=(0,),
        model="tiny-wan",
        progress=False,
        **SIZE,
    )


def test_the_package_exports_tune_and_profile(profile):
    assert dit_sparse.tune is tune and isinstance(profile, dit_sparse.Profile)


def test_bisection_on_a_real_model_finds_the_boundary(profile):
    tried = {c["options"]["sparsity"]: c for c in profile.candidates if c["method"] == "adaspa"}
    values = space.KNOBS["adaspa"].values
    assert list(tried) == [values[3], values[5], values[6]]  # 0.8, 0.6, then 0.4
    assert [tried[v]["passed"] for v in (0.8, 0.6, 0.4)] == [False, False, True]
    # a failing setting stops at the first prompt below the floor; a passing one runs both
    assert [len(tried[v]["scores"]) for v in (0.8, 0.6, 0.4)] == [1, 1, 2]
    assert all(s > 100 for s in tried[0.4]["scores"])


def test_the_chosen_setting_is_the_fastest_that_passed(profile):
    passed = [c for c in profile.candidates if c["passed"]]
    assert profile.chosen["passed"]
    assert profile.chosen["predicted_seconds"] == min(c["predicted_seconds"] for c in passed)
    assert profile.label == profile.chosen["label"]
    assert profile.method_config() == resolve_method(profile.method, **profile.options)


def test_the_profile_records_model_layout_cost_and_versions(profile):
    assert profile.model == "tiny-wan"
    assert profile.identity["class"] == "WanTransformer3DModel"
    assert profile.layout == {
        "frames": 3,
        "height": 4,
        "width": 4,
        "text_len": 0,
        "text_first": False,
    }
    assert {k: profile.request[k] for k in SIZE} == SIZE
    assert profile.target == {"metric": "psnr", "value": 100.0, "margin": 0.0}
    cost = profile.cost
    assert cost["generations"] == sum(c["generations"] for c in profile.candidates) == 6
    assert cost["dense_generations"] == 2 and cost["steps_run"] == 2 * 6
    assert cost["full_generation_equivalents"] == 6.0 and cost["early_stops"] == 0
    for key in ("torch", "diffusers", "dit_sparse", "date", "command"):
        assert key in profile.environment
    assert profile.time_model["steps"] == 2 and profile.time_model["measured"] is False


def test_profile_round_trip(profile, tmp_path):
    path = tmp_path / "profile.json"
    profile.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["profile.json"]  # no temporary file left
    loaded = Profile.load(path)
    for name in ("method", "options", "cache", "label", "target", "identity", "layout", "request"):
        assert getattr(loaded, name) == json.loads(json.dumps(getattr(profile, name)))
    assert loaded.method_config() == profile.method_config()
    assert len(loaded.candidates) == len(profile.candidates)


def test_apply_from_a_profile_file_and_mismatch_warnings(profile, tiny_wan, tmp_path):
    path = tmp_path / "profile.json"
    profile.save(path)
    request = GenerationRequest(PROMPTS[0], **SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same model, same layout: no warning
        with dit_sparse.attached(tiny_wan, str(path)) as handle:
            generate(tiny_wan, request, progress=False)
    assert handle.method == profile.method_config()
    other = dataclasses.replace(profile, identity={**profile.identity, "config_sha": "0" * 16})
    other.label = "for another model"
    with pytest.warns(UserWarning, match="tuned for model tiny-wan .* applied to WanTransformer3D"):
        dit_sparse.apply(tiny_wan, other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        dit_sparse.apply(tiny_wan, other)
    dit_sparse.remove(tiny_wan)
    resized = dataclasses.replace(request, frames=13)
    layout = r"tuned for layout .*3x4x4.* applied to .*4x4x4"
    with pytest.warns(UserWarning, match=layout), dit_sparse.attached(tiny_wan, profile):
        generate(tiny_wan, resized, progress=False)
    with pytest.warns(UserWarning, match="tuned for size 9x64x64 .* applied to 13x64x64"):
        profile.check_size(13, 64, 64)  # what `bench --profile` checks before it runs
    with pytest.raises(TypeError, match="carries its own options"):
        dit_sparse.apply(tiny_wan, profile, sparsity=0.5)


def test_a_drifting_candidate_stops_early_and_leaves_the_pipeline_clean(tiny_wan):
    request = GenerationRequest(PROMPTS[0], **SIZE)
    tuner = _Tuner(tiny_wan, request, PROMPTS, QualityTarget.parse("psnr=100"), None, print)
    tuner.run_dense()
    tuner.rule.record_failure(0, 0.0)  # any drift on prompt 0 is past a known failure
    config = resolve_method("svg", dense_steps=0, dense_layers=0, density=0.05)
    record = tuner.evaluate(Setting("svg", config), "search")
    assert record["stopped"]["prompt"] == 0 and record["stopped"]["step"] == 0
    assert record["stopped"]["drift"] > 0 and not record["passed"] and record["scores"] == []
    assert record["generations"] == 1 and tuner.steps_run == 2 * 2 + 1
    again = generate(tiny_wan, request, progress=False).frames  # no hook or state left behind
    assert np.array_equal(again, tuner.references[0].frames)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(target="fid=3"), ValueError, "unknown target metric 'fid'"),
        (dict(methods=["dense"]), ValueError, "unknown method 'dense' for a tune"),
        (dict(prompts=[]), ValueError, "non-empty list of strings"),
        (dict(fps=8), TypeError, "unknown generation arguments fps; accepted: negative_prompt"),
    ],
)
def test_bad_arguments_fail_before_any_generation(tiny_wan, kwargs, error, message):
    arguments = {"prompts": PROMPTS, "target": "psnr=30", **kwargs}
    with pytest.raises(error, match=message):
        tune(tiny_wan, arguments.pop("prompts"), arguments.pop("target"), **arguments)


def test_profile_load_errors(tmp_path):
    with pytest.raises(ValueError, match="profile not found"):
        Profile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        Profile.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"method": "svg"}')
    with pytest.raises(ValueError, match="not a dit-sparse profile .*make one with"):
        Profile.load(tmp_path / "other.json")
