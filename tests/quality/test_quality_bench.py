import csv
import json
import math
from dataclasses import dataclass

import imageio.v3 as iio
import pytest
import torch

from dit_sparse.cli import main
from dit_sparse.generation import GenerationRequest
from dit_sparse.methods import Dense, SparseMethod
from dit_sparse.quality.bench import parse_method_options, parse_sweeps
from dit_sparse.quality.harness import Case, Setting, make_settings, run_bench, summarize_runs

# 3 latent frames of 4x4 tokens: the smallest tiny-wan video that SVG makes sparse.
SIZE = ["--frames", "9", "--height", "64", "--width", "64", "--steps", "2"]


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lpips") / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory, alexnet_file):
    """One bench run: dense, svg, and svg kept dense at every step (a video identical to dense)."""
    out = tmp_path_factory.mktemp("bench")
    code = main(
        ["bench", "--model", "tiny-wan", "--methods", "dense,svg", "--seeds", "3", *SIZE]
        + ["--sweep", "svg.dense_steps=0.0,1.0", "--lpips-weights", str(alexnet_file)]
        + ["--output-dir", str(out), "--prompt", "a red ball rolls left"]
    )
    assert code == 0
    return out


def test_bench_writes_every_output(bench_dir):
    names = {p.relative_to(bench_dir).as_posix() for p in bench_dir.rglob("*") if p.is_file()}
    videos = {
        "videos/svg_dense_steps-0.0__p0-seed3.mp4",
        "videos/svg_dense_steps-1.0__p0-seed3.mp4",
    }
    expected = {"results.json", "results.csv", "results.md", "pareto.png", "psnr/p0-seed3.png"}
    assert names == expected | videos  # no temporary files left behind
    for png in ("pareto.png", "psnr/p0-seed3.png"):
        assert (bench_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for video in videos:
        frames = iio.imread(bench_dir / video)
        # 9 frames of dense | method | heatmap (3 x 64 px) under a title strip.
        assert frames.shape[0] == 9 and frames.shape[2] == 192 and frames.shape[1] > 64


def test_results_json_has_raw_numbers_and_provenance(bench_dir):
    doc = json.loads((bench_dir / "results.json").read_text())
    for key in ("gpu", "torch", "diffusers", "triton", "dit_sparse", "date", "command"):
        assert key in doc
    # The command as passed to `cli.main`, not this process's (pytest's) command line.
    assert doc["gpu"] == "cpu" and doc["command"].startswith("dit-sparse bench --model tiny-wan ")
    assert doc["random_weights"] is True and "mean nothing" in doc["note"]
    assert "nothing about a GPU" in doc["speed_note"]  # timed on the CPU, and says so
    assert "nothing about a GPU" in (bench_dir / "results.md").read_text()
    assert doc["lpips"] == {"available": True, "note": None}
    assert [s["label"] for s in doc["settings"]] == [
        "dense",
        "svg(dense_steps=0.0)",
        "svg(dense_steps=1.0)",
    ]
    assert len(doc["warmups"]) == 1 and len(doc["runs"]) == 3
    dense, sparse, kept_dense = doc["runs"]
    assert all(run["error"] is None for run in doc["runs"])
    assert dense["speedup"] == 1.0 and dense["metrics"] is None
    assert sparse["mean_density"] < 1.0 and kept_dense["mean_density"] == 1.0
    for run in (sparse, kept_dense):
        assert run["seconds"] > 0 and run["attention_seconds"] > 0 and run["speedup"] > 0
        per_frame = run["metrics"]["per_frame"]
        assert [len(per_frame[k]) for k in ("psnr", "ssim", "lpips")] == [9, 9, 9]
    assert math.isfinite(sparse["metrics"]["psnr"]) and sparse["metrics"]["ssim"] < 1.0
    # Identical videos: PSNR is infinite, written as "inf" (strict JSON), never a crash.
    assert kept_dense["metrics"]["psnr"] == "inf"
    assert kept_dense["metrics"]["per_frame"]["psnr"] == ["inf"] * 9
    assert kept_dense["metrics"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert "inf" in doc["non_finite"]
    summary = {s["setting"]: s for s in doc["summary"]}
    assert summary["svg(dense_steps=1.0)"]["psnr"] == "inf"
    assert summary["dense"]["speedup"] == 1.0


def test_csv_and_markdown_are_readable(bench_dir):
    rows = list(csv.DictReader((bench_dir / "results.csv").open()))
    assert [r["setting"] for r in rows] == ["dense", "svg(dense_steps=0.0)", "svg(dense_steps=1.0)"]
    assert rows[2]["psnr"] == "inf" and rows[0]["random_weights"] == "True"
    text = (bench_dir / "results.md").read_text()
    assert "Speed only" in text and "| svg(dense_steps=1.0) |" in text
    assert "| inf |" in text and "pareto.png" in text


@dataclass
class Broken(SparseMethod):
    """Raises in every sparse call: a run that fails."""

    name = "broken"

    def attend(self, q, k, v, call):
        raise RuntimeError("kernel exploded")


def test_a_failing_run_is_recorded_and_the_plan_goes_on(tiny_wan):
    request = GenerationRequest(prompt="", frames=5, height=32, width=32, steps=1)
    cases = [Case(0, "a red ball", 0), Case(0, "a red ball", 1)]
    settings = [Setting("broken", Broken()), Setting("dense", Dense())]
    result = run_bench(tiny_wan, request, cases, settings, progress=False)
    assert [(r.setting.label, r.case.seed) for r in result.runs] == [
        ("dense", 0),
        ("broken", 0),
        ("dense", 1),
        ("broken", 1),
    ]
    assert [r.ok for r in result.runs] == [True, False, True, False]
    assert result.runs[1].error == "RuntimeError: kernel exploded"
    summaries = {s.setting.label: s for s in summarize_runs(result)}
    assert summaries["broken"].failed == 2 and summaries["broken"].speedup is None
    assert summaries["dense"].failed == 0 and summaries["dense"].speedup == 1.0


def test_dense_in_8bit_is_measured_against_the_models_own_dense(tiny_wan):
    request = GenerationRequest(prompt="", frames=5, height=32, width=32, steps=1)
    settings = make_settings(["dense"], sweeps={"dense": {"dense_precision": ["model", "8bit"]}})
    assert [s.is_dense for s in settings] == [True, False]
    result = run_bench(tiny_wan, request, [Case(0, "a red ball", 0)], settings, progress=False)
    assert [r.setting.label for r in result.runs] == ["dense", "dense(dense_precision='8bit')"]
    eight_bit = result.runs[1]
    assert eight_bit.ok and eight_bit.metrics is not None
    # Quantised, so not identical to the reference, but close on a 1-step generation.
    assert 20.0 < eight_bit.metrics.video_psnr < float("inf")


@pytest.mark.parametrize(
    "args,reason",
    [
        (["--methods", "dense", "--sweep", "svg.density=0.1,0.2"], "not in the methods list"),
        (["--methods", "svg", "-o", "svg=1"], "METHOD.KEY=VALUE"),
        (["--methods", "svg", "-o", "svg.nope=1"], "bad option"),
        (["--methods", "nope"], "unknown method"),
        (["--seeds", "0,x"], "--seeds"),
        (["--prompts", "missing.txt"], "--prompts file not found"),
        (["--lpips-weights", "missing.pth"], "--lpips-weights file not found"),
        (["--frames", "6"], "frames must be 4*n + 1"),
        (["--prompt", "a", "--prompts", "p.txt"], "not both"),
    ],
)
def test_bad_arguments_fail_before_loading(tmp_path, capsys, args, reason):
    code = main(["bench", "--methods", "dense", *args, "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]
    assert not (tmp_path / "out").exists()


def test_sweeps_make_a_grid_and_options_apply_to_every_setting():
    sweeps = parse_sweeps(["adaspa.sparsity=0.5,0.9", "adaspa.block_size=32,64"])
    options = parse_method_options(["adaspa.dense_steps=2"])
    assert sweeps == {"adaspa": {"sparsity": [0.5, 0.9], "block_size": [32, 64]}}
    settings = make_settings(["dense", "adaspa"], options, sweeps)
    assert [s.label for s in settings] == [
        "dense",
        "adaspa(dense_steps=2, sparsity=0.5, block_size=32)",
        "adaspa(dense_steps=2, sparsity=0.5)",
        "adaspa(dense_steps=2, sparsity=0.9, block_size=32)",
        "adaspa(dense_steps=2, sparsity=0.9)",  # block_size 64 is the default
    ]
    with pytest.raises(ValueError, match="listed twice"):
        make_settings(["adaspa"], sweeps={"adaspa": {"sparsity": [0.8, 0.8]}})


def test_without_a_video_writer_the_measurements_stand(tmp_path, monkeypatch):
    import imageio.v2

    def no_ffmpeg(*args, **kwargs):  # what imageio raises where imageio-ffmpeg is missing
        raise ImportError("The `FFMPEG` plugin is not installed.")

    monkeypatch.setattr(imageio.v2, "mimwrite", no_ffmpeg)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="side-by-side videos are not written.*FFMPEG"):
        code = main(
            ["bench", "--model", "tiny-wan", "--methods", "svg", *SIZE]
            + ["--output-dir", str(out), "--prompt", "a red ball rolls left"]
        )
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert not list(out.glob("videos/*"))  # nor half-written ones
    sparse = doc["runs"][1]
    assert sparse["error"] is None and math.isfinite(sparse["metrics"]["psnr"])
