"""Where a measurement was taken: versions, GPU, date and command, for every results file."""

from __future__ import annotations

import datetime
import re
import shlex
import sys
from importlib import metadata

import torch

from .. import __version__


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def device_name(device: str | torch.device) -> str:
    """The GPU's name, as CUDA reports it, or ``"cpu"``."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def device_slug(device: str | torch.device) -> str:
    """`device_name` for file names: ``"nvidia-h100-80gb-hbm3"``, ``"cpu"``."""
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def environment(device: str | torch.device, command: list[str] | None = None) -> dict[str, object]:
    """``gpu``, library versions, UTC ``date`` and the ``command`` line (default: ``sys.argv``)."""
    return {
        "gpu": device_name(device),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "triton": _version("triton"),
        "dit_sparse": __version__,  # also when run from a checkout that is not installed
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv if command is None else command),
    }
