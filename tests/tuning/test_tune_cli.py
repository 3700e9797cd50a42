"""`dit-sparse tune`, `generate --profile` and `bench --profile` on the tiny-wan preset, and
the tune's bad inputs (refused before the model loads)."""

import json

import pytest

from dit_sparse.cli import main

SIZE = ["--frames", "9", "--height", "64", "--width", "64", "--steps", "2"]


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    prompts = folder / "prompts.txt"
    prompts.write_text("# tuning prompts\na red ball rolls left\n")
    path = folder / "profile.json"
    argv = ["tune", "--model", "tiny-wan", "--prompts", str(prompts), "--target", "psnr=30"]
    argv += ["--methods", "svg", "--dense-steps", "0.5", "--dense-layers", "0", *SIZE]
    assert main([*argv, "--output", str(path)]) == 0
    return path


def test_tune_writes_a_profile_that_meets_the_target(profile_path, capsys):
    profile = json.loads(profile_path.read_text())
    assert profile["model"] == "tiny-wan" and profile["prompts"] == ["a red ball rolls left"]
    assert profile["request"]["steps"] == 2 and profile["target"]["value"] == 30.0
    assert profile["chosen"]["passed"] and profile["method"] in ("svg", "dense")
    assert profile["environment"]["command"].startswith("dit-sparse ")  # as typed
    searched = [c for c in profile["candidates"] if c["phase"] == "search"]
    assert searched and all(c["options"]["dense_steps"] == 0.5 for c in searched)


def test_generate_and_bench_take_the_profile(profile_path, tmp_path, capsys):
    video = tmp_path / "out.mp4"
    assert (
        main(
            [
                "generate",
                "--model",
                "tiny-wan",
                "--profile",
                str(profile_path),
                "--output",
                str(video),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    method = json.loads(profile_path.read_text())["method"]
    assert f"wrote {video}: 9 frames 64x64, method {method}" in printed  # the tuned size
    out = tmp_path / "bench"
    argv = ["bench", "--model", "tiny-wan", "--methods", "dense", "--profile", str(profile_path)]
    assert main([*argv, *SIZE, "--output-dir", str(out)]) == 0
    labels = [s["label"] for s in json.loads((out / "results.json").read_text())["settings"]]
    assert labels == ["dense", f"tuned {json.loads(profile_path.read_text())['label']}"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "fid=3"], "unknown target metric 'fid'; accepted: psnr, ssim, lpips"),
        (["--target", "psnr"], "a target is METRIC=VALUE"),
        (
            ["--target", "psnr=30", "--prompts", "nowhere.txt"],
            "--prompts file not found: nowhere.txt",
        ),
        (["--target", "psnr=30", "--methods", "svg,fast"], "unknown method fast; accepted: radial"),
        (
            ["--target", "psnr=30", "--dense-steps", "a"],
            "--dense-steps takes comma-separated numbers",
        ),
        (["--target", "psnr=30", "--output", "/nonexistent/p.json"], "does not exist"),
    ],
)
def test_tune_refuses_bad_input_in_one_line(args, message, capsys):
    assert main(["tune", "--model", "tiny-wan", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dit-sparse tune: error: ") and message in err


def test_generate_refuses_a_profile_beside_a_method(profile_path, capsys):
    argv = ["generate", "--model", "tiny-wan", "--profile", str(profile_path), "--method", "svg"]
    assert main(argv) == 2
    assert "--profile sets the method" in capsys.readouterr().err
    assert main(["generate", "--profile", "missing.json"]) == 2
    assert "--profile: profile not found: missing.json" in capsys.readouterr().err
