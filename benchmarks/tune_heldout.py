"""Does a tuned profile hold on prompts it was not tuned on? `dit_sparse.tune` on a few
prompts, then the profile and each method's defaults on held-out ones.

    python benchmarks/tune_heldout.py [--target psnr=24] [--out-dir DIR]   # CPU, about 30 min
    python benchmarks/tune_heldout.py --tiny --out-dir /tmp/x              # smoke test

Runs the trained ``wan-shapes`` model at its defaults (17 frames of 64x64, 20 steps, guidance
5); prompts from `dit_sparse.synthetic.evaluation_prompts`: the first ``--tune-prompts`` tune,
the next ``--heldout`` are held out. Writes ``profile.json`` (the tune, its wall time and
generations), ``results.json`` (the held-out bench: every run, plus per setting how many
held-out prompts meet the target and the speedup the tune's time model predicts),
``results.md`` and ``pareto.png`` (quality against density, the tuned point a red star).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dit_sparse.generation import GenerationRequest
from dit_sparse.layout import TokenLayout
from dit_sparse.pipelines.loading import load_pipeline
from dit_sparse.quality import plots, report
from dit_sparse.quality.environment import environment
from dit_sparse.quality.harness import Case, make_settings, run_bench, summarize_runs
from dit_sparse.synthetic import evaluation_prompts
from dit_sparse.tuning.profile import Profile
from dit_sparse.tuning.target import QualityTarget
from dit_sparse.tuning.time_model import TimeModel
from dit_sparse.tuning.tuner import tune

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("radial", "svg", "adaspa")


def _time_model(profile: Profile) -> TimeModel:
    fields = dict(profile.time_model)
    return TimeModel(**{**fields, "layout": TokenLayout(**fields["layout"])})


def heldout_summary(result, target: QualityTarget, model: TimeModel) -> list[dict[str, Any]]:
    """Per setting: held-out prompts meeting the target (mean score and each prompt's), the
    predicted speedup and the means, in plan order."""
    dense_seconds = None
    rows = []
    for summary in summarize_runs(result):
        runs = [r for r in result.runs if r.setting is summary.setting and r.ok]
        predicted = [model.predict(r.attention) for r in runs]
        if summary.setting.is_dense:
            dense_seconds = float(np.mean(predicted))
            continue
        scores = [target.score(r.metrics) for r in runs if r.metrics is not None]
        rows.append(
            {
                "setting": summary.setting.label,
                "prompts": len(scores),
                "meets_target": sum(target.prompt_ok(s) and s >= target.value for s in scores),
                "within_margin": sum(target.prompt_ok(s) for s in scores),
                "target_met_over_prompts": target.met(scores),
                "mean_score": float(np.mean(scores)),
                "min_score": float(min(scores)),
                "mean_density": summary.mean_density,
                "predicted_seconds": float(np.mean(predicted)),
                "predicted_speedup": dense_seconds / float(np.mean(predicted)),
            }
        )
    return rows


def _markdown(doc: dict[str, Any]) -> str:
    tune_cost = doc["tune"]["cost"]
    rows = [
        [
            r["setting"],
            f"{r['meets_target']}/{r['prompts']}",
            f"{r['within_margin']}/{r['prompts']}",
            report.fmt(r["mean_score"], ".2f"),
            report.fmt(r["min_score"], ".2f"),
            report.fmt(r["mean_density"]),
            report.fmt(r["predicted_speedup"], ".2f") + "x",
        ]
        for r in doc["heldout"]
    ]
    headers = ["setting", "prompts >= target", "within margin", "mean", "min", "density"]
    return "\n".join(
        [
            f"# tune on {doc['model']}, held out: {doc['target']}",
            "",
            f"- {doc['date']}: `{doc['command']}`; torch {doc['torch']}, diffusers "
            f"{doc['diffusers']}, dit_sparse {doc['dit_sparse']}, {doc['gpu']}",
            f"- tuned on {len(doc['tune_prompts'])} prompts in {tune_cost['wall_seconds']:.0f} s: "
            f"{tune_cost['generations']} generations started "
            f"({tune_cost['full_generation_equivalents']:.1f} full), "
            f"{tune_cost['early_stops']} stopped early; chose `{doc['tune']['label']}`",
            f"- held out: {len(doc['heldout_prompts'])} prompts; speedup predicted by the "
            "tune's time model (per-density attention cost on the CPU)",
            "",
            report.markdown_table(headers + ["predicted speedup"], rows),
            "",
            "![pareto](pareto.png)",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="psnr=24")
    parser.add_argument("--tune-prompts", type=int, default=2)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="tiny-wan, 2 steps: a smoke test")
    parser.add_argument("--out-dir", default=str(RESULTS / "tune-wan-shapes"))
    args = parser.parse_args(argv)
    target = QualityTarget.parse(args.target)
    model = "tiny-wan" if args.tiny else "wan-shapes"
    request = (
        GenerationRequest("", frames=9, height=64, width=64, steps=2)
        if args.tiny
        else GenerationRequest("", frames=17, height=64, width=64, steps=20, guidance=5.0)
    )
    prompts = evaluation_prompts(args.tune_prompts + args.heldout)
    tuning, heldout = prompts[: args.tune_prompts], prompts[args.tune_prompts :]
    out = Path(args.out_dir)
    pipe = load_pipeline(model, device="cpu", dtype=torch.float32)
    generation = {k: v for k, v in vars(request).items() if k != "prompt"}
    start = time.perf_counter()
    grid = {"dense_steps": (0.1,), "dense_layers": (0,)} if args.tiny else {}
    profile = tune(pipe, tuning, target, methods=METHODS, model=model, **grid, **generation)
    tune_seconds = time.perf_counter() - start
    command = ["python", "benchmarks/tune_heldout.py", *sys.argv[1:]]
    profile.environment["command"] = " ".join(command)
    profile.save(out / "profile.json")

    settings = make_settings(["dense", *METHODS])
    settings.append(profile.setting())
    cases = [Case(i, p, request.seed) for i, p in enumerate(heldout, start=len(tuning))]
    result = run_bench(pipe, request, cases, settings)
    doc = {
        **environment("cpu", command),
        "model": model,
        "target": str(target),
        "tune_prompts": tuning,
        "heldout_prompts": heldout,
        "tune": {
            "label": profile.label,
            "options": profile.options,
            "wall_seconds": tune_seconds,
            "cost": profile.cost,
        },
        "heldout": heldout_summary(result, target, _time_model(profile)),
        "bench": report.results_document(result, {"model": model, "device": "cpu"}),
    }
    report.write_json(out / "results.json", doc)
    plots.plot_pareto(
        summarize_runs(result),
        out / "pareto.png",
        f"tuned for {target} on {len(tuning)} prompts; {len(heldout)} held out",
        x="density",
        highlight=[settings[-1].label],
    )
    (out / "results.md").write_text(_markdown(doc))
    print(_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
