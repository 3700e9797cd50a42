import json
import math
import urllib.error

import numpy as np
import pytest
import torch

from dit_sparse.quality import metrics
from dit_sparse.quality.metrics import LpipsScorer, LpipsUnavailable, compare_videos, load_lpips
from dit_sparse.quality.report import fmt, json_safe, write_json


def _video(frames=3, size=32, seed=0):
    # Values kept inside [0.25, 0.75] so that small offsets never clip.
    rng = np.random.default_rng(seed)
    return (0.25 + 0.5 * rng.random((frames, size, size, 3))).astype(np.float32)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A torchvision AlexNet state dict with random weights: LPIPS plumbing without a download."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lpips") / "alexnet-random.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def test_psnr_matches_the_formula_per_frame_and_over_the_clip():
    reference = _video()
    offsets = np.array([0.01, 0.02, 0.05], dtype=np.float32)
    test = reference + offsets[:, None, None, None]
    result = compare_videos(reference, test)
    assert result.psnr == pytest.approx(-20 * np.log10(offsets), abs=1e-3)  # 40, 34, 26 dB
    assert result.video_psnr == pytest.approx(-10 * np.log10(np.mean(offsets**2)), abs=1e-3)
    assert all(0.0 < s < 1.0 for s in result.ssim)


def test_identical_videos_give_infinite_psnr_written_as_inf():
    video = _video()
    result = compare_videos(video, video.copy())
    assert result.psnr == [math.inf] * 3 and result.video_psnr == math.inf
    assert result.ssim == pytest.approx([1.0] * 3)
    document = json_safe(result.as_dict())
    assert document["psnr"] == "inf" and document["per_frame"]["psnr"] == ["inf"] * 3
    assert fmt(result.video_psnr, ".2f") == "inf" and float(document["psnr"]) == math.inf


def test_results_json_is_strict(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"psnr": math.inf, "nested": [-math.inf, math.nan, 1.5]})
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert loaded == {"psnr": "inf", "nested": ["-inf", "nan", 1.5]}


def test_lpips_matches_the_lpips_package_with_the_same_trunk(alexnet_file, monkeypatch):
    import lpips
    import torchvision

    scorer = load_lpips(alexnet_file)
    assert isinstance(scorer, LpipsScorer)
    # lpips' own construction, with torchvision handing it the same AlexNet weights.
    alexnet = torchvision.models.alexnet(weights=None)
    alexnet.load_state_dict(torch.load(alexnet_file))
    monkeypatch.setattr(lpips.pretrained_networks.tv, "alexnet", lambda **_: alexnet)
    expected_model = lpips.LPIPS(net="alex", verbose=False)

    reference, test = _video(seed=1), _video(seed=2)
    result = compare_videos(reference, test, scorer)
    as_nchw = [torch.from_numpy(v).permute(0, 3, 1, 2) for v in (reference, test)]
    with torch.no_grad():
        expected = expected_model(*as_nchw, normalize=True).flatten()
    assert result.lpips == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)
    assert compare_videos(reference, reference, scorer).lpips == pytest.approx([0.0] * 3)


def test_lpips_unavailable_offline_is_recorded_not_raised(monkeypatch):
    def offline():
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(metrics, "_fetch_alexnet_weights", offline)
    scorer = load_lpips()
    assert isinstance(scorer, LpipsUnavailable) and "URLError" in scorer.reason
    result = compare_videos(_video(), _video(seed=3), scorer)
    assert result.lpips is None and result.mean_lpips is None
    assert result.lpips_note == scorer.reason
    assert result.as_dict()["lpips"] is None


def test_lpips_skips_frames_too_small_for_alexnet(alexnet_file):
    result = compare_videos(_video(size=16), _video(size=16, seed=4), load_lpips(alexnet_file))
    assert result.lpips is None and "too small" in result.lpips_note


def test_bad_lpips_weights_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_lpips(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="AlexNet"):
        load_lpips(wrong)
