"""Run a plan of generations: dense once per (prompt, seed), then every method setting.

Each method run starts from the same seed (so the same initial latents) as its dense
reference, is timed end to end, reads attention time and density from the handle, and is
compared with the dense video frame by frame. A run that fails is recorded with its error and
the plan goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

import dit_sparse

from .. import caches
from ..generation import GenerationRequest, generate
from ..methods import Dense, SparseMethod, resolve_method
from .metrics import LpipsScorer, LpipsUnavailable, VideoMetrics, compare_videos


@dataclass(frozen=True)
class Case:
    """One prompt and seed; ``index`` is the prompt's position in the prompt list."""

    index: int
    prompt: str
    seed: int

    @property
    def slug(self) -> str:
        return f"p{self.index}-seed{self.seed}"


@dataclass(frozen=True)
class Setting:
    """A method with its options, under a label such as ``radial(decay_factor=0.5)``, and
    optionally a diffusers step cache (``cache``: a `dit_sparse.caches` spec) beside it."""

    label: str
    method: SparseMethod
    cache: str | None = None

    @property
    def is_dense(self) -> bool:
        """The reference: the model's own attention with no cache (``dense`` with
        ``dense_precision="8bit"`` runs our kernel, so it is measured like a method)."""
        return (
            isinstance(self.method, Dense)
            and self.method.dense_precision == "model"
            and self.cache is None
        )


def setting_label(method: SparseMethod) -> str:
    """The method's name plus the options that differ from its defaults."""
    defaults = type(method)()
    changed = [
        f"{f.name}={getattr(method, f.name)!r}"
        for f in fields(method)
        if getattr(method, f.name) != getattr(defaults, f.name)
    ]
    return f"{method.name}({', '.join(changed)})" if changed else method.name


def make_settings(
    methods: list[str],
    options: dict[str, dict[str, Any]] | None = None,
    sweeps: dict[str, dict[str, list[Any]]] | None = None,
    caches: list[str] | None = None,
) -> list[Setting]:
    """Settings for ``methods`` in order: ``options[name]`` applies to every setting of that
    method; ``sweeps[name][key]`` lists values, and several swept keys of one method combine
    as a grid. Each of ``caches`` (step-cache specs) then runs with every one of those
    settings (with dense: the cache alone), labelled ``method + cache``, after them.
    Raises ``ValueError`` for unknown methods, options, or sweeps of unlisted methods.
    """
    options, sweeps = options or {}, sweeps or {}
    for kind, named in (("option", options), ("sweep", sweeps)):
        stray = sorted(set(named) - set(methods))
        if stray:
            raise ValueError(f"{kind} for {', '.join(stray)}, which is not in the methods list")
    settings: list[Setting] = []
    for name in methods:
        swept = sweeps.get(name, {})
        for values in itertools.product(*swept.values()):
            try:
                method = resolve_method(name, **options.get(name, {}), **dict(zip(swept, values)))
            except TypeError as err:
                raise ValueError(str(err)) from None
            settings.append(Setting(setting_label(method), method))
    settings += [
        Setting(f"{s.label} + {cache}", s.method, cache) for cache in caches or [] for s in settings
    ]
    labels = [s.label for s in settings]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"settings listed twice: {', '.join(duplicates)}")
    return settings


@dataclass
class RunRecord:
    """One generation of the plan: times, attention statistics, metrics or the error."""

    case: Case
    setting: Setting
    seconds: float | None = None
    dense_seconds: float | None = None
    attention: dict[str, Any] = field(default_factory=dict)
    metrics: VideoMetrics | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def speedup(self) -> float | None:
        if self.seconds and self.dense_seconds:
            return self.dense_seconds / self.seconds
        return None

    @property
    def attention_share(self) -> float | None:
        attention = self.attention.get("attention_seconds")
        return attention / self.seconds if self.seconds and attention is not None else None


@dataclass
class BenchResult:
    """Everything a bench run measured, in plan order."""

    request: GenerationRequest
    cases: list[Case]
    settings: list[Setting]
    runs: list[RunRecord]
    warmups: list[RunRecord]
    lpips_note: str | None


VideoSink = Callable[[RunRecord, np.ndarray, np.ndarray], None]


@contextlib.contextmanager
def _recording_errors(record: RunRecord) -> Iterator[None]:
    """Keep an exception of the block in ``record`` instead of raising it: one failed run
    must not end the plan. Releases what an out-of-memory run left cached on the GPU."""
    try:
        yield
    except Exception as err:  # noqa: BLE001
        record.error = f"{type(err).__name__}: {err}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextlib.contextmanager
def step_cache(
    pipe: Any, spec: str | None, request: GenerationRequest, calibrated: dict[str, str]
) -> Iterator[None]:
    """The step cache ``spec`` enabled on ``pipe`` for the block (none for None). MagCache is
    calibrated once, untimed, and ``calibrated`` keeps each spec with what it measured."""
    if spec is None:
        yield
        return
    if spec not in calibrated:
        calibrate = lambda: generate(pipe, request, progress=False)  # noqa: E731
        config = caches.enable_cache(pipe, spec, num_steps=request.steps, calibrate=calibrate)
        ratios = getattr(config, "mag_ratios", None)
        keep = "mag_ratios" in spec or ratios is None
        calibrated[spec] = spec if keep else f"{spec},mag_ratios={ratios.tolist()}"
    else:
        caches.enable_cache(pipe, calibrated[spec], num_steps=request.steps)
    try:
        yield
    finally:
        caches.disable_cache(pipe)


