"""End-to-end speed of each method on the real Wan2.1 architectures, random weights in bf16.

    python benchmarks/e2e.py [--models 1.3b,14b] [--methods radial,svg,adaspa] [--out PATH]
    python benchmarks/e2e.py --precision 8bit [--dense-precision 8bit]   # 8-bit steps
    python benchmarks/e2e.py --methods svg2 -o svg2.top_p=0.25   # a method option
    python benchmarks/e2e.py --tiny          # seconds on a CPU: a smoke test of this script

Quality needs real weights; speed does not. For each model this builds the transformer from
its published config (no download: meta device, then cheap random init on the GPU), feeds
random latents and 512 random text embeddings, and times with the device synchronised
(``--warmup`` untimed + ``--repeats`` timed runs, median):

- a dense forward of the bare transformer (the baseline), and one with ``dit_sparse.apply(...,
  "dense")``, whose records give attention's share of the forward;
- under each method, one forward per kind of step its default schedule has (AdaSpa: a search,
  reuse, a cached search; SVG: a profiling step; Radial: a static one), with the step index
  driven through ``transformer.cache_context("cond", step_index=i, num_inference_steps=50)``.
  Which step is which kind comes from `common.probe_kinds`; the kinds seen at full size are
  recorded beside it (``matches``).

``--precision 8bit`` runs every method's sparse steps on the 8-bit kernel and
``--dense-precision 8bit`` its dense steps too (results ``e2e-8bit[-dense8bit]-<gpu>.json``);
the dense baseline stays the model's own attention (cuDNN).

The 50-step total composes those times over the schedule (dense steps at dense time), times 2
forwards per step (classifier-free guidance, as WanPipeline runs by default); the Amdahl limit
``1 / (1 - attention share * (1 - mean density))`` stands beside each speedup. It counts
density only, each kept block at the dense attention's cost per block: 8-bit steps change
the cost of a block, and a speedup may pass it by as much as they save.
"""

from __future__ import annotations

import argparse
import functools
import gc
import re
import sys
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from common import (
    DENSE,
    NUM_STEPS,
    Observation,
    add_common_args,
    amdahl_limit,
    chosen,
    error_text,
    first_steps,
    median,
    methods_from,
    probe_kinds,
    repeat,
    resolve_args,
    schedule_text,
    summarize_walks,
    timed,
    write_results,
)
from diffusers.hooks import HookRegistry

import dit_sparse
from dit_sparse.arguments import UsageError
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import resolve_method
from dit_sparse.methods.base import DENSE_PRECISIONS, PRECISIONS, SparseMethod
from dit_sparse.quality.bench import parse_method_options
from dit_sparse.quality.report import fmt, markdown_table

# The methods' own defaults (their config fields): options equal to these are left out of
# `precision_options`, so that results show only what a run changed.
DEFAULT_PRECISIONS = {
    f.name: f.default for f in fields(SparseMethod) if f.name in ("precision", "dense_precision")
}

TEXT_TOKENS = 512
# WanPipeline runs a cond and an uncond forward per step at its default guidance (5.0).
FORWARDS_PER_STEP = 2
_WAN = dict(
    patch_size=(1, 2, 2),
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)


