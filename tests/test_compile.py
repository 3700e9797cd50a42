"""torch.compile with a method attached (issue 30), on tiny-wan on the CPU.

dynamo's counters say what compiled: no graph break inside a transformer block (regional
compilation runs with ``fullgraph=True``, which raises at any break), only the step tracking's
two around the whole transformer's forward, and one graph for a whole generation whatever
its step count (no recompile per step, per layer or per kind of step). The compiled
generation computes what the eager one does, call for call. The backend is ``aot_eager``:
dynamo and AOTAutograd (fake tensors, functionalization) as Inductor sees them, without
Inductor's C++ build, which takes minutes on a CI core.

The GPU machines run an older torch than a fresh install resolves, and dynamo's coverage moves
between versions (torch 2.11's could not trace ``super().unflatten`` handed over by a torch
function mode, which 2.14's does): the last test runs this file again with the torch that
pins the oldest Triton ``pyproject.toml`` accepts, which ``.ci/run`` installs beside the
environment's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_pipe
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

import dit_sparse
from dit_sparse import ops

# Every method sparse from step 1; AdaSpa also searches again at step 2 and reuses after.
METHODS = {
    "dense": {},
    "radial": dict(dense_steps=1, dense_layers=0),
    "svg": dict(dense_steps=1, dense_layers=0),
    "adaspa": dict(dense_steps=1, search_steps=(2,)),
}


@pytest.fixture(scope="module")
def pipe():
    """A tiny-wan of this module's own: the session's is shared with tests that leave state on
    single blocks (an attention backend set on one), which dynamo guards on and recompiles."""
    from dit_sparse.pipelines.presets import build_preset

    pipe = build_preset("tiny-wan")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(pipe, steps: int) -> torch.Tensor:
    return run_pipe(pipe, steps=steps, latent=True)


def _calls(handle) -> list[tuple]:
    return [(r["step"], r["branch"], r["layer"], r["kind"]) for r in handle.records()]


def _compare_compiled(
    pipe, method: str, compile_transformer
) -> tuple[CompileCounterWithBackend, dict]:
    """Eager, then compiled, generations of 3 and 6 steps: same outputs and calls; returns the
    compile counter and the graph breaks dynamo counted."""
    handle = dit_sparse.apply(pipe, method, **METHODS[method])
    try:
        eager = {}
        for steps in (3, 6):
            eager[steps] = (_latents(pipe, steps), _calls(handle))
            handle.reset_stats()
        torch._dynamo.reset()
        counters.clear()
        counter = CompileCounterWithBackend("aot_eager")
        undo = compile_transformer(pipe, counter)
        try:
            frames = []
            for steps, (latents, calls) in eager.items():
                compiled = _latents(pipe, steps)
                torch.testing.assert_close(compiled, latents, rtol=1e-5, atol=1e-5)
                assert _calls(handle) == calls
                handle.reset_stats()
                frames.append(counter.frame_count)
        finally:
            undo()
        assert frames[0] == frames[1], "the 6-step generation recompiled"
        return counter, dict(counters["graph_break"])
    finally:
        dit_sparse.remove(pipe)
        torch._dynamo.reset()


def _compile_blocks(pipe, counter):
    return _compile_blocks_with(pipe, counter, fullgraph=True)


def _compile_blocks_with(pipe, counter, fullgraph: bool):
    pipe.transformer.compile_repeated_blocks(backend=counter, fullgraph=fullgraph)

    def undo():
        for block in pipe.transformer.blocks:
            block._compiled_call_impl = None

    return undo


def _compile_whole(pipe, counter):
    transformer = pipe.transformer
    pipe.transformer = torch.compile(transformer, backend=counter)

    def undo():
        pipe.transformer = transformer

    return undo


@pytest.mark.parametrize("method", list(METHODS))
def test_compile_repeated_blocks_one_graph_for_every_block_and_step(pipe, method):
    counter, breaks = _compare_compiled(pipe, method, _compile_blocks)
    # fullgraph=True: a break in a block would have raised. One graph serves all 4 blocks,
    # both guidance branches, dense and sparse steps, 3 and 6 steps.
    assert breaks == {}
    assert counter.frame_count == 1


@pytest.mark.parametrize("method", list(METHODS))
def test_compile_whole_transformer_breaks_only_around_the_forward(pipe, method):
    counter, breaks = _compare_compiled(pipe, method, _compile_whole)
    # The step tracking hook runs eagerly before and after the model's forward; the forward
    # itself, every block and attention call included, is one graph.
    assert all("StepTrackingHook" in reason for reason in breaks), breaks
    assert sum(breaks.values()) == 2
    assert counter.frame_count == 1


def test_attention_op_checks_and_falls_back_to_sdpa_without_a_runtime():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 24, 3, 32, generator=g).transpose(1, 2) for _ in range(3))
    route = ops.route_tensor(-1, 0)  # no runtime has this key
    args = (q, k, v, None, 0.0, False, None, False, route)
    torch.library.opcheck(ops.attention, args)
    out = ops.attention(*args)
    assert torch.equal(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert out.stride() == torch.empty_like(q).stride()  # q's layout, as the fake says


def test_compiled_blocks_with_a_step_cache(pipe):
    """A step cache's hooks on the compiled blocks break their graphs where diffusers disables
    dynamo; dit_sparse adds no break, and the compiled generation skips and computes what the
    eager one does."""
    from dit_sparse import caches

    handle = dit_sparse.apply(pipe, "radial", **METHODS["radial"])
    caches.enable_cache(pipe, "FirstBlockCache:threshold=0.2")
    try:
        eager, eager_calls = _latents(pipe, 6), _calls(handle)
        handle.reset_stats()
        torch._dynamo.reset()
        counters.clear()
        undo = _compile_blocks_with(pipe, CompileCounterWithBackend("aot_eager"), fullgraph=False)
        try:
            torch.testing.assert_close(_latents(pipe, 6), eager, rtol=1e-5, atol=1e-5)
        finally:
            undo()
        assert _calls(handle) == eager_calls
        assert 0.0 < handle.summary()["layers_skipped"] < 1.0
        # Every break is at a function diffusers' cache hooks run with dynamo disabled.
        breaks = list(counters["graph_break"])
        assert breaks and all("torch.compiler.disable()" in reason for reason in breaks), breaks
    finally:
        dit_sparse.remove(pipe)
        caches.disable_cache(pipe)
        torch._dynamo.reset()


@pytest.mark.parametrize("sorted_tokens", [False, True])
def test_block_sparse_kernel_is_one_graph_node_under_compile(sorted_tokens):
    """Also with a plan that sorts queries (``perm``) and keys (``key_perm``) apart, as SVG2's
    does: both travel as the op's arguments."""
    from dit_sparse import BlockPlan
    from dit_sparse.kernels import block_sparse_attention
    from dit_sparse.kernels.block_sparse_attention import _block_sparse_attention_op

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, 32, generator=g) for _ in range(3))
    mask = torch.rand(4, 4, generator=g) < 0.5
    mask.diagonal().fill_(True)
    plan = BlockPlan.from_block_mask(mask, 16, 16, 64)
    if sorted_tokens:
        perm, key_perm = (torch.randperm(64, generator=g)[None, None] for _ in range(2))
        plan = dataclasses.replace(plan, perm=perm, key_perm=key_perm)

    def attend(q, k, v):
        return block_sparse_attention(q, k, v, plan, scale=0.2, return_lse=True)

    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    out, lse = torch.compile(attend, backend=counter, fullgraph=True)(q, k, v)
    expected_out, expected_lse = attend(q, k, v)
    assert torch.equal(out, expected_out) and torch.equal(lse, expected_lse)
    assert counter.frame_count == 1
    args = (q, k, v, plan.kv_indices, plan.kv_counts, plan.perm, None, None, 16, 16, 64, 0.2, True)
    torch.library.opcheck(_block_sparse_attention_op, (*args, "bf16", plan.key_perm))
    torch._dynamo.reset()


FLOOR_TORCH = Path(__file__).resolve().parents[1] / ".ci" / "torch-floor"


def test_this_file_with_the_gpu_machines_torch():
    if "torch-floor" in torch.__file__:
        pytest.skip("this is the run with the floor torch")
    if not (FLOOR_TORCH / "torch").is_dir():
        pytest.skip(f"no floor torch in {FLOOR_TORCH}: `bash .ci/run` installs it")
    floor_triton = FLOOR_TORCH.parent / "triton-floor"
    path = [str(FLOOR_TORCH), str(floor_triton), str(FLOOR_TORCH.parent.parent)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]))
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", __file__],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # Every test but this one ran there, and passed.
    assert re.search(r"\b\d+ passed, 1 skipped\b", done.stdout), done.stdout[-2000:]
