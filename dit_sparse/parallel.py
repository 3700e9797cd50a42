"""Context parallelism: which heads this process sees, and which layouts we refuse.

Under diffusers' Ulysses attention an all-to-all gives every rank the whole sequence for a
slice of the heads before the attention op runs, so the intercepted call sees
``[B, H / N, S, D]`` on rank ``r`` holding global heads ``r * H / N ...``. Anything a method
computes per head (head kinds, plans, cached LSE) is then per local head; methods that combine
heads (AdaSpa's hierarchical budget) use the global index and reduce over the group.
Ring attention shards the keys, which no block plan over the whole sequence can follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HeadPartition:
    """This process's heads: global indices ``offset .. offset + local - 1`` of ``total``."""

    offset: int
    local: int
    total: int
    group: Any = None  # the Ulysses process group, or None on one process

    @property
    def is_split(self) -> bool:
        return self.group is not None


def head_partition(parallel_config: Any, local_heads: int) -> HeadPartition:
    """The partition for an attention processor's ``_parallel_config`` (None: one process)."""
    cp = getattr(parallel_config, "context_parallel_config", None)
    if cp is None:
        return HeadPartition(0, local_heads, local_heads)
    if cp.ring_degree > 1:
        raise ValueError(
            f"dit_sparse cannot run under ring attention (ring_degree={cp.ring_degree}): its keys "
            "are sharded across GPUs while a block plan covers the whole sequence. Use Ulysses: "
            "ContextParallelConfig(ulysses_degree=N)."
        )
    if cp.ulysses_degree == 1:
        return HeadPartition(0, local_heads, local_heads)
    return HeadPartition(
        offset=cp._ulysses_local_rank * local_heads,
        local=local_heads,
        total=local_heads * cp.ulysses_degree,
        group=cp._ulysses_mesh.get_group(),
    )


def init_ulysses(degree: int, device: str) -> tuple[int, str]:
    """Join the process group torchrun set up; returns (rank, this rank's device).

    ``degree`` must equal the number of processes (``torchrun --nproc-per-node N``).
    """
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != degree:
        raise ValueError(
            f"--ulysses {degree} needs {degree} processes: launch with "
            f"`torchrun --nproc-per-node {degree} -m dit_sparse.cli generate ...` (found {world})"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cpu" and torch.accelerator.device_count() == 0:
        # diffusers picks a device as `rank % device_count()`; on CPU-only hosts that is 0.
        torch.accelerator.device_count = lambda: 1
    return dist.get_rank(), device


def enable_ulysses(pipe: Any, degree: int) -> None:
    """Split attention heads over ``degree`` processes in every transformer of ``pipe``."""
    import torch
    from diffusers import ContextParallelConfig

    device_type = "cuda" if pipe._execution_device.type == "cuda" else "cpu"
    mesh = torch.distributed.device_mesh.init_device_mesh(
        device_type, (1, degree), mesh_dim_names=("ring", "ulysses")
    )
    for name in ("transformer", "transformer_2"):
        transformer = getattr(pipe, name, None)
        if transformer is not None:
            transformer.enable_parallelism(
                config=ContextParallelConfig(ulysses_degree=degree, mesh=mesh)
            )
