"""GPU smoke run: every Triton kernel and every method, through `dit_sparse.apply`, checked
against torch references, in bf16 and fp16. A change under ``dit_sparse/`` lands with a passing
record of that same tree (the README's contributing section says why).

    tree=$(git add dit_sparse && git write-tree --prefix=dit_sparse/)
    python benchmarks/gpu_smoke.py --tree "$tree"     # one GPU, well under two minutes
    python benchmarks/gpu_smoke.py --tiny     # CPU (torch references): a test of this script

Two parts, for each dtype:

- **kernels**: `block_sparse_attention` on a random ragged plan with its LSE, at head dims 64
  and 128, against the float64 reference, in the input dtype's precision and in 8 bits
  (``precision="8bit"``, with its own tolerances); SVG2's k-means iteration (`lloyd_step`) on
  clustered vectors at ragged sizes against float64 distances and means;
- **methods**: a transformer of Wan2.1-1.3B's architecture (its heads and head dim, two
  layers, random weights) at a 17-frame 480p latent, driven through one step of every kind
  of each method's default schedule (``transformer.cache_context`` with the step index, as a
  pipeline sets it): dense warm-up, Radial's static plan, SVG's profiling and plan, AdaSpa's
  dense LSE step, fused search (dense attention + block mass in one pass), reuse and cached
  search, SVG2's first and warm clusterings. Every kernel a method calls (attention with
  per-head permuted plans, SVG's masked row errors, block mass, AdaSpa's ranking and
  selection, dense attention with LSE or mass, SVG2's k-means iterations) is
  checked against its reference on the inputs it was given, for the first calls of each
  (method, step kind, kernel). ``dense`` through `apply` must equal the bare forward exactly,
  each step must do the kind of work the schedule says, and every output must be finite.

The record (``results/gpu-smoke-<gpu>.json``) holds the GPU, versions, the ``dit_sparse/`` tree
id passed in (the device machine has no ``.git``), each check's error and tolerance, and
``passed``; the exit code is non-zero on any failure. A new kernel precision adds its own
checks here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from common import (
    DENSE,
    NUM_STEPS,
    RESULTS,
    chosen,
    error_text,
    first_steps,
    probe_kinds,
    write_results,
)
from e2e import MODELS, TINY_CONFIG, ModelSpec, build_transformer, make_inputs

import dit_sparse
from dit_sparse import methods as methods_package
from dit_sparse.kernels import block_sparse_attention, lloyd_step
from dit_sparse.kernels.block_mass import sampled_rows
from dit_sparse.kernels.reference import (
    block_attention_mass_reference,
    block_sparse_attention_reference,
    kept_blocks_ascending_reference,
    masked_row_errors_reference,
    rank_key_blocks_reference,
)
from dit_sparse.methods import METHODS, resolve_method
from dit_sparse.plan import BlockPlan
from dit_sparse.quality.environment import device_slug

DTYPES = (torch.bfloat16, torch.float16)
# Relative L2 error of an output against the float64 reference of the same (rounded) inputs:
# P is rounded to the input dtype before P V, so a few times its unit roundoff.
OUT_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-4}
LSE_TOLERANCE = 1e-4  # max |LSE - reference|, natural log: scores accumulate in fp32
MASS_TOLERANCE = 1e-4  # relative L2 of block mass: fp32 sums of exp(s - lse)
# SVG's errors: the rows' outputs are accumulated in fp32 from P in the input dtype.
ROW_ERRORS_TOLERANCE = {torch.bfloat16: 2e-3, torch.float16: 5e-4, torch.float32: 1e-4}
# 8 bits (`dit_sparse.kernels.attention_8bit`) on random inputs, against float64: the torch
# reference of the same quantisation measured a relative L2 of 3.7e-2 to 3.9e-2 (cosine
# 0.9992 to 0.9994) at D = 64 and 128, the floor of e4m3 P and V on diffuse attention; the
# margin covers P rounded against the running max and the GPU's FP8 accumulation. The LSE
# error comes from the INT8 scores (about 1e-2 there).
OUT_TOLERANCE_8BIT = 5e-2
LSE_TOLERANCE_8BIT = 5e-2
# k-means assignment: how much farther the chosen centroid may be than the nearest one (float64
# distances), as a share of ||x||^2 + ||c||^2; the kernel scores centroids rounded to the input
# dtype (relative error of half its unit roundoff per element) with fp32 dot products.
KMEANS_GAP_TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}
KMEANS_MEANS_TOLERANCE = 1e-5  # relative L2 of the means: fp32 sums of the inputs
CHECKED_CALLS = 2  # per (method, step kind, kernel): the reference is slow
# Wan2.1-1.3B's heads and head dim; 480p's 60x104 latent, 5 latent frames (17 video frames).
SMOKE_SPEC = ModelSpec(
    "Wan2.1-T2V-1.3B architecture, 2 layers",
    "480p x 17",
    {**MODELS["1.3b"].config, "num_layers": 2},
    (5, 60, 104),
)
TINY_SPEC = ModelSpec("tiny Wan config", "", TINY_CONFIG, (3, 16, 16))


class Checks:
    """The record: one dict per check, and which (method, step kind) calls are running."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.where: dict[str, str] = {}
        self.counts: Counter = Counter()

    def add(self, name: str, metric: str, value: float, tolerance: float, **extra: Any) -> None:
        passed = bool(value <= tolerance)  # False for NaN
        self.items.append(
            {**self.where, "check": name, "metric": metric, "value": value,
             "tolerance": tolerance, "passed": passed, **extra}
        )  # fmt: skip
        if not passed:
            print(f"FAIL {self.where} {name}: {metric} {value:.3g} > {tolerance:.3g}", flush=True)

    def require(self, name: str, ok: bool, **extra: Any) -> None:
        self.add(name, "failed", 0.0 if ok else 1.0, 0.0, **extra)

    def failure(self, name: str, error: Exception) -> None:
        self.require(name, False, error=error_text(error))
        print(f"FAIL {self.where} {name}: {error_text(error)}", flush=True)

    @property
    def passed(self) -> bool:
        return all(item["passed"] for item in self.items)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def rel_l2(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.double(), reference.double()
    return ((value - reference).norm() / reference.norm().clamp_min(1e-30)).item()


def max_finite_diff(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Max |value - reference| where the reference is finite; inf if they disagree on which."""
    finite = torch.isfinite(reference)
    if not torch.equal(finite, torch.isfinite(value)):
        return float("inf")
    return (value.double() - reference.double())[finite].abs().max().item() if finite.any() else 0


def _wide(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.double() for t in tensors]


# --- per-kernel reference checks, on the arguments the kernel was called with ---------------


def _check_attention(checks: Checks, a: dict[str, Any], result: Any) -> None:
    q, plan = a["q"], a["plan"]
    out, lse = result if a["return_lse"] else (result, None)
    ref_out, ref_lse = block_sparse_attention_reference(
        *_wide(q, a["k"], a["v"]), plan, a["scale"], return_lse=True
    )
    extra = {"density": plan.density, "permuted": plan.perm is not None}
    extra["key_permuted"] = plan.key_perm is not None
    name, out_tolerance, lse_tolerance = (
        "block_sparse_attention",
        OUT_TOLERANCE[q.dtype],
        LSE_TOLERANCE,
    )
    if a.get("precision") == "8bit":
        name, out_tolerance, lse_tolerance = f"{name} 8bit", OUT_TOLERANCE_8BIT, LSE_TOLERANCE_8BIT
        out64, ref64 = out.double().flatten(), ref_out.flatten()
        extra["cosine"] = (out64 @ ref64 / (out64.norm() * ref64.norm())).item()
    checks.add(name, "rel_l2", rel_l2(out, ref_out), out_tolerance, **extra)
    if lse is not None:
        checks.add(f"{name} lse", "max_abs", max_finite_diff(lse, ref_lse), lse_tolerance, **extra)


def _check_dense(checks: Checks, name: str, a: dict[str, Any], out: Any, lse: Any) -> None:
    """O and LSE of a dense-attention entry point against the float64 dense reference."""
    q = a["q"]
    plan = BlockPlan.dense(1, 1, q.shape[2], 128, 128, device=q.device)
    ref_out, ref_lse = block_sparse_attention_reference(
        *_wide(q, a["k"], a["v"]), plan, a["scale"], return_lse=True
    )
    checks.add(name, "rel_l2", rel_l2(out, ref_out), OUT_TOLERANCE[q.dtype])
    checks.add(f"{name} lse", "max_abs", max_finite_diff(lse, ref_lse), LSE_TOLERANCE)


def _check_dense_with_lse(checks: Checks, a: dict[str, Any], result: Any) -> None:
    _check_dense(checks, "dense_attention_with_lse", a, *result)


def _check_dense_with_mass(checks: Checks, a: dict[str, Any], result: Any) -> None:
    name = "dense_attention_with_mass (fused search)"
    _check_dense(checks, name, a, result[0], result[1])
    ref_mass = block_attention_mass_reference(
        *_wide(a["q"], a["k"], a["lse"]), a["block_q"], a["block_k"], scale=a["scale"]
    )
    checks.add(f"{name} mass", "rel_l2", rel_l2(result[2], ref_mass), MASS_TOLERANCE)


def _check_block_mass(checks: Checks, a: dict[str, Any], result: Any) -> None:
    q, lse, block_q, rows = a["q"], a["lse"], a["block_q"], a["rows"]
    if rows is not None and rows != block_q:
        q, lse, block_q = sampled_rows(q, block_q, rows), sampled_rows(lse, block_q, rows), rows
    ref = block_attention_mass_reference(
        *_wide(q, a["k"], lse), block_q, a["block_k"], scale=a["scale"]
    )
    checks.add("block_attention_mass", "rel_l2", rel_l2(result, ref), MASS_TOLERANCE, rows=rows)


def _check_row_errors(checks: Checks, a: dict[str, Any], result: Any) -> None:
    q = a["q"]
    errors = result[0] if a["with_choice"] else result
    scale = a["scale"] if a["scale"] is not None else q.shape[-1] ** -0.5
    ref = masked_row_errors_reference(
        *_wide(q, a["k"], a["v"]), a["rows"], a["token_blocks"], a["block_masks"], scale
    )
    checks.add("masked_row_errors", "rel_l2", rel_l2(errors, ref), ROW_ERRORS_TOLERANCE[q.dtype])
    if a["with_choice"]:
        # Where the reference's two errors are clearly apart, the choice must agree with it.
        clear = (ref[..., 0] - ref[..., 1]).abs() > 0.2 * ref.amax(-1)
        expected = (ref[..., 1] < ref[..., 0]).long()
        wrong = (result[1] != expected) & clear
        checks.require("masked_row_errors choice", not wrong.any().item(),
                       clear_pairs=int(clear.sum()))  # fmt: skip
        counted = result[2].item() == result[1].sum().item()
        checks.require("masked_row_errors count", counted)


def _check_rank(checks: Checks, a: dict[str, Any], result: Any) -> None:
    order, cum = rank_key_blocks_reference(a["mass"], a["forced"], a["limit"])
    checks.require("rank_key_blocks order", torch.equal(result[0], order))
    checks.add("rank_key_blocks cum", "max_abs", (result[1] - cum).abs().max().item(), 1e-5)


def _check_ascending(checks: Checks, a: dict[str, Any], result: Any) -> None:
    ref = kept_blocks_ascending_reference(a["order"], a["counts"], a["max_kv"])
    checks.require("kept_blocks_ascending", torch.equal(result, ref))


def _check_lloyd(checks: Checks, a: dict[str, Any], result: Any) -> None:
    """The labels against float64 distances (each one's excess over the nearest centroid),
    the sizes and means against float64 ones of the kernel's own clusters."""
    x, centroids = a["x"].double(), a["centroids"].double()
    labels, means, sizes = result
    distances = torch.cdist(x, centroids).square()
    nearest = distances.amin(-1)
    chosen = distances.gather(-1, labels[..., None])[..., 0]
    norms = x.square().sum(-1) + centroids.square().sum(-1).gather(-1, labels)
    gap = ((chosen - nearest) / norms.clamp_min(1e-30)).max().item()
    checks.add("lloyd_step assignment", "max_gap", gap, KMEANS_GAP_TOLERANCE[a["x"].dtype])
    groups, clusters, dim = centroids.shape
    index = (labels + clusters * torch.arange(groups, device=x.device)[:, None]).flatten()
    counts = torch.zeros(groups * clusters, dtype=torch.long, device=x.device)
    counts.index_add_(0, index, torch.ones_like(index))
    checks.require("lloyd_step sizes", torch.equal(sizes.flatten(), counts))
    sums = torch.zeros(groups * clusters, dim, dtype=torch.float64, device=x.device)
    sums.index_add_(0, index, x.reshape(-1, dim))
    full = (counts > 0)[:, None]
    expected = torch.where(full, sums / counts.clamp_min(1)[:, None], centroids.reshape(-1, dim))
    checks.add("lloyd_step means", "rel_l2", rel_l2(means.reshape(-1, dim), expected),
               KMEANS_MEANS_TOLERANCE)  # fmt: skip


# Kernel entry points as the method modules import them, and their checks.
KERNEL_CHECKS: dict[str, Callable[[Checks, dict[str, Any], Any], None]] = {
    "block_sparse_attention": _check_attention,
    "dense_attention_with_lse": _check_dense_with_lse,
    "dense_attention_with_mass": _check_dense_with_mass,
    "block_attention_mass": _check_block_mass,
    "masked_row_errors": _check_row_errors,
    "rank_key_blocks": _check_rank,
    "kept_blocks_ascending": _check_ascending,
    "lloyd_step": _check_lloyd,
}


def _checked(checks: Checks, name: str, kernel: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(kernel)

    @functools.wraps(kernel)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = kernel(*args, **kwargs)
        key = (*checks.where.values(), name)
        checks.counts[key] += 1
        if checks.counts[key] <= CHECKED_CALLS:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                KERNEL_CHECKS[name](checks, bound.arguments, result)
            except Exception as error:  # noqa: BLE001 - recorded as a failed check
                checks.failure(f"{name} reference", error)
        return result

    return run


@contextlib.contextmanager
def kernels_checked(checks: Checks) -> Iterator[None]:
    """Every kernel entry point the method modules hold, wrapped by its reference check."""
    import importlib
    import pkgutil

    patched = []
    for info in pkgutil.iter_modules(methods_package.__path__):
        module = importlib.import_module(f"{methods_package.__name__}.{info.name}")
        for name in KERNEL_CHECKS:
            kernel = getattr(module, name, None)
            if callable(kernel):
                patched.append((module, name, kernel))
                setattr(module, name, _checked(checks, name, kernel))
    try:
        yield
    finally:
        for module, name, kernel in patched:
            setattr(module, name, kernel)


# --- the two parts ---------------------------------------------------------------------------


def _kernel_where(dtype: torch.dtype, head_dim: int) -> dict[str, str]:
    """What a kernel check records about itself (a method's checks name the method and step)."""
    return {"dtype": _name(dtype), "part": "kernels", "method": "-", "step": f"D={head_dim}"}


def kernel_part(checks: Checks, device: torch.device, dtype: torch.dtype, tiny: bool) -> None:
    """`block_sparse_attention` with LSE on a random ragged plan, and `lloyd_step` on
    clustered vectors, at head dims 64 and 128."""
    generator = torch.Generator(device=device).manual_seed(0)
    attention_part(checks, generator, device, dtype, tiny)
    kmeans_part(checks, generator, device, dtype, tiny)


def kmeans_part(
    checks: Checks, generator: torch.Generator, device: torch.device, dtype: torch.dtype,
    tiny: bool,
) -> None:  # fmt: skip
    """One k-means iteration of 6 groups from drawn vectors, at sizes that fill no tile: 7,800
    vectors (333 tiny) and 1,000 centroids (37)."""
    groups, seq_len, clusters = (6, 333, 37) if tiny else (6, 7_800, 1_000)
    for head_dim in (64, 128):
        checks.where = _kernel_where(dtype, head_dim)
        centers = 3 * torch.randn(groups, 50, head_dim, generator=generator, device=device)
        pick = torch.randint(50, (groups, seq_len), generator=generator, device=device)
        x = centers.gather(1, pick[..., None].expand(-1, -1, head_dim))
        x = (x + torch.randn(x.shape, generator=generator, device=device)).to(dtype)
        start = torch.randint(seq_len, (groups, clusters), generator=generator, device=device)
        centroids = x.gather(1, start[..., None].expand(-1, -1, head_dim)).float()
        try:
            _check_lloyd(checks, {"x": x, "centroids": centroids}, lloyd_step(x, centroids))
        except Exception as error:  # noqa: BLE001 - recorded as a failed check
            checks.failure("lloyd_step", error)


def attention_part(
    checks: Checks, generator: torch.Generator, device: torch.device, dtype: torch.dtype,
    tiny: bool,
) -> None:  # fmt: skip
    """`block_sparse_attention` with LSE on a random ragged plan, at head dims 64 and 128."""
    seq_len = 333 if tiny else 7_800
    for head_dim in (64, 128):
        checks.where = _kernel_where(dtype, head_dim)
        q, k, v = (
            torch.randn(2, 3, seq_len, head_dim, generator=generator, device=device).to(dtype)
            for _ in range(3)
        )
        block = 64 if tiny else 128
        nq = -(-seq_len // block)
        keep = torch.rand(2, 3, nq, nq, generator=generator, device=device) < 0.3
        keep[..., 0] = True  # at least one block per row
        plan = BlockPlan.from_block_mask(keep, block, block, seq_len)
        for precision in ("bf16", "8bit"):
            name = "block_sparse_attention" + ("" if precision == "bf16" else f" {precision}")
            try:
                result = block_sparse_attention(q, k, v, plan, return_lse=True, precision=precision)
                _check_attention(
                    checks, {"q": q, "k": k, "v": v, "plan": plan, "scale": None,
                             "return_lse": True, "precision": precision}, result,
                )  # fmt: skip
            except Exception as error:  # noqa: BLE001 - recorded as a failed check
                checks.failure(name, error)


def method_part(
    checks: Checks, spec: ModelSpec, methods: list[str], device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """Each method through `dit_sparse.apply` on ``spec``'s transformer, one forward per kind of
    step of its default schedule, every kernel call checked. Returns the schedules walked."""
    transformer = build_transformer(spec, device, dtype)
    inputs = make_inputs(spec, device, dtype)

    def forward(step: int | None = None) -> torch.Tensor:
        if step is None:
            return transformer(**inputs)[0]
        with transformer.cache_context("cond", step_index=step, num_inference_steps=NUM_STEPS):
            return transformer(**inputs)[0]

    schedules = {}
    with torch.inference_mode():
        bare = forward()
        for name in methods:
            checks.where = {"dtype": _name(dtype), "part": "methods", "method": name, "step": "-"}
            try:
                schedules[name] = _walk_method(checks, name, spec, transformer, forward, bare)
            except Exception as error:  # noqa: BLE001 - recorded as a failed check
                checks.failure("apply and walk", error)
                dit_sparse.remove(transformer)
    return schedules


def _walk_method(checks, name, spec, transformer, forward, bare) -> dict[str, Any]:
    method = resolve_method(name)
    config = spec.config
    kinds = probe_kinds(method, spec.layout, config["num_layers"], config["attention_head_dim"],
                        bare.device, bare.dtype)  # fmt: skip
    labels = ["+".join(sorted(set(row))) for row in kinds]
    firsts = first_steps(labels) if name != DENSE else {DENSE: 0}
    with dit_sparse.attached(transformer, method) as handle, kernels_checked(checks):
        for label, step in firsts.items():
            checks.where = {**checks.where, "step": label}
            handle.reset_stats()
            out = forward(step)
            seen = "+".join(sorted({r["kind"] for r in handle.records()}))
            checks.require("step kind as scheduled", seen == label, seen=seen, step_index=step)
            checks.require("output finite", bool(torch.isfinite(out).all()))
            if name == DENSE:
                checks.require(
                    "dense through apply equals the bare forward", torch.equal(out, bare)
                )
    if name == "adaspa":
        checks.where = {**checks.where, "step": "-"}
        checks.require("schedule has a search and a reuse step",
                       {"search", "reuse"} <= set(firsts), steps=list(firsts))  # fmt: skip
    return {"schedule": labels, "walked": firsts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", help="git tree id of dit_sparse/ (see the module docstring)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU script test)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--out", default=None, help="default: results/gpu-smoke-<gpu>.json")
    parser.add_argument("--methods", default=",".join(METHODS), help="default: every method")
    args = parser.parse_args(argv)
    methods = chosen(parser, "--methods", args.methods, list(METHODS))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny:
        parser.error("the smoke run is for a GPU; on a CPU, --tiny tests the script")
    if not args.tree and not args.tiny:
        parser.error(
            "--tree is required: git add dit_sparse && git write-tree --prefix=dit_sparse/"
        )
    out = Path(args.out) if args.out else RESULTS / f"gpu-smoke-{device_slug(device)}.json"
    spec = TINY_SPEC if args.tiny else SMOKE_SPEC
    # On a CPU the kernels run their torch references, which take fp32 for fp16/bf16 math.
    dtypes = (torch.float32,) if device.type == "cpu" else DTYPES
    checks = Checks()
    start = time.perf_counter()
    schedules = {}
    for dtype in dtypes:
        kernel_part(checks, device, dtype, args.tiny)
        schedules[_name(dtype)] = method_part(checks, spec, methods, device, dtype)
    seconds = time.perf_counter() - start
    failed = [item for item in checks.items if not item["passed"]]
    write_results(out, device, {
        "dit_sparse_tree": args.tree, "passed": not failed, "seconds": seconds,
        "model": spec.name, "layout": dataclasses.asdict(spec.layout), "heads": spec.config["num_attention_heads"],
        "head_dim": spec.config["attention_head_dim"], "methods": methods,
        "schedules": schedules, "failed": len(failed), "checks": checks.items,
    })  # fmt: skip
    print(f"{len(checks.items)} checks, {len(failed)} failed, {seconds:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
