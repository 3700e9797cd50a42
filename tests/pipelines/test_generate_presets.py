"""`dit-sparse generate --model tiny-X --method M` for each video preset (Flux: test_flux)."""

import imageio.v3 as iio
import pytest

from dit_sparse.cli import main


@pytest.mark.parametrize(
    "model,method,frames,height,width",
    [
        ("tiny-hunyuan", "svg", 9, 32, 32),  # 3 latent frames of 4x4 tokens + 256 text
        ("tiny-cogvideox", "radial", 9, 64, 64),  # 3 latent frames of 4x4 tokens, 226 text
        ("tiny-ltx", "adaspa", 17, 128, 128),  # 3 latent frames of 4x4 tokens
    ],
)
def test_generate_writes_the_video(tmp_path, capsys, model, method, frames, height, width):
    out = tmp_path / "clip.mp4"
    args = ["generate", "--model", model, "--method", method, "-o", "dense_steps=0"]
    args += ["--frames", str(frames), "--height", str(height), "--width", str(width)]
    assert main([*args, "--steps", "2", "--output", str(out)]) == 0
    assert iio.imread(out).shape == (frames, height, width, 3)
    assert f"method {method}" in capsys.readouterr().out
