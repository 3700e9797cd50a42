"""`tune`: the fastest setting whose quality against dense meets a target, on the user's model.

Dense runs once per tuning prompt (frames and the latents at the drift checkpoints kept).
Then, per method and per dense schedule (least dense first), the method's density knob is
bisected for the sparsest value that meets the target (`bisect.first_passing`): a schedule
that keeps dense all that a finished one did passes wherever that one passed, so its search
stops there; knob values whose time-model lower bound is no faster than the best setting so
far (dense to begin with) are never run. A candidate runs prompt by prompt, and stops at the
first prompt below the per-prompt floor, or mid-generation when its latents drift past a run
that already missed it (`drift.EarlyStopRule`). Optionally the best setting is then tried with
step caches and 8-bit attention. Of the candidates that met the target, the one with the
lowest predicted time (`time_model.TimeModel`) wins; dense when none did.

Cost: ``len(prompts)`` dense generations, then at most ``len(prompts)`` per candidate, and
per (method, schedule) at most ``ceil(log2(values + 1))`` candidates (3 for the default
knobs), plus one per cache and one for 8-bit: with 2 prompts, 3 methods and the 6 default
schedules at most 2 + 2 * 3 * 6 * 3 = 110 generations; pruning, the schedules' shared
boundaries and early stops cut that much further (the profile's ``cost`` says by how much).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import dit_sparse

from ..api import SparseHandle
from ..generation import GenerationRequest, GenerationResult, generate
from ..methods import Dense
from ..quality.environment import environment
from ..quality.harness import Setting, setting_label, step_cache
from ..quality.metrics import LpipsScorer, LpipsUnavailable, compare_videos, load_lpips
from . import space
from .bisect import first_passing
from .drift import EarlyStopRule, StopGeneration, checkpoint_steps, latent_recorder
from .profile import Profile, model_identity
from .target import QualityTarget
from .time_model import TimeModel

DEFAULT_METHODS = ("radial", "svg", "adaspa")


@dataclass
class _Reference:
    """Dense's clip and checkpoint latents for one tuning prompt."""

    frames: np.ndarray
    latents: dict[int, torch.Tensor]


