"""Under Ulysses context parallelism (2 CPU processes, gloo) every method equals one process."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import dit_sparse
from dit_sparse.parallel import HeadPartition, head_partition

METHODS = {
    "dense": {},
    "radial": {"dense_steps": 0, "dense_layers": 0},
    "svg": {"dense_steps": 0, "dense_layers": 0},
    "adaspa": {"dense_steps": 0, "dense_layers": 0},
    "svg2": {"dense_steps": 0, "dense_layers": 0},
}


def _forward(transformer, latents, text):
    """Steps 3 and 4 of 5: AdaSpa searches at the first and reuses its plan at the second; SVG2
    clusters from drawn tokens at the first and from its centroids at the second."""
    outputs = []
    for step in (3, 4):
        with transformer.cache_context("cond", step_index=step, num_inference_steps=5):
            outputs.append(
                transformer(latents, torch.tensor([500.0 - step]), text, return_dict=False)[0]
            )
    return torch.stack(outputs)


def _worker(rank, world, port, results):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from diffusers import ContextParallelConfig

    from dit_sparse.parallel import init_ulysses
    from dit_sparse.pipelines.presets import build_preset

    init_ulysses(world, "cpu")
    transformer = build_preset("tiny-wan").transformer
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 5, 16, 16, generator=g)  # 5 frames x 8 x 8 = 320 tokens
    text = torch.randn(1, 8, 64, generator=g)
    single = {}
    for name, options in METHODS.items():
        with dit_sparse.attached(transformer, name, **options):
            single[name] = _forward(transformer, latents, text)
    mesh = torch.distributed.device_mesh.init_device_mesh(
        "cpu", (1, world), mesh_dim_names=("ring", "ulysses")
    )
    transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world, mesh=mesh))
    for name, options in METHODS.items():
        with dit_sparse.attached(transformer, name, **options) as handle:
            out = _forward(transformer, latents, text)
            density = min(r["density"] for r in handle.records())
        if rank == 0:
            results[name] = ((out - single[name]).abs().max().item(), density)
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ulysses_two_processes_equal_one():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    assert set(results) == set(METHODS)
    for name, (diff, density) in results.items():
        assert diff < 1e-5, f"{name}: 2 processes differ from 1 by {diff}"
        if name != "dense":
            assert density < 1.0, f"{name} ran dense"


def test_head_partition_and_ring_refusal():
    assert head_partition(None, 12) == HeadPartition(0, 12, 12)

    class CP:
        ring_degree, ulysses_degree = 2, 1

    class Config:
        context_parallel_config = CP()

    with pytest.raises(ValueError, match="Use Ulysses"):
        head_partition(Config(), 12)
