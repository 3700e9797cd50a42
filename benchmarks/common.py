"""Shared by the benchmark scripts: arguments, timing, which steps a method searches or reuses,
and results files.

The scripts run as ``python benchmarks/<name>.py`` (this folder is then on ``sys.path``).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import dit_sparse
from dit_sparse.layout import TokenLayout
from dit_sparse.methods import METHODS, AttentionCall, SparseMethod
from dit_sparse.pipelines.shapes import load_wan_shapes
from dit_sparse.quality.environment import device_slug, environment
from dit_sparse.quality.report import write_json
from dit_sparse.synthetic import evaluation_prompts

RESULTS = Path(__file__).resolve().parent / "results"
# The schedule every composed total assumes: Wan's default of 50 denoising steps.
NUM_STEPS = 50
DENSE = "dense"
# Schedules are probed on this small layout (5x16x16 = 1,280 tokens), which every method takes:
# which kind of work a step does depends on the schedule, not on the size.
PROBE_LAYOUT = TokenLayout(5, 16, 16)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--methods --tiny --device --warmup --repeats --out``."""
    parser.add_argument(
        "--methods",
        default=",".join(m for m in METHODS if m != DENSE),
        help="comma-separated sparse methods (dense is always measured)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny shapes: a CPU smoke test of the whole script"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per configuration")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs (the median is used)")
    parser.add_argument("--out", default=None, help="results JSON path (default: results/)")


def triton_probe_args(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, bool]:
    """``--out`` and ``--tiny`` of a probe whose kernels are its own Triton ones, and whether it
    runs on a GPU: without one (or with ``--tiny``) only under Triton's interpreter."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True, help="results JSON path")
    parser.add_argument("--tiny", action="store_true", help="small sizes, Triton's interpreter")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.tiny
    if not gpu and not (args.tiny and os.environ.get("TRITON_INTERPRET") == "1"):
        parser.error("a GPU, or --tiny with TRITON_INTERPRET=1 set (the kernels are Triton's)")
    return args, gpu


def resolve_args(args: argparse.Namespace, prefix: str) -> tuple[torch.device, Path]:
    """The device and the output path (``results/<prefix>-<gpu>.json`` by default)."""
    if args.warmup < 0 or args.repeats < 1:
        raise SystemExit(
            f"--warmup must be >= 0 and --repeats >= 1, got {args.warmup}, {args.repeats}"
        )
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    out = Path(args.out) if args.out else RESULTS / f"{prefix}-{device_slug(device)}.json"
    return device, out


def chosen(parser: argparse.ArgumentParser, flag: str, text: str, choices) -> list[str]:
    """The comma-separated names in ``text`` (lower-cased), each one of ``choices``, or a
    usage error naming ``flag`` and what it takes."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names or any(n not in choices for n in names):
        parser.error(f"{flag} takes {', '.join(choices)}; got {text!r}")
    return names


