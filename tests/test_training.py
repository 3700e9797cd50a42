"""Training code (``training/``, on the path through conftest): ``train_shapes.py``'s weight
widening (a shipped model gains motion channels) and the run records' JSON lists."""

import json

import pytest
import torch
from diffusers import WanTransformer3DModel
from records import append_json_record
from train_shapes import widen_channels

from dit_sparse.pipelines.presets import build_preset


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


def test_append_json_record_builds_a_list_and_keeps_it_whole_on_failure(tmp_path):
    path = tmp_path / "runs.json"
    append_json_record(path, {"run": 1})
    append_json_record(path, {"run": 2})
    assert json.loads(path.read_text()) == [{"run": 1}, {"run": 2}]
    with pytest.raises(TypeError):
        append_json_record(path, {"run": object()})
    assert json.loads(path.read_text()) == [{"run": 1}, {"run": 2}]
    assert [p.name for p in tmp_path.iterdir()] == ["runs.json"]
