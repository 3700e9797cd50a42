"""Training checkpoints as safetensors shards small enough to move one file at a time.

A checkpoint is the model's weights in fp16 and AdamW's two moments in bf16 (bf16 keeps the
range tiny squared gradients need): enough to resume training closely, at 6 bytes a
parameter. Shards stay under ``max_shard_bytes`` so each file fits a size-limited transfer.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_PATTERN = "shard-{index:05d}-of-{count:05d}.safetensors"


def save_sharded(
    tensors: dict[str, torch.Tensor], directory: str | Path, max_shard_bytes: int = 15 << 20
) -> list[Path]:
    """Write ``tensors`` into as few shards as fit ``max_shard_bytes`` each; old shards go.

    Each shard is written under a temporary name and renamed, so a run killed mid-write leaves
    the previous checkpoint's files whole.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.detach().contiguous().cpu()
        size += nbytes
    paths = []
    for index, shard in enumerate(shards, start=1):
        path = directory / _PATTERN.format(index=index, count=len(shards))
        tmp = path.with_suffix(".tmp")
        save_file(shard, tmp)
        os.replace(tmp, path)
        paths.append(path)
    for stale in set(directory.glob("shard-*.safetensors")) - set(paths):
        stale.unlink()
    return paths


def load_sharded(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the shards in ``directory`` (CPU)."""
    paths = sorted(Path(directory).glob("shard-*.safetensors"))
    if not paths:
        raise FileNotFoundError(f"no checkpoint shards in {directory}")
    expected = int(paths[0].stem.rsplit("-", 1)[1])
    if len(paths) != expected:
        raise ValueError(f"{directory} holds {len(paths)} shards, expected {expected}")
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        tensors.update(load_file(path))
    return tensors


def training_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Model weights (fp16) and AdamW moments (bf16), keyed ``model/``, ``exp_avg/``,
    ``exp_avg_sq/`` + parameter name."""
    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        tensors[f"model/{name}"] = param.detach().to(torch.float16)
        state = optimizer.state.get(param, {})
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in state:
                tensors[f"{moment}/{name}"] = state[moment].to(torch.bfloat16)
    return tensors


def restore_training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    step: int,
) -> None:
    """Load `training_state` back; the optimizer resumes as if it had taken ``step`` steps."""
    weights = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("model/")}
    model.load_state_dict(weights)
    saved = optimizer.state_dict()
    names = [name for name, _ in model.named_parameters()]
    state = {}
    for index, name in enumerate(names):
        if f"exp_avg/{name}" in tensors:
            state[index] = {
                "step": torch.tensor(float(step)),
                "exp_avg": tensors[f"exp_avg/{name}"].float(),
                "exp_avg_sq": tensors[f"exp_avg_sq/{name}"].float(),
            }
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
