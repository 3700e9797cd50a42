import subprocess
import sys

import imageio.v3 as iio
import pytest

from dit_sparse.cli import main, parse_options
from dit_sparse.pipelines.presets import PRESETS


def test_generate_writes_readable_mp4(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code = main(
        [
            "generate",
            "--model",
            "tiny-wan",
            "--method",
            "dense",
            "--frames",
            "9",
            "--height",
            "32",
            "--width",
            "48",
            "--steps",
            "2",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    video = iio.imread(out)
    assert video.shape == (9, 32, 48, 3)
    printed = capsys.readouterr().out
    assert "random weights" in printed and "wall" in printed and "density 1.000" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left behind


def test_default_model_is_the_trained_one_with_its_prompt(tmp_path, capsys, monkeypatch):
    import dit_sparse.generation as generation

    seen = []
    real = generation.generate

    def recording(pipe, request, **kwargs):
        seen.append((type(pipe.transformer).__name__, request.prompt))
        return real(pipe, request, **kwargs)

    monkeypatch.setattr(generation, "generate", recording)
    out = tmp_path / "clip.mp4"
    code = main(["generate", "--frames", "5", "--steps", "1", "--output", str(out)])
    assert code == 0
    assert seen == [("WanTransformer3DModel", PRESETS["wan-shapes"].prompt)]
    assert iio.imread(out).shape == (5, 64, 64, 3)
    assert "random weights" not in capsys.readouterr().out


def test_presets_lists_every_preset_and_the_default(capsys):
    assert main(["presets"]) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}" in printed for name in PRESETS)
    assert "wan-shapes (default)" in printed and "trained" in printed


def test_options_read_python_literals_and_lowercase_booleans():
    parsed = parse_options(["a=0.5", "b=(1, 2)", "c=true", "d=FALSE", "e=False", "f=wan", "g=None"])
    assert parsed == {
        "a": 0.5,
        "b": (1, 2),
        "c": True,
        "d": False,
        "e": False,
        "f": "wan",
        "g": None,
    }


@pytest.mark.parametrize(
    "args,reason",
    [
        (["--frames", "16"], "frames must be 4*n + 1"),
        (["--height", "60"], "multiple of 16"),
        (["--method", "nope"], "unknown method"),
        (["--option", "bogus=1"], "bad option"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--output", "x.gif"], "--output must end in .mp4"),
        (["--model", "not-a-model"], "neither a preset"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(tmp_path, args, reason):
    out = tmp_path / "x.mp4"
    if "--output" not in args:
        args = [*args, "--output", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "dit_sparse.cli", "generate", "--steps", "1", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and reason in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_hub_weights_name_the_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from dit_sparse.pipelines.loading import ModelUnavailableError, load_pipeline

    with pytest.raises(
        ModelUnavailableError, match="huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    ):
        load_pipeline("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def _generate_fails(args, capsys, monkeypatch):
    """Run ``generate`` with ``args``, which must fail before any model is loaded; return the
    exit code and stderr."""
    import dit_sparse.pipelines.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load_pipeline", no_loading)
    code = main(["generate", "--steps", "1", *args])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "option,message",
    [
        (
            "decay_factor=abc",
            "--option decay_factor=abc: Radial option decay_factor takes a number",
        ),
        ("block_size=1.5", "block_size takes an integer, got '1.5'"),
        ("model_type=3", "model_type must be one of wan, hunyuan"),
        ("dense_steps=true", "dense_steps takes a number, got 'true'"),
    ],
)
def test_option_of_the_wrong_type_names_the_option_and_its_type(
    tmp_path, capsys, monkeypatch, option, message
):
    code, err = _generate_fails(
        ["--method", "radial", "-o", option, "--output", str(tmp_path / "x.mp4")],
        capsys,
        monkeypatch,
    )
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_options_are_read_as_the_method_takes_them():
    assert parse_options(["decay_factor=inf", "model_type=wan"], "radial") == {
        "decay_factor": float("inf"),
        "model_type": "wan",
    }
    assert parse_options(["search_steps=0.1,0.5", "warmup_lse=FALSE"], "adaspa") == {
        "search_steps": (0.1, 0.5),
        "warmup_lse": False,
    }


def test_unwritable_outputs_are_refused_before_loading(tmp_path, capsys, monkeypatch):
    (tmp_path / "folder.mp4").mkdir()
    cases = [
        (tmp_path / "folder.mp4", "is a directory"),
        (tmp_path / "missing" / "x.mp4", "does not exist"),
        (tmp_path / "x.gif", "must end in .mp4"),
        (tmp_path / "x.png", "must end in .mp4 (.png only for one frame)"),
    ]
    for path, message in cases:
        code, err = _generate_fails(["--output", str(path)], capsys, monkeypatch)
        assert code == 2 and err.startswith("dit-sparse generate: error: --output"), err
        assert message in err, err
    assert not (tmp_path / "missing").exists()


def test_a_folder_without_write_permission_is_refused(tmp_path, capsys, monkeypatch):
    import dit_sparse.utils as utils

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Simulated: as root, chmod does not stop a write.
    monkeypatch.setattr(utils.tempfile, "NamedTemporaryFile", denied)
    code, err = _generate_fails(["--output", str(tmp_path / "x.mp4")], capsys, monkeypatch)
    assert code == 2 and "cannot write in folder" in err and "Permission denied" in err, err


def test_an_interrupted_write_leaves_no_file_and_the_old_one_whole(tmp_path, monkeypatch):
    import imageio.v2
    import numpy as np

    from dit_sparse.generation import save_frames

    out = tmp_path / "clip.mp4"
    out.write_bytes(b"the previous clip")

    def interrupted(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half a clip")
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.v2, "mimwrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_frames(np.zeros((3, 8, 8, 3), np.float32), out)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    assert out.read_bytes() == b"the previous clip"
    with pytest.raises(KeyboardInterrupt):
        save_frames(np.zeros((3, 8, 8, 3), np.float32), tmp_path / "new.mp4")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_written_file_gets_the_usual_mode(tmp_path):
    import os

    from dit_sparse.utils import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_prompts_outside_the_vocabulary_get_a_warning_naming_it(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "x.mp4")
    with pytest.raises(AssertionError, match="model was loaded"):
        _generate_fails(["--prompt", "a dog on a beach", "--output", out], capsys, monkeypatch)
    err = capsys.readouterr().err
    assert "warning: wan-shapes was trained only on prompts" in err
    assert "colour: red, yellow" in err and "'a dog on a beach' is not one" in err
    with pytest.raises(AssertionError, match="model was loaded"):
        _generate_fails(["--output", out], capsys, monkeypatch)  # the example prompt
    assert "warning" not in capsys.readouterr().err
    assert PRESETS["tiny-wan"].warn_about("anything") is None  # random weights: no vocabulary


def test_the_default_generation_is_the_checked_one():
    """The preset's defaults are those `training/default_demo_check.py` recorded (rerun it
    when they change), and there the example prompt's clip passed at seed 0."""
    import argparse
    import json
    from pathlib import Path

    from dit_sparse.cli import fill_size_defaults

    record = json.loads(
        (Path(__file__).parent.parent / "training" / "default_demo_check.json").read_text()
    )
    args = argparse.Namespace(model="wan-shapes", frames=None, height=None, width=None)
    args.steps = args.guidance = None
    fill_size_defaults(args)
    preset = PRESETS["wan-shapes"]
    checked = {k: getattr(args, k) for k in ("frames", "height", "width", "steps", "guidance")}
    assert record["complete"] and record["prompt"] == preset.prompt
    assert record["settings"] == checked
    for method in record["passed"]:
        runs = [r for r in record["runs"] if r["method"] == method]
        assert next(r for r in runs if r["seed"] == 0)["passed"], method
        assert 2 * sum(r["passed"] for r in runs) > len(runs), method
