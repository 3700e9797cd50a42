"""What 8-bit attention costs in quality (issue 29): every method in bf16 and in 8 bits on the
trained ``wan-shapes`` model, each against dense and against the same method in bf16.

    python benchmarks/precision_quality.py --out-dir DIR        # a GPU: about two minutes
    python benchmarks/precision_quality.py --tiny --out-dir DIR # 2 steps of 9 frames: a smoke test

Per method three settings: ``precision="bf16"`` (the default), ``precision="8bit"`` (sparse
steps in 8 bits) and ``precision="8bit", dense_precision="8bit"`` (the dense steps too), and
``dense(dense_precision="8bit")`` (every call our 8-bit kernel on a full plan). One bench run
(`dit_sparse.quality.harness.run_bench`: the same seeds, dense once per prompt) gives each
setting's PSNR / SSIM against dense; the frames it generates are then compared with those of
the same method in bf16 (dense: the model's own attention), which isolates what 8 bits cost
from what sparsity costs. On a CPU the 8-bit settings run the torch reference of the same
quantisation. Writes ``results.json`` (environment, command, every run, the summaries, the
comparisons) and ``results.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS, chosen, methods_from

from dit_sparse.generation import GenerationRequest
from dit_sparse.methods import METHODS
from dit_sparse.pipelines.loading import load_pipeline
from dit_sparse.quality import report
from dit_sparse.quality.environment import environment
from dit_sparse.quality.harness import Case, Setting, make_settings, run_bench, summarize_runs
from dit_sparse.quality.metrics import compare_videos
from dit_sparse.synthetic import evaluation_prompts

BF16 = {"precision": "bf16"}
VARIANTS = (
    ("8bit sparse steps", {"precision": "8bit"}),
    ("8bit every step", {"precision": "8bit", "dense_precision": "8bit"}),
)


def precision_settings(methods: list[str]) -> list[tuple[Setting, Setting, str]]:
    """(bf16 setting, 8-bit setting, what differs) per method and variant; dense's bf16 is the
    model's own attention, its 8-bit the kernel on full plans."""
    pairs = []
    dense, dense_8bit = make_settings(
        ["dense"], sweeps={"dense": {"dense_precision": ["model", "8bit"]}}
    )
    pairs.append((dense, dense_8bit, "8bit every step"))
    for method in methods:
        (bf16,) = make_settings([method], options={method: BF16})
        for name, options in VARIANTS:
            (variant,) = make_settings([method], options={method: options})
            pairs.append((bf16, variant, name))
    return pairs


def mean_metrics(pairs: list[tuple[np.ndarray, np.ndarray]], device: str) -> dict[str, float]:
    """Mean clip PSNR and SSIM of each (reference, test) pair."""
    metrics = [compare_videos(ref, test, device=device) for ref, test in pairs]
    return {
        "psnr": float(np.mean([m.video_psnr for m in metrics])),
        "ssim": float(np.mean([m.mean_ssim for m in metrics])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="radial,svg,adaspa")
    parser.add_argument("--prompts", type=int, default=4, help="evaluation prompts to run")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--tiny", action="store_true", help="2 steps of 9 frames: a smoke test")
    parser.add_argument("--out-dir", default=str(RESULTS / "precision-wan-shapes"))
    args = parser.parse_args(argv)
    methods = chosen(parser, "--methods", ",".join(methods_from(args.methods)), METHODS)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    model = "wan-shapes"  # tiny-wan's blocks are too small for 8-bit tiles
    steps, frames = (2, 9) if args.tiny else (20, 17)
    request = GenerationRequest("", frames=frames, height=64, width=64, steps=steps, guidance=5.0)
    pairs = precision_settings(methods)
    settings = list({id(s): s for pair in pairs for s in pair[:2]}.values())
    cases = [Case(i, p, request.seed) for i, p in enumerate(evaluation_prompts(args.prompts))]
    frames: dict[tuple[str, str], np.ndarray] = {}

    def keep(record: Any, dense_frames: np.ndarray, test: np.ndarray) -> None:
        frames[(record.case.slug, "dense")] = dense_frames
        frames[(record.case.slug, record.setting.label)] = test

    pipe = load_pipeline(model, device=device, dtype=dtype)
    result = run_bench(pipe, request, cases, settings, metrics_device=device, on_video=keep)
    summaries = {s.setting.label: report.summary_dict(s) for s in summarize_runs(result)}
    comparisons = []
    for bf16, variant, name in pairs:
        reference = "dense" if bf16.is_dense else bf16.label
        matched = [
            (frames[(c.slug, reference)], frames[(c.slug, variant.label)])
            for c in cases
            if (c.slug, reference) in frames and (c.slug, variant.label) in frames
        ]
        comparisons.append(
            {
                "method": bf16.method.name,
                "variant": name,
                "setting": variant.label,
                "against": reference,
                "cases": len(matched),
                "vs_bf16": mean_metrics(matched, device) if matched else None,
                "vs_dense": summaries[variant.label],
                "bf16_vs_dense": None if bf16.is_dense else summaries[bf16.label],
            }
        )
    command = [
        "python",
        "benchmarks/precision_quality.py",
        *(sys.argv[1:] if argv is None else argv),
    ]
    doc = {
        **environment(device, command),
        "model": model,
        "dtype": str(dtype).removeprefix("torch."),
        "request": {k: v for k, v in vars(request).items() if k != "prompt"},
        "prompts": [c.prompt for c in cases],
        "comparisons": comparisons,
        "bench": report.results_document(result, {"model": model, "device": device}),
    }
    out = Path(args.out_dir)
    report.write_json(out / "results.json", doc)
    text = _markdown(doc)
    (out / "results.md").write_text(text)
    print(text)
    failed = [r for r in result.runs if not r.ok]
    for record in failed:
        print(f"failed: {record.setting.label} {record.case.slug}: {record.error}")
    return 1 if failed else 0


def _markdown(doc: dict[str, Any]) -> str:
    def cell(metrics: dict[str, Any] | None, key: str) -> str:
        return report.fmt(None if metrics is None else metrics.get(key), ".2f")

    rows = [
        [
            c["method"],
            c["variant"],
            cell(c["bf16_vs_dense"], "psnr"),
            cell(c["vs_dense"], "psnr"),
            cell(c["vs_bf16"], "psnr"),
            report.fmt(None if c["vs_bf16"] is None else c["vs_bf16"]["ssim"], ".4f"),
        ]
        for c in doc["comparisons"]
    ]
    headers = ["method", "8-bit", "bf16 vs dense dB", "8-bit vs dense dB", "8-bit vs bf16 dB"]
    title = f"# 8-bit against bf16 on {doc['model']} ({doc['gpu']}, {len(doc['prompts'])} prompts)"
    return "\n\n".join([title, report.markdown_table([*headers, "8-bit vs bf16 SSIM"], rows), ""])


if __name__ == "__main__":
    sys.exit(main())