class _Runner:
    """Runs generations for `run_bench`, keeping records, warm-ups and the progress bar."""

    def __init__(self, pipe: Any, bar: Any, warmup_each: bool) -> None:
        self.pipe = pipe
        self.bar = bar
        self.warmup_each = warmup_each
        self.runs: list[RunRecord] = []
        self.warmups: list[RunRecord] = []
        self.calibrated: dict[str, str] = {}  # cache spec -> with MagCache's ratios

    def generate(self, record: RunRecord, request: GenerationRequest) -> np.ndarray | None:
        """One timed generation under ``record``'s method and cache: fills its time and
        attention summary and returns the frames, or records the error and returns None."""
        setting = record.setting
        with (
            _recording_errors(record),
            step_cache(self.pipe, setting.cache, request, self.calibrated),
            dit_sparse.attached(self.pipe, setting.method) as h,
        ):
            result = generate(self.pipe, request, progress=False)
            record.seconds, record.attention = result.seconds, h.summary()
            return result.frames
        return None

    def run(
        self, case: Case, setting: Setting, request: GenerationRequest, dense: RunRecord | None
    ) -> tuple[RunRecord, np.ndarray | None]:
        """Warm ``setting`` up if due, then time it on ``case`` (against ``dense``, if given)."""
        warmed = any(w.setting is setting for w in self.warmups)
        if not self.warmups or (self.warmup_each and not warmed):
            warmup = RunRecord(case, setting)
            self.bar.set_postfix_str(f"warm-up {setting.label}")
            self.generate(warmup, request)
            self.warmups.append(warmup)
            self.bar.update()
        record = RunRecord(case, setting, dense_seconds=dense.seconds if dense else None)
        self.bar.set_postfix_str(f"{setting.label} {case.slug}")
        self.runs.append(record)
        frames = self.generate(record, request)
        self.bar.update()
        return record, frames


def run_bench(
    pipe: Any,
    request: GenerationRequest,
    cases: list[Case],
    settings: list[Setting],
    *,
    lpips: LpipsScorer | LpipsUnavailable | None = None,
    metrics_device: str | torch.device = "cpu",
    warmup_each: bool = False,
    on_video: VideoSink | None = None,
    progress: bool = True,
) -> BenchResult:
    """Run the plan on ``pipe``; ``request`` gives size, steps and guidance (its prompt and
    seed are replaced by each case's).

    One untimed dense generation warms the model up first (allocator, cuDNN/cuBLAS choices);
    with ``warmup_each`` every method setting also runs once untimed before its first timed
    run, so that Triton's compilation and autotuning stay out of the numbers. ``on_video`` is
    called with each scored method run, the dense frames and the method's frames.
    """
    from tqdm.auto import tqdm

    if not cases or not settings:
        raise ValueError("run_bench needs at least one case and one setting")
    reference = next((s for s in settings if s.is_dense), Setting("dense", Dense()))
    others = [s for s in settings if not s.is_dense]
    total = 1 + len(cases) * (1 + len(others)) + (len(others) if warmup_each else 0)
    bar = tqdm(total=total, desc="bench", unit="run", disable=not progress)
    runner = _Runner(pipe, bar, warmup_each)
    for case in cases:
        case_request = dataclasses.replace(request, prompt=case.prompt, seed=case.seed)
        dense, dense_frames = runner.run(case, reference, case_request, None)
        dense.dense_seconds = dense.seconds
        for setting in others:
            if dense_frames is None:
                skipped = RunRecord(
                    case, setting, error="skipped: the dense run of this case failed"
                )
                runner.runs.append(skipped)
                bar.update()
                continue
            record, frames = runner.run(case, setting, case_request, dense)
            if frames is None:
                continue
            with _recording_errors(record):
                record.metrics = compare_videos(dense_frames, frames, lpips, metrics_device)
                if on_video is not None:
                    on_video(record, dense_frames, frames)
    bar.close()
    return BenchResult(
        request=request,
        cases=cases,
        settings=[reference, *others],
        runs=runner.runs,
        warmups=runner.warmups,
        lpips_note=lpips.reason if isinstance(lpips, LpipsUnavailable) else None,
    )


@dataclass
class SettingSummary:
    """One setting over every case: means, and the speedup of total dense over total time."""

    setting: Setting
    runs: int
    failed: int
    seconds: float | None
    speedup: float | None
    attention_seconds: float | None
    attention_share: float | None
    mean_density: float | None
    layers_skipped: float | None  # share of attention layer calls a step cache skipped
    psnr: float | None
    ssim: float | None
    lpips: float | None


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def summarize_runs(result: BenchResult) -> list[SettingSummary]:
    """One `SettingSummary` per setting, in plan order (the dense reference first)."""
    summaries = []
    for setting in result.settings:
        runs = [r for r in result.runs if r.setting is setting]
        ok = [r for r in runs if r.ok]
        timed = [r for r in ok if r.dense_seconds]
        scored = [r.metrics for r in ok if r.metrics is not None]
        summaries.append(
            SettingSummary(
                setting=setting,
                runs=len(runs),
                failed=len(runs) - len(ok),
                seconds=_mean([r.seconds for r in ok]),
                speedup=(
                    sum(r.dense_seconds for r in timed) / sum(r.seconds for r in timed)
                    if timed
                    else None
                ),
                attention_seconds=_mean([r.attention.get("attention_seconds") for r in ok]),
                attention_share=_mean([r.attention_share for r in ok]),
                mean_density=_mean([r.attention.get("mean_density") for r in ok]),
                layers_skipped=_mean([r.attention.get("layers_skipped") for r in ok]),
                psnr=_mean([m.video_psnr for m in scored]),
                ssim=_mean([m.mean_ssim for m in scored]),
                lpips=_mean([m.mean_lpips for m in scored]),
            )
        )
    return summaries
