"""The CLI's checks before loading, per family, on the hub ids it knows."""

import pytest

from dit_sparse.arguments import UsageError, check_video_args


@pytest.mark.parametrize(
    "model,frames,height,width",
    [
        ("hunyuanvideo-community/HunyuanVideo", 129, 720, 1280),
        ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v", 121, 480, 848),
        ("THUDM/CogVideoX-5b", 49, 480, 720),
        ("THUDM/CogVideoX1.5-5B", 81, 768, 1360),
        ("Lightricks/LTX-Video", 161, 512, 704),
        ("black-forest-labs/FLUX.1-dev", 1, 1024, 1024),
    ],
)
def test_default_sizes_pass(model, frames, height, width):
    check_video_args(model, frames, height, width, steps=50)


@pytest.mark.parametrize(
    "model,frames,height,width,reason",
    [
        ("hunyuanvideo-community/HunyuanVideo", 128, 720, 1280, r"4\*n \+ 1"),
        ("THUDM/CogVideoX-5b", 49, 480, 712, "multiple of 16"),
        ("Lightricks/LTX-Video", 125, 512, 704, r"8\*n \+ 1"),
        ("Lightricks/LTX-Video", 161, 496, 704, "multiple of 32"),
        ("black-forest-labs/FLUX.1-dev", 5, 1024, 1024, "image model"),
        ("black-forest-labs/FLUX.1-schnell", 1, 1000, 1024, "multiple of 16"),
    ],
)
def test_sizes_the_pipeline_cannot_take_are_refused(model, frames, height, width, reason):
    with pytest.raises(UsageError, match=reason):
        check_video_args(model, frames, height, width, steps=50)
