"""How far a video is from the dense reference: PSNR, SSIM and LPIPS, per frame and averaged.

Frames are ``float32 [F, H, W, 3]`` in ``[0, 1]`` (what `dit_sparse.generation.generate`
returns). PSNR and SSIM come from ``torchmetrics.functional``; LPIPS from the ``lpips`` package
with its AlexNet trunk. Identical frames have an infinite PSNR: it stays ``float("inf")`` here
and is written out by `dit_sparse.quality.report` (see ``INF_NOTE`` there).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Frames go through SSIM and LPIPS this many at a time: a 480p clip of 81 frames at once
# would need several GiB of intermediates.
_CHUNK = 8
# AlexNet's two stride-2 max-pools need at least this many pixels per side after its stride-4
# first convolution; smaller frames make `lpips` fail deep inside torch.
MIN_LPIPS_SIDE = 32


@dataclass
class VideoMetrics:
    """One video against its dense reference.

    ``psnr`` is in dB per frame (``inf`` where a frame is identical); ``lpips`` is ``None``
    when it could not be computed, with the reason in ``lpips_note``.
    """

    psnr: list[float]
    ssim: list[float]
    lpips: list[float] | None
    video_psnr: float
    lpips_note: str | None = None

    @property
    def mean_ssim(self) -> float:
        return float(np.mean(self.ssim))

    @property
    def mean_lpips(self) -> float | None:
        return float(np.mean(self.lpips)) if self.lpips is not None else None

    def as_dict(self) -> dict[str, object]:
        """Means first, then the per-frame lists (for ``results.json``)."""
        return {
            "psnr": self.video_psnr,
            "ssim": self.mean_ssim,
            "lpips": self.mean_lpips,
            "lpips_note": self.lpips_note,
            "per_frame": {"psnr": self.psnr, "ssim": self.ssim, "lpips": self.lpips},
        }


class LpipsUnavailable:
    """Stands in for an `LpipsScorer` when its weights could not be had; says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _fetch_alexnet_weights() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet AlexNet state dict: from torch hub's cache, else downloaded."""
    from torchvision.models import AlexNet_Weights

    return AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=False)


class LpipsScorer:
    """LPIPS (AlexNet, v0.1) as ``lpips.LPIPS`` computes it, with the trunk weights loaded here.

    The linear calibration layers ship inside the ``lpips`` package; only the AlexNet trunk
    needs ImageNet weights. Building the trunk empty and loading those weights ourselves lets
    them come from a local file (``weights``) instead of torchvision's download.
    """

    def __init__(self, alexnet_state: dict[str, torch.Tensor], device: str | torch.device = "cpu"):
        import lpips

        with warnings.catch_warnings():  # lpips still passes torchvision's deprecated pretrained=
            warnings.simplefilter("ignore", UserWarning)
            self.model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        _load_alexnet_trunk(self.model.net, alexnet_state)
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
        """Per-frame distance for ``[N, 3, H, W]`` frames in ``[0, 1]``."""
        ref, out = reference.to(self.device), test.to(self.device)
        return self.model(ref, out, normalize=True).flatten().cpu()


def _load_alexnet_trunk(trunk: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy torchvision AlexNet ``features.*`` weights into lpips' sliced trunk.

    lpips keeps torchvision's layer indices as child names across its slices (``slice2.3`` is
    ``features.3``), so the feature keys map one to one.
    """
    layers = {
        name: child
        for index in range(1, trunk.N_slices + 1)
        for name, child in getattr(trunk, f"slice{index}").named_children()
    }
    features = {
        k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
    }
    try:
        torch.nn.ModuleDict(layers).load_state_dict(features, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"not a torchvision AlexNet state dict (features.0.weight, ...): {err}"
        ) from None


def load_lpips(
    weights: str | Path | None = None, device: str | torch.device = "cpu"
) -> LpipsScorer | LpipsUnavailable:
    """An `LpipsScorer`, or `LpipsUnavailable` (with the reason) when the AlexNet weights are
    missing; the caller says so once and records LPIPS as missing.

    ``weights`` is a local torchvision AlexNet state dict (``alexnet-owt-7be5be79.pth``); without
    it torchvision's cached copy is used, or downloaded. A ``weights`` file that is missing or
    is not an AlexNet state dict raises ``ValueError``: that is a mistake to fix, not a
    machine without network.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(f"LPIPS weights file not found: {path}")
        return LpipsScorer(torch.load(path, map_location="cpu", weights_only=True), device)
    try:
        state = _fetch_alexnet_weights()
    except Exception as err:  # noqa: BLE001  (offline shows up as URLError, OSError, ...)
        return LpipsUnavailable(
            f"AlexNet ImageNet weights unavailable ({type(err).__name__}: {err}); "
            "pass a local torchvision alexnet-owt-7be5be79.pth as the LPIPS weights"
        )
    return LpipsScorer(state, device)


def _chunks(frames: torch.Tensor) -> Iterator[slice]:
    for start in range(0, len(frames), _CHUNK):
        yield slice(start, start + _CHUNK)


def _to_nchw(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got shape {frames.shape}")
    return (
        torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        .to(device)
        .permute(0, 3, 1, 2)
    )


def compare_videos(
    reference: np.ndarray,
    test: np.ndarray,
    lpips: LpipsScorer | LpipsUnavailable | None = None,
    device: str | torch.device = "cpu",
) -> VideoMetrics:
    """PSNR, SSIM and LPIPS of ``test`` against ``reference``, both ``float [F, H, W, 3]``.

    ``video_psnr`` is the PSNR of the whole clip (from the MSE over all frames), not the mean
    of per-frame dB, so one frame that happens to be identical does not make it infinite.
    """
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    if reference.shape != test.shape:
        raise ValueError(f"videos differ in shape: {reference.shape} vs {test.shape}")
    device = torch.device(device)
    ref, out = _to_nchw(reference, device), _to_nchw(test, device)
    psnr, ssim = [], []
    for part in _chunks(ref):
        psnr += peak_signal_noise_ratio(
            out[part], ref[part], data_range=1.0, reduction="none", dim=(1, 2, 3)
        ).tolist()
        ssim += structural_similarity_index_measure(
            out[part], ref[part], data_range=1.0, reduction="none"
        ).tolist()
    lpips_values, note = _lpips_per_frame(lpips, ref, out)
    return VideoMetrics(
        psnr=psnr,
        ssim=ssim,
        lpips=lpips_values,
        video_psnr=float(peak_signal_noise_ratio(out, ref, data_range=1.0)),
        lpips_note=note,
    )


def _lpips_per_frame(
    scorer: LpipsScorer | LpipsUnavailable | None, ref: torch.Tensor, out: torch.Tensor
) -> tuple[list[float] | None, str | None]:
    if scorer is None:
        return None, "LPIPS not requested"
    if isinstance(scorer, LpipsUnavailable):
        return None, scorer.reason
    if min(ref.shape[-2:]) < MIN_LPIPS_SIDE:
        return None, f"frames under {MIN_LPIPS_SIDE} px a side are too small for LPIPS' AlexNet"
    return [v for part in _chunks(ref) for v in scorer(ref[part], out[part]).tolist()], None