@dataclass(frozen=True)
class ModelSpec:
    """A transformer config and the latent it runs at (frames, height, width before patching)."""

    name: str
    video: str
    config: dict[str, Any] = field(hash=False)
    latent: tuple[int, int, int]

    @property
    def layout(self) -> TokenLayout:
        _, p_h, p_w = self.config["patch_size"]
        frames, height, width = self.latent
        return TokenLayout(frames, height // p_h, width // p_w)


MODELS = {
    # 480x832 px, 81 frames -> latent 21x60x104 -> 21x30x52 = 32,760 tokens.
    "1.3b": ModelSpec(
        "Wan2.1-T2V-1.3B",
        "480p x 81",
        {**_WAN, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30},
        (21, 60, 104),
    ),
    # 720x1280 px, 81 frames -> latent 21x90x160 -> 21x45x80 = 75,600 tokens.
    "14b": ModelSpec(
        "Wan2.1-T2V-14B",
        "720p x 81",
        {**_WAN, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40},
        (21, 90, 160),
    ),
}
TINY_CONFIG = {
    **_WAN,
    "attention_head_dim": 32,
    "num_attention_heads": 2,
    "ffn_dim": 64,
    "num_layers": 2,
    "text_dim": 32,
    "freq_dim": 32,
    "rope_max_seq_len": 256,
}


def tiny_spec(key: str) -> ModelSpec:
    return ModelSpec(f"{MODELS[key].name} (tiny config)", "", TINY_CONFIG, (3, 16, 16))


def build_transformer(spec: ModelSpec, device: torch.device, dtype: torch.dtype):
    """The transformer with random weights, made directly on ``device`` in ``dtype`` (modules
    Wan keeps in fp32 stay fp32, as ``from_pretrained`` leaves them).

    Parameters start on the meta device (no memory, no init cost), are allocated on ``device``
    by ``to_empty`` and drawn there; buffers (RoPE tables) are real from the start and copied
    back after ``to_empty``, which would leave them uninitialised.
    """
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from dit_sparse.pipelines.loading import cast_like_from_pretrained

    with init_empty_weights(include_buffers=False):
        model = WanTransformer3DModel(**spec.config)
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    cast_like_from_pretrained(model, dtype)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
        for name, param in model.named_parameters():
            if param.dim() >= 2:  # weights: unit-variance outputs for unit-variance inputs
                param.normal_(0.0, param[0].numel() ** -0.5)
            elif name.endswith("weight"):  # norm scales
                param.fill_(1.0)
            else:
                param.zero_()
    return model.eval().requires_grad_(False)


def make_inputs(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    generator = torch.Generator(device=device).manual_seed(0)
    latent = (1, spec.config["in_channels"], *spec.latent)
    text = (1, TEXT_TOKENS, spec.config["text_dim"])
    return {
        "hidden_states": torch.randn(latent, generator=generator, device=device).to(dtype),
        "timestep": torch.full((1,), 500.0, device=device),
        "encoder_hidden_states": torch.randn(text, generator=generator, device=device).to(dtype),
        "return_dict": False,
    }


class Bench:
    """One model on one device: the timing protocol shared by every configuration."""

    def __init__(self, spec: ModelSpec, args: argparse.Namespace, device, dtype) -> None:
        self.spec = spec
        self.args = args
        self.device = device
        self.dtype = dtype
        self.transformer = build_transformer(spec, device, dtype)
        self.inputs = make_inputs(spec, device, dtype)

    def forward(self, step: int | None = None) -> torch.Tensor:
        """One forward; with ``step``, inside the cache context a pipeline would set."""
        if step is None:
            return self.transformer(**self.inputs)[0]
        with self.transformer.cache_context("cond", step_index=step, num_inference_steps=NUM_STEPS):
            return self.transformer(**self.inputs)[0]

    def dense(self) -> dict[str, Any]:
        runs = repeat(self.args, lambda: timed(self.forward, self.device))
        times = [seconds for seconds, _ in runs]
        with dit_sparse.attached(self.transformer, DENSE) as handle:

            def attached() -> tuple[float, float]:
                handle.reset_stats()
                seconds = timed(self.forward, self.device)[0]
                return seconds, handle.summary()["attention_seconds"]

            # The bare forwards above already warmed every kernel this one runs.
            pairs = [attached() for _ in range(self.args.repeats)]
        return {
            "seconds": times,
            "median": median(times),
            "attached_seconds": [s for s, _ in pairs],
            "attention_seconds": [a for _, a in pairs],
            "attention_share": median([a / s for s, a in pairs]),
            # Random weights can overflow; a non-finite output would make online methods'
            # searches meaningless, so say so beside the numbers.
            "output_finite": bool(torch.isfinite(runs[-1][1]).all()),
        }

    def method(self, name: str, dense: dict[str, Any]) -> dict[str, Any]:
        """A method's step kinds, a timed forward per kind, and the composed 50-step total."""
        options = {**precision_options(self.args), **self.args.method_options.get(name, {})}
        method = resolve_method(name, **options)
        num_layers = self.spec.config["num_layers"]
        head_dim = self.spec.config["attention_head_dim"]
        kinds = probe_kinds(method, self.spec.layout, num_layers, head_dim, self.device, self.dtype)
        labels = ["+".join(sorted(set(row))) for row in kinds]
        firsts = first_steps(labels)
        with dit_sparse.attached(self.transformer, method) as handle:
            registry = HookRegistry.check_if_exists_or_initialize(self.transformer)

            def walk() -> dict[str, Observation]:
                # A new generation: per-branch caches (plans, LSE) start empty, as they would.
                registry.reset_stateful_hooks()
                seen = {}
                for label, step in firsts.items():
                    handle.reset_stats()
                    seconds = timed(functools.partial(self.forward, step), self.device)[0]
                    records = handle.records()
                    seen[label] = Observation(
                        seconds,
                        kind="+".join(sorted({r["kind"] for r in records})),
                        density=sum(r["density"] for r in records) / len(records),
                    )
                return seen

            steps = summarize_walks(firsts, repeat(self.args, walk))
        seconds_of = {DENSE: dense["median"], **{k: v["median"] for k, v in steps.items()}}
        density_of = {DENSE: 1.0, **{k: v["density"] for k, v in steps.items()}}
        total = FORWARDS_PER_STEP * sum(seconds_of[label] for label in labels)
        mean_density = sum(density_of[label] for label in labels) / len(labels)
        sparse_labels = Counter(label for label in labels if label != DENSE)
        steady = sparse_labels.most_common(1)[0][0] if sparse_labels else DENSE
        return {
            "method": name,
            "options": method.options(),
            "schedule": labels,
            "schedule_text": schedule_text(labels),
            "steps": steps,
            "total_seconds": total,
            "speedup": FORWARDS_PER_STEP * NUM_STEPS * dense["median"] / total,
            "mean_density": mean_density,
            "amdahl_limit": amdahl_limit(dense["attention_share"], mean_density),
            "steady_kind": steady,
            "steady_speedup": dense["median"] / seconds_of[steady],
            "steady_amdahl_limit": amdahl_limit(dense["attention_share"], density_of[steady]),
        }

    def close(self) -> None:
        del self.transformer, self.inputs
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def model_header(spec: ModelSpec) -> dict[str, Any]:
    """What a model's result starts with (also printed, as a progress line)."""
    print(f"{spec.name}: {spec.layout.describe()}", file=sys.stderr, flush=True)
    return {
        "model": spec.name,
        "video": spec.video,
        "config": spec.config,
        "latent": list(spec.latent),
        "layout": spec.layout.describe(),
        "tokens": spec.layout.seq_len,
        "text_tokens": TEXT_TOKENS,
    }


def measure(bench: Bench, methods: list[str]) -> dict[str, Any]:
    """``dense`` (`Bench.dense`) and ``methods`` (`Bench.method` each, or its error: the rest
    go on); a dense failure raises."""
    out: dict[str, Any] = {"dense": bench.dense(), "methods": []}
    for name in methods:
        print(f"  {name}", file=sys.stderr, flush=True)
        try:
            out["methods"].append(bench.method(name, out["dense"]))
        except Exception as err:  # noqa: BLE001
            out["methods"].append({"method": name, "error": error_text(err)})
    return out


def bench_model(spec: ModelSpec, methods: list[str], args, device, dtype) -> dict[str, Any]:
    """Dense, then every method; a failure is recorded (the model's, or one method's) and the
    rest go on."""
    result = model_header(spec)
    try:
        bench = Bench(spec, args, device, dtype)
        with torch.inference_mode():
            result.update(measure(bench, methods))
    except Exception as err:  # noqa: BLE001  (out of memory, say: the next model may fit)
        return {**result, "error": error_text(err)}
    bench.close()
    return result


def table(models: list[dict[str, Any]]) -> str:
    """The README table: one row per model and method."""
    rows = []
    for m in models:
        model = f"{m['model']} {m['video']}".strip()
        if "error" in m:
            rows.append([model, f"{m['tokens']:,}", "-", f"error: {m['error']}", *[""] * 5])
            continue
        dense = m["dense"]
        dense_total = FORWARDS_PER_STEP * NUM_STEPS * dense["median"]
        rows.append(
            [
                model,
                f"{m['tokens']:,}",
                "dense",
                f"{NUM_STEPS} dense",
                f"{dense['median']:.3f} (attention {dense['attention_share']:.0%})",
                "1.00",
                f"{dense_total:.1f}",
                "1.00x",
                "1.00x",
            ]
        )
        for r in m["methods"]:
            if "error" in r:
                error = f"error: {r['error']}"
                rows.append([model, f"{m['tokens']:,}", r["method"], error, *[""] * 5])
                continue
            forwards = ", ".join(
                f"{label} {s['median']:.3f}" + ("" if s["matches"] else f" (saw {s['kind_seen']})")
                for label, s in r["steps"].items()
            )
            rows.append(
                [
                    model,
                    f"{m['tokens']:,}",
                    r["method"],
                    r["schedule_text"],
                    forwards,
                    fmt(r["mean_density"], ".2f"),
                    f"{r['total_seconds']:.1f}",
                    f"{r['speedup']:.2f}x",
                    f"{r['amdahl_limit']:.2f}x",
                ]
            )
    headers = ["model", "tokens", "method", f"{NUM_STEPS}-step schedule", "forward s"]
    headers += ["mean density", f"{NUM_STEPS} steps s (x{FORWARDS_PER_STEP} CFG)"]
    return markdown_table(headers + ["speedup", "Amdahl limit"], rows)


def model_parser(description: str) -> argparse.ArgumentParser:
    """``--models`` and the common arguments (`common.add_common_args`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--models", default="1.3b,14b", help=f"comma-separated: {', '.join(MODELS)}"
    )
    add_common_args(parser)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISIONS["precision"],
        help="the methods' sparse steps",
    )
    parser.add_argument(
        "--dense-precision",
        choices=DENSE_PRECISIONS,
        default=DEFAULT_PRECISIONS["dense_precision"],
        help="the methods' dense steps (model: the model's own attention)",
    )
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a method option, e.g. -o svg2.top_p=0.25 (repeatable)",
    )
    return parser


def precision_options(args: argparse.Namespace) -> dict[str, str]:
    """The methods' precision options from ``--precision``/``--dense-precision`` that differ
    from their defaults."""
    chosen = {"precision": args.precision, "dense_precision": args.dense_precision}
    return {k: v for k, v in chosen.items() if v != DEFAULT_PRECISIONS[k]}


def results_prefix(name: str, args: argparse.Namespace) -> str:
    """``name``, plus ``-8bit`` for 8-bit sparse steps, ``-dense8bit`` for 8-bit dense ones and
    each ``--option`` (``svg2.top_p=0.25`` -> ``-svg2.top_p-0.25``), so that a run with other
    settings does not overwrite the default's results."""
    suffixes = {"precision": "-{}", "dense_precision": "-dense{}"}
    prefix = name + "".join(suffixes[k].format(v) for k, v in precision_options(args).items())
    return prefix + "".join("-" + re.sub(r"[^\w.-]", "-", item) for item in args.option)


def run_models(parser, args, prefix: str, bench, table, **extra: Any) -> int:
    """Run ``bench(spec, methods, args, device, dtype)`` per model of ``--models``, writing the
    results JSON (with ``extra``) after each, then print ``table(models)``."""
    device, out = resolve_args(args, f"{prefix}-tiny" if args.tiny else prefix)
    keys = chosen(parser, "--models", args.models, MODELS)
    specs = [tiny_spec(k) if args.tiny else MODELS[k] for k in keys]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    methods = methods_from(args.methods)
    try:
        options = parse_method_options(args.option)
    except UsageError as err:
        parser.error(str(err))
    if set(options) - set(methods):
        parser.error(f"--option names {sorted(set(options) - set(methods))}, not in --methods")
    args.method_options = options
    body = {
        "tiny": args.tiny,
        "precision": args.precision,
        "dense_precision": args.dense_precision,
        "dtype": str(dtype).removeprefix("torch."),
        **extra,
        "num_steps": NUM_STEPS,
        "forwards_per_step": FORWARDS_PER_STEP,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "random_weights": True,
        "models": [],
    }
    for spec in specs:
        body["models"].append(bench(spec, methods, args, device, dtype))
        write_results(out, device, body)  # after each model: a cut-off run keeps what it had
    print(table(body["models"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = model_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    return run_models(parser, args, results_prefix("e2e", args), bench_model, table)


if __name__ == "__main__":
    sys.exit(main())