class _Tuner:
    """Runs and scores candidates against dense; keeps every candidate and the best one."""

    def __init__(
        self,
        pipe: Any,
        request: GenerationRequest,
        prompts: list[str],
        target: QualityTarget,
        lpips: LpipsScorer | None,
        log: Callable[[str], None],
    ):
        self.pipe = pipe
        self.log = log
        self.request = request
        self.prompts = prompts
        self.target = target
        self.lpips = lpips
        self.device = pipe._execution_device
        self.checkpoints = checkpoint_steps(request.steps)
        self.rule = EarlyStopRule()
        self.references: list[_Reference] = []
        self.candidates: list[dict[str, Any]] = []
        self.settings: dict[str, Setting] = {}
        self.calibrated: dict[str, str] = {}
        self.pruned: list[dict[str, Any]] = []
        self.generations = 0
        self.steps_run = 0
        self.model: TimeModel | None = None
        self.best: dict[str, Any] | None = None

    def _generate(
        self, setting: Setting, index: int, on_step: Callable[[int, torch.Tensor], None]
    ) -> tuple[GenerationResult, SparseHandle]:
        """One generation of ``setting`` on prompt ``index`` and the (removed) handle that
        recorded it, counting the generation and every step it runs."""
        request = dataclasses.replace(self.request, prompt=self.prompts[index])

        def counted(step: int, latents: torch.Tensor) -> None:
            self.steps_run += 1
            on_step(step, latents)

        self.generations += 1
        with (
            step_cache(self.pipe, setting.cache, request, self.calibrated),
            dit_sparse.attached(self.pipe, setting.method) as handle,
        ):
            result = generate(self.pipe, request, progress=False, on_step=counted)
            return result, handle

    def run_dense(self) -> TimeModel:
        """Dense once per prompt; the references and the time model from them."""
        runs, layouts, layers = [], [], 0
        for index in range(len(self.prompts)):
            latents: dict[int, torch.Tensor] = {}
            recorder = latent_recorder(self.checkpoints, latents)
            result, handle = self._generate(Setting("dense", Dense()), index, recorder)
            self.references.append(_Reference(result.frames, latents))
            runs.append((result.seconds, handle.summary()))
            layouts += handle.layouts()
            layers = sum(runtime.num_layers for runtime in handle.runtimes)
        if not layouts:
            raise ValueError("the dense run attended over no video layout dit_sparse handles")
        measured = self.device.type == "cuda"
        steps = self.request.steps
        self.model = TimeModel.from_dense(runs, steps, layers, layouts[0], measured)
        dense_seconds = self.model.predict(min(runs, key=lambda run: run[0])[1])
        self.best = self._record(Setting("dense", Dense()), "reference")
        self.best.update(passed=True, predicted_seconds=dense_seconds, mean_density=1.0)
        self.best.update(generations=len(self.prompts), measured_seconds=[s for s, _ in runs])
        self.candidates.append(self.best)
        return self.model

    def _record(self, setting: Setting, phase: str) -> dict[str, Any]:
        self.settings[setting.label] = setting
        return {
            "label": setting.label,
            "method": setting.method.name,
            "options": setting.method.options(),
            "cache": setting.cache,
            "phase": phase,
            "passed": False,
            "scores": [],
            "mean_score": None,
            "predicted_seconds": None,
            "measured_seconds": [],
            "mean_density": None,
            "layers_skipped": None,
            "drift": [],
            "stopped": None,
            "error": None,
            "generations": 0,
        }

    def evaluate(self, setting: Setting, phase: str) -> dict[str, Any]:
        """Run ``setting`` prompt by prompt against dense (see the module docstring)."""
        record = self._record(setting, phase)
        summaries = []
        for index, reference in enumerate(self.references):
            drifts: dict[int, float] = {}
            stop = functools.partial(self.rule.should_stop, index)
            recorder = latent_recorder(self.checkpoints, {}, reference.latents, drifts, stop)
            record["generations"] += 1
            try:
                result, handle = self._generate(setting, index, recorder)
            except StopGeneration as stopped:
                record["stopped"] = {"prompt": index, "step": stopped.step, "drift": stopped.drift}
                record["drift"].append(drifts)
                break
            except (RuntimeError, ValueError) as err:  # a layout the method refuses, ...
                record["error"] = f"{type(err).__name__}: {err}"
                break
            record["drift"].append(drifts)
            metrics = compare_videos(reference.frames, result.frames, self.lpips, self.device)
            score = self.target.score(metrics)
            record["scores"].append(score)
            record["measured_seconds"].append(result.seconds)
            summaries.append(handle.summary())
            if not self.target.prompt_ok(score):
                self.rule.record_failure(index, drifts[self.checkpoints[-1]])
                break
        else:
            record["passed"] = self.target.met(record["scores"])
        record["cache"] = self.calibrated.get(setting.cache, setting.cache)  # MagCache's ratios
        if summaries:
            record.update(
                predicted_seconds=self.model.predict_runs(summaries),
                mean_density=float(np.mean([s["mean_density"] for s in summaries])),
                layers_skipped=float(np.mean([s["layers_skipped"] for s in summaries])),
            )
        if record["scores"]:
            record["mean_score"] = float(np.mean(record["scores"]))
        self.candidates.append(record)
        self.log(_candidate_line(record, self.target))
        if record["passed"] and record["predicted_seconds"] < self.best["predicted_seconds"]:
            self.best = record
        return record

    def search(self, method: str, schedules: list[space.Schedule]) -> None:
        """Bisect ``method``'s knob under each schedule (see the module docstring)."""
        knob = space.knob_for(method)
        boundaries: dict[space.Schedule, int] = {}
        for schedule in schedules:
            known = [b for s, b in boundaries.items() if schedule.covers(s)]
            limit = min(known, default=len(knob.values))
            configs = [space.config(method, schedule, v) for v in knob.values[:limit]]
            usable = 0
            while usable < limit and self._may_win(configs[usable], knob):
                usable += 1
            if usable < limit:
                self.pruned.append(
                    {
                        "method": method,
                        "schedule": dataclasses.asdict(schedule),
                        "values": list(knob.values[usable:limit]),
                        "reason": "time-model lower bound no faster than the best so far",
                    }
                )
            found = first_passing(usable, functools.partial(self._passes, configs))
            boundaries[schedule] = found if found < usable else limit

    def _passes(self, configs: list, index: int) -> bool:
        setting = Setting(setting_label(configs[index]), configs[index])
        return self.evaluate(setting, "search")["passed"]

    def _may_win(self, config, knob: space.Knob) -> bool:
        bound = self.model.lower_bound(config, knob.density(config, self.model.layout))
        return bound < self.best["predicted_seconds"]

    def refine(self, caches: list[str], try_8bit: bool) -> None:
        """The best setting with each step cache, and with 8-bit attention where the time
        model can tell (a measured device); otherwise 8-bit is recorded as pruned."""
        best = self.settings[self.best["label"]]
        if best.method.name == "dense" and not caches:
            return
        for spec in caches:
            self.evaluate(Setting(f"{best.label} + {spec}", best.method, spec), "cache")
        if not try_8bit or best.method.name == "dense":
            return
        if not self.model.measured:
            self.pruned.append(
                {
                    "method": best.method.name,
                    "values": ["precision=8bit"],
                    "reason": "the time model counts density only on this device, so 8-bit "
                    "cannot be predicted faster",
                }
            )
            return
        config = dataclasses.replace(best.method, precision="8bit")
        self.evaluate(Setting(f"{setting_label(config)}", config, best.cache), "8bit")


def _request(prompts: list[str], generation: dict[str, Any]) -> GenerationRequest:
    names = [f.name for f in dataclasses.fields(GenerationRequest) if f.name != "prompt"]
    unknown = sorted(set(generation) - set(names))
    if unknown:
        raise TypeError(
            f"tune() got unknown generation arguments {', '.join(unknown)}; "
            f"accepted: {', '.join(names)}"
        )
    return GenerationRequest(prompt=prompts[0], **generation)


