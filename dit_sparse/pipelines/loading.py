"""Load a pipeline by preset name, hub id or local path, with errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import torch

from .presets import PRESETS, build_preset

# Hub ids we know, with the adapter family that serves them (for checks before loading).
KNOWN_MODELS: dict[str, str] = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "wan",
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": "wan",
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": "wan",
    "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers": "wan",
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": "wan",
    "Wan-AI/Wan2.2-I2V-A14B-Diffusers": "wan",
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": "wan",
    "hunyuanvideo-community/HunyuanVideo": "hunyuan_video",
    "hunyuanvideo-community/HunyuanVideo-I2V": "hunyuan_video",
    "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v": "hunyuan_video15",
    "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v": "hunyuan_video15",
    "THUDM/CogVideoX-2b": "cogvideox",
    "THUDM/CogVideoX-5b": "cogvideox",
    "THUDM/CogVideoX-5b-I2V": "cogvideox",
    "THUDM/CogVideoX1.5-5B": "cogvideox",
    "Lightricks/LTX-Video": "ltx",
    "black-forest-labs/FLUX.1-dev": "flux",
    "black-forest-labs/FLUX.1-schnell": "flux",
}


class ModelUnavailableError(RuntimeError):
    """The model's weights are neither cached locally nor reachable."""


def model_family(model: str) -> str | None:
    """The adapter family of a preset, known hub id or path (by name); None when unknown."""
    if model in PRESETS:
        return PRESETS[model].family
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model]
    name = model.lower()
    for needle, family in (
        ("wan", "wan"),
        ("hunyuan", "hunyuan_video"),
        ("cogvideo", "cogvideox"),
        ("ltx", "ltx"),
        ("flux", "flux"),
    ):
        if needle in name:
            return family
    return None


def load_pipeline(
    model: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
):
    """A diffusers pipeline for ``model``: a preset name, a hub id or a local directory.

    Hub ids load through ``DiffusionPipeline.from_pretrained`` (from the local cache when
    offline); when the weights cannot be had, `ModelUnavailableError` says how to get them.
    """
    if model in PRESETS:
        pipe = build_preset(model)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                cast_like_from_pretrained(component, dtype)
        return pipe.to(device=device)
    else:
        from diffusers import DiffusionPipeline

        local = Path(model).expanduser()
        if not local.exists() and model.count("/") != 1:
            raise ValueError(
                f"{model!r} is neither a preset ({', '.join(PRESETS)}), a local directory, nor a "
                "hub id of the form 'owner/name'"
            )
        source = str(local) if local.exists() else model
        try:
            pipe = DiffusionPipeline.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as err:
            raise ModelUnavailableError(
                f"could not load {model!r}: {err.__class__.__name__}: {str(err).splitlines()[0]}\n"
                f"Download it where the hub is reachable (`huggingface-cli download {model}`) and "
                "point HF_HOME at that cache, or pass the local directory. Offline presets "
                f"(random weights, smoke tests only): {', '.join(PRESETS)}"
            ) from err
    return pipe.to(device=device)


def cast_like_from_pretrained(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast a model built in fp32 to ``dtype`` in place, keeping the modules it marks as
    fp32-only (``_keep_in_fp32_modules``) in fp32, as ``from_pretrained(dtype=...)`` does."""
    keep = tuple(getattr(module, "_keep_in_fp32_modules", None) or ())
    for name, param in module.named_parameters():
        if param.is_floating_point():
            wanted = torch.float32 if any(k in name.split(".") for k in keep) else dtype
            param.data = param.data.to(wanted)
    for name, buffer in module.named_buffers():
        if buffer.is_floating_point() and not any(k in name.split(".") for k in keep):
            buffer.data = buffer.data.to(dtype)
