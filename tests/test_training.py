"""``training/train_shapes.py``'s weight widening: a shipped model gains motion channels."""

import sys
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

from dit_sparse.pipelines.presets import build_preset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
from train_shapes import widen_channels  # noqa: E402


def test_widened_model_matches_the_narrow_one_on_pixel_channels():
    narrow = build_preset("tiny-wan").transformer  # 16 latent channels, random weights
    config = {**narrow.config, "in_channels": 18, "out_channels": 18}
    wide = WanTransformer3DModel.from_config(config)
    tensors = {f"model/{k}": v.clone() for k, v in narrow.state_dict().items()}
    widen_channels(tensors, wide)
    wide.load_state_dict({k.split("/", 1)[1]: v for k, v in tensors.items()})
    latents = torch.randn(2, 18, 3, 4, 4)
    text = torch.randn(2, 5, 64)
    timestep = torch.tensor([300.0, 900.0])
    with torch.no_grad():
        before = narrow(latents[:, :16], timestep, text, return_dict=False)[0]
        after = wide(latents, timestep, text, return_dict=False)[0]
    # The new input channels are ignored and the new outputs start at zero.
    torch.testing.assert_close(after[:, :16], before, rtol=1e-5, atol=1e-5)
    assert torch.equal(after[:, 16:], torch.zeros_like(after[:, 16:]))