def tune(
    pipe: Any,
    prompts: list[str],
    target: str | QualityTarget,
    *,
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    margin: float | None = None,
    dense_steps: tuple[float, ...] = space.DENSE_STEPS,
    dense_layers: tuple[int, ...] = space.DENSE_LAYERS,
    caches: tuple[str, ...] | list[str] = (),
    try_8bit: bool = False,
    lpips_weights: str | None = None,
    model: str | None = None,
    progress: bool = True,
    **generation: Any,
) -> Profile:
    """The fastest setting of ``methods`` whose quality against dense meets ``target``
    (``"psnr=24"``, ``"ssim=0.8"``, ``"lpips=0.1"``; `QualityTarget`) on ``prompts``.

    ``generation``: frames, height, width, steps, guidance, negative_prompt, seed (one seed
    for every run). ``dense_steps`` (shares) x ``dense_layers`` (counts) are the schedules
    tried; ``caches`` step-cache specs tried on the best setting; ``try_8bit`` tries it with
    ``precision="8bit"``. ``model`` names the model in the profile. See the module docstring
    for the search and its cost; save the result with ``profile.save("profile.json")``.
    """
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    if not isinstance(target, QualityTarget):
        target = QualityTarget.parse(target, margin)
    methods = [m.strip().lower() for m in methods]
    if not methods:
        raise ValueError(f"no method to tune; accepted: {', '.join(space.KNOBS)}")
    for method in methods:
        space.knob_for(method)
    grid = space.schedules(tuple(dense_steps), tuple(dense_layers))
    request = _request(prompts, generation)
    lpips = None
    if target.metric == "lpips":
        lpips = load_lpips(lpips_weights, pipe._execution_device)
        if isinstance(lpips, LpipsUnavailable):
            raise ValueError(f"an lpips target needs LPIPS: {lpips.reason}")
    start = time.perf_counter()
    log = print if progress else lambda line: None
    tuner = _Tuner(pipe, request, list(prompts), target, lpips, log)
    tuner.run_dense()
    for method in methods:
        tuner.search(method, grid)
    tuner.refine(list(caches), try_8bit)
    return _profile(tuner, model, time.perf_counter() - start, progress)


def _profile(tuner: _Tuner, model: str | None, seconds: float, progress: bool) -> Profile:
    best = tuner.best
    setting = tuner.settings[best["label"]]
    identity = model_identity(tuner.pipe)
    request = dataclasses.asdict(tuner.request)
    request.pop("prompt")
    steps = tuner.request.steps
    profile = Profile(
        method=setting.method.name,
        options=setting.method.options(),
        cache=best["cache"],
        label=best["label"],
        target=dataclasses.asdict(tuner.target),
        model=model or identity["name_or_path"] or identity["class"],
        identity=identity,
        layout=dataclasses.asdict(tuner.model.layout),
        request=request,
        prompts=tuner.prompts,
        chosen=best,
        candidates=tuner.candidates,
        cost={
            "generations": tuner.generations,
            "dense_generations": len(tuner.prompts),
            "steps_run": tuner.steps_run,
            "full_generation_equivalents": tuner.steps_run / steps,
            "early_stops": sum(c["stopped"] is not None for c in tuner.candidates),
            "wall_seconds": seconds,
            "pruned": tuner.pruned,
        },
        time_model=tuner.model.as_dict(),
        environment=environment(tuner.device),
    )
    if progress:
        print(summary_line(profile))
    return profile


def _candidate_line(record: dict[str, Any], target: QualityTarget) -> str:
    scores = ", ".join(f"{s:.3g}" for s in record["scores"]) or "-"
    if record["stopped"]:
        stop = record["stopped"]
        verdict = f"stopped at step {stop['step']} of prompt {stop['prompt']}"
    elif record["error"]:
        verdict = f"failed: {record['error']}"
    else:
        verdict = "meets the target" if record["passed"] else "misses the target"
    predicted = record["predicted_seconds"]
    speed = "-" if predicted is None else f"{predicted:.2f} s"
    return f"  {record['label']}: {target.metric} {scores}; predicted {speed}; {verdict}"


def summary_line(profile: Profile) -> str:
    """One line: the chosen setting, its quality and predicted speedup, and the tune's cost."""
    chosen, cost, target = profile.chosen, profile.cost, profile.target
    dense = profile.candidates[0]["predicted_seconds"]
    speed = chosen["predicted_seconds"]
    score = chosen["mean_score"]
    quality = "identical" if score is None or not math.isfinite(score) else f"{score:.3g}"
    return (
        f"tuned {profile.label} for {target['metric']}>={target['value']:g}: mean "
        f"{target['metric']} {quality}, predicted {speed:.2f} s a generation "
        f"({dense / speed:.2f}x dense); cost "
        f"{cost['generations']} generations ({cost['full_generation_equivalents']:.1f} "
        f"full), {cost['wall_seconds']:.0f} s"
    )