def methods_from(text: str) -> list[str]:
    return [m.strip().lower() for m in text.split(",") if m.strip() and m.strip() != DENSE]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` with the device synchronised before and after, and its result."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def repeat(args: argparse.Namespace, run: Callable[[], Any]) -> list[Any]:
    """``run()`` ``--warmup`` times untimed (compilation, autotuning, allocator), then
    ``--repeats`` times; the results of the timed ones."""
    return [run() for _ in range(args.warmup + args.repeats)][args.warmup :]


@dataclass
class Observation:
    """One timed call at one step: seconds, the kind of work the method reported, density."""

    seconds: float
    kind: str
    density: float


def summarize_walks(
    firsts: dict[str, int], walks: list[dict[str, Observation]]
) -> dict[str, dict[str, Any]]:
    """Per step kind: its step, the timed seconds and their median, the density and kind seen
    (last walk), and whether that kind is the one the probe predicted (``matches``)."""
    summary = {}
    for label, step in firsts.items():
        times = [walk[label].seconds for walk in walks]
        last = walks[-1][label]
        summary[label] = {
            "step": step,
            "seconds": times,
            "median": median(times),
            "density": last.density,
            "kind_seen": last.kind,
            "matches": last.kind == label,
        }
    return summary


def probe_kinds(
    method: SparseMethod,
    layout: TokenLayout,
    num_layers: int,
    head_dim: int,
    device: torch.device,
    dtype: torch.dtype,
    layers: list[int] | None = None,
) -> list[list[str]]:
    """``kinds[step][i]``: what ``method`` does at each of `NUM_STEPS` steps of one branch, at
    ``layers[i]`` (default: every layer) of a ``num_layers``-layer model, for inputs of
    ``layout``: ``"dense"``, or the ``kind`` the method reports (``"search"``, ``"reuse"``,
    ...). Found by running its schedule on small random inputs (`PROBE_LAYOUT`, or ``layout``
    itself when that is smaller), with the real ``head_dim`` so that the kernels compiled here
    are the ones the timed runs use.

    The dispatch is `run_call`'s. The benchmarks check the kinds they then see at full size
    against these.
    """
    layout = min(layout, PROBE_LAYOUT, key=lambda candidate: candidate.seq_len)
    method.check_layout(layout)
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(1, 2, layout.seq_len, head_dim, generator=generator, device=device).to(dtype)
        for _ in range(3)
    )
    cache: dict[Any, Any] = {}
    kinds = []
    for step in range(NUM_STEPS):
        row = []
        for layer in range(num_layers) if layers is None else layers:
            call = AttentionCall(layout, layer, num_layers, step, NUM_STEPS, "cond", cache)
            row.append(run_call(method, q, k, v, call)[1])
        kinds.append(row)
    method.reset()
    return kinds


def run_call(
    method: SparseMethod, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
) -> tuple[torch.Tensor | None, str]:
    """One call dispatched as `dit_sparse.runtime.SparseRuntime.attend` does, and its kind:
    ``"dense"`` for a schedule-dense call left to the model's attention (not run here, output
    None), otherwise the kind the method reports (``"sparse"`` if none; AdaSpa computes its
    last warm-up step itself, ``"dense-lse"``)."""
    if method.runs_dense(call):
        out = method.attend_dense(q, k, v, call)
        return out, DENSE if out is None else call.info.get("kind", DENSE)
    out = method.attend(q, k, v, call)
    return out, call.info.get("kind", "sparse")


@dataclass
class QKCapture(SparseMethod):
    """Dense attention that keeps the cond branch's q and k (fp32) at ``steps``, per
    ``(step, layer)``: for studies of a trained model's attention between steps."""

    name = "capture"
    steps: tuple[int, ...] = ()
    kept: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, call: AttentionCall
    ) -> torch.Tensor:
        if call.step in self.steps and call.branch == "cond":
            self.kept[(call.step, call.layer)] = (q.float(), k.float())
        return F.scaled_dot_product_attention(q, k, v, scale=call.scale)


def capture_wan_shapes(
    steps: tuple[int, ...], prompts: int, num_steps: int
) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """q and k (`QKCapture`) of the trained ``wan-shapes`` model at ``steps``, generating the
    first ``prompts`` evaluation prompts at 61 frames of 64x64 with seed 0."""
    capture = QKCapture(steps=steps)
    pipe = _wan_shapes()
    with torch.inference_mode(), dit_sparse.attached(pipe, capture):
        pipe(
            prompt=evaluation_prompts(prompts),
            num_frames=61,
            height=64,
            width=64,
            num_inference_steps=num_steps,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        )
    return capture.kept


@functools.cache
def _wan_shapes() -> Any:
    pipe = load_wan_shapes()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def dense_lse(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each row's LSE of dense attention at the default scale, ``[B, H, S]``."""
    return torch.logsumexp(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1)


def kept_coverage(exact: torch.Tensor, ranking: torch.Tensor, keep: int) -> float:
    """Mean over query blocks of the ``exact`` mass held by each row's top ``keep`` key blocks
    by ``ranking`` (both ``[B, H, nq, nk]``)."""
    chosen = torch.topk(ranking, keep, dim=-1).indices
    return exact.gather(-1, chosen).sum(-1).mean().item()


def first_steps(labels: list[str]) -> dict[str, int]:
    """The first step of every label but ``"dense"``, in step order."""
    firsts: dict[str, int] = {}
    for step, label in enumerate(labels):
        if label != DENSE:
            firsts.setdefault(label, step)
    return firsts


def schedule_text(labels: list[str]) -> str:
    """``["dense", "dense", "search", "reuse"]`` -> ``"2 dense, 1 search, 1 reuse"``."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in counts.items())


def error_text(err: Exception) -> str:
    """How a failed configuration is recorded: ``"OutOfMemoryError: ..."``."""
    return f"{type(err).__name__}: {err}"


def amdahl_limit(attention_share: float, density: float) -> float:
    """The speedup if attention cost were proportional to density and nothing else changed."""
    return 1.0 / (1.0 - attention_share * (1.0 - density))


def write_results(path: Path, device: torch.device, body: dict[str, Any]) -> None:
    """``body`` under the environment (gpu, versions, date, command), as strict JSON."""
    write_json(path, {**environment(device), **body})
    print(f"wrote {path}")
