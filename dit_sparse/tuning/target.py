"""The quality a tune must keep: a metric against dense, a floor, and how far one prompt may
fall below it.

``QualityTarget.parse("psnr=24")``: the mean over the tuning prompts must reach 24 dB, and no
prompt may score more than ``margin`` below 24. SSIM works the same way; LPIPS (lower is
better) the other way round, and needs its weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..quality.metrics import VideoMetrics

# metric -> (higher is better, default margin: how far one prompt may fall short)
METRICS: dict[str, tuple[bool, float]] = {
    "psnr": (True, 2.0),
    "ssim": (True, 0.05),
    "lpips": (False, 0.05),
}


@dataclass(frozen=True)
class QualityTarget:
    """``metric`` (psnr, ssim or lpips) against dense must reach ``value`` on average over
    the prompts, and every prompt must come within ``margin`` of it."""

    metric: str
    value: float
    margin: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(
                f"unknown target metric {self.metric!r}; accepted: {', '.join(METRICS)}"
            )
        if not math.isfinite(self.value):
            raise ValueError(f"the target value must be a finite number, got {self.value}")
        if not self.margin >= 0:
            raise ValueError(f"the target margin must be >= 0, got {self.margin}")

    @classmethod
    def parse(cls, text: str, margin: float | None = None) -> QualityTarget:
        """``"psnr=24"`` -> the target; ``margin`` defaults to the metric's (`METRICS`).
        ``ValueError`` names what was wrong and what is accepted."""
        metric, sep, value = text.partition("=")
        metric = metric.strip().lower()
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not metric or number is None:
            raise ValueError(
                f"a target is METRIC=VALUE with METRIC one of {', '.join(METRICS)}, "
                f"e.g. psnr=24; got {text!r}"
            )
        if metric not in METRICS:
            raise ValueError(f"unknown target metric {metric!r}; accepted: {', '.join(METRICS)}")
        return cls(metric, number, METRICS[metric][1] if margin is None else margin)

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][0]

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g} (margin {self.margin:g})"

    def score(self, metrics: VideoMetrics) -> float:
        """The target's metric of one video against its dense reference."""
        if self.metric == "psnr":
            return metrics.video_psnr
        if self.metric == "ssim":
            return metrics.mean_ssim
        if metrics.mean_lpips is None:
            raise ValueError(f"an lpips target needs LPIPS, which is missing: {metrics.lpips_note}")
        return metrics.mean_lpips

    def _at_least(self, score: float, bound: float) -> bool:
        return score >= bound if self.higher_is_better else score <= bound

    def prompt_ok(self, score: float) -> bool:
        """Whether one prompt's score is within the margin of the target."""
        floor = self.value - self.margin if self.higher_is_better else self.value + self.margin
        return self._at_least(score, floor)

    def met(self, scores: list[float]) -> bool:
        """Whether scores over every tuning prompt meet the target: mean and each prompt."""
        if not scores:
            return False
        finite = [min(s, 1e3) for s in scores]  # an identical video (psnr inf) counts as high
        mean = sum(finite) / len(finite)
        return self._at_least(mean, self.value) and all(self.prompt_ok(s) for s in scores)
