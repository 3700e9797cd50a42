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
