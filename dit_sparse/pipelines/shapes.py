"""``wan-shapes``: a small Wan text-to-video model trained on the synthetic shapes world.

The pipeline is diffusers' own `WanPipeline`, so the plugin and `generation.generate` treat it
like any Wan model. Its parts:

- transformer: a stock `WanTransformer3DModel` (small config), weights shipped in
  ``dit_sparse/data/wan-shapes/transformer`` and trained by ``training/train_shapes.py``;
- vae: `PixelSpaceVideoAutoencoder`, a fixed space-to-depth rearrangement of pixels, not a
  learned model: nothing to train or ship but its normalisation constants;
- tokenizer and text encoder: `pipelines.text`'s deterministic hash stand-ins;
- scheduler: `FlowMatchEulerDiscreteScheduler` with the shift used in training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    ModelMixin,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput

from .text import HashTextEncoder, HashTokenizer

MODEL_NAME = "wan-shapes"
MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / MODEL_NAME


class PixelSpaceVideoAutoencoder(ModelMixin, ConfigMixin):
    """A video "autoencoder" that only regroups pixels: exact, deterministic, no weights.

    Latent frame 0 holds pixel frame 0 repeated ``scale_factor_temporal`` times; latent frame
    ``i > 0`` holds pixel frames ``t*(i-1)+1 .. t*i``, the causal grouping of Wan's VAE, so
    ``num_frames = t*n + 1`` pixel frames give ``n + 1`` latent frames and `WanPipeline`'s
    frame rule (``num_frames % t == 1``) holds. Each ``s x s`` pixel patch of each frame of a
    group becomes channels: ``z_dim = in_channels * t * s * s``, channel order
    (colour, frame in group, row in patch, column in patch).

    With ``motion_channels=2`` the latents also carry the clip's motion field (the shape's
    per-frame step times its coverage, averaged over each latent cell): the velocity that
    pixel-space flow matching hardly rewards becomes an explicit, prompt-determined target, as
    in VideoJAM's joint appearance-motion representation. `decode` reads the pixels only.

    `WanPipeline` reads ``config.z_dim``, ``config.latents_mean``, ``config.latents_std``,
    ``config.scale_factor_temporal``, ``config.scale_factor_spatial``, ``dtype`` and calls
    `decode`; training calls `encode` and `normalize`. ``latents_mean``/``latents_std`` are
    per-channel statistics of encoded training clips, so normalised latents have about unit
    variance, as flow matching from unit Gaussian noise expects.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        scale_factor_temporal: int = 4,
        scale_factor_spatial: int = 2,
        z_dim: int = 48,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        motion_channels: int = 0,
    ) -> None:
        super().__init__()
        if motion_channels not in (0, 2):
            raise ValueError(f"motion_channels must be 0 or 2 (x and y), got {motion_channels}")
        expected = in_channels * scale_factor_temporal * scale_factor_spatial**2 + motion_channels
        if z_dim != expected:
            raise ValueError(
                f"z_dim must be in_channels * scale_factor_temporal * scale_factor_spatial**2 + "
                f"motion_channels = {expected}, got {z_dim}"
            )
        mean = [0.0] * z_dim if latents_mean is None else latents_mean
        std = [1.0] * z_dim if latents_std is None else latents_std
        if len(mean) != z_dim or len(std) != z_dim or min(std) <= 0:
            raise ValueError(f"latents_mean and latents_std need {z_dim} entries, std > 0")
        shape = (1, z_dim, 1, 1, 1)
        # Buffers (not saved: the config holds them) give the module its dtype and device.
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)

    def _check(self, frames: int, height: int, width: int) -> None:
        t, s = self.config.scale_factor_temporal, self.config.scale_factor_spatial
        if frames < 1 or (frames - 1) % t or height % s or width % s:
            raise ValueError(
                f"video of {frames} frames {height}x{width}: frames must be {t}*n + 1 and height, "
                f"width multiples of {s}"
            )

    @property
    def pixel_channels(self) -> int:
        """Latent channels that hold pixels (the first ones; motion channels follow)."""
        return self.config.z_dim - self.config.motion_channels

    def _group(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, C, t*n+1, H, W]`` to ``[B, C, t, s, s, n+1, H/s, W/s]``, frame 0 repeated."""
        batch, channels, frames, height, width = video.shape
        self._check(frames, height, width)
        t, s = self.config.scale_factor_temporal, self.config.scale_factor_spatial
        groups = (frames - 1) // t + 1
        video = torch.cat([video[:, :, :1].expand(-1, -1, t - 1, -1, -1), video], 2)
        x = video.reshape(batch, channels, groups, t, height // s, s, width // s, s)
        return x.permute(0, 1, 3, 5, 7, 2, 4, 6)

    def encode(self, video: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        """Pixels ``[B, C, t*n+1, H, W]`` in [-1, 1] to raw latents ``[B, z, n+1, H/s, W/s]``.

        A model with motion channels also needs ``motion`` ``[B, 2, t*n+1, H, W]`` (as
        ``training/shapes_data.py``'s `render_clips` draws it), averaged into each latent cell.
        """
        pixels = self._group(video).flatten(1, 4)
        if not self.config.motion_channels:
            return pixels
        if motion is None or motion.shape[1] != 2 or motion.shape[2:] != video.shape[2:]:
            got = None if motion is None else tuple(motion.shape)
            raise ValueError(
                f"this autoencoder's latents hold a motion field: encode needs motion of shape "
                f"[B, 2, {', '.join(map(str, video.shape[2:]))}], got {got}"
            )
        return torch.cat([pixels, self._group(motion).mean((2, 3, 4))], 1)

    def decode(
        self, latents: torch.Tensor, return_dict: bool = True
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Raw latents ``[B, z, n+1, h, w]`` to pixels ``[B, C, t*n+1, h*s, w*s]``.

        The ``t`` copies of frame 0 that latent frame 0 holds are averaged: a generated latent
        need not keep them equal, and their mean is the least-squares frame.
        """
        batch, z_dim, groups, height, width = latents.shape
        if z_dim != self.config.z_dim:
            raise ValueError(f"latents need {self.config.z_dim} channels, got {z_dim}")
        c, t = self.config.in_channels, self.config.scale_factor_temporal
        s = self.config.scale_factor_spatial
        x = latents[:, : self.pixel_channels].reshape(batch, c, t, s, s, groups, height, width)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(batch, c, groups * t, height * s, width * s)
        video = torch.cat([x[:, :, :t].mean(2, keepdim=True), x[:, :, t:]], 2)
        return DecoderOutput(sample=video) if return_dict else (video,)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents to the unit-scale latents the transformer works in (the pipeline undoes
        this with ``config.latents_mean``/``latents_std`` before `decode`)."""
        return (latents - self.mean.to(latents.dtype)) / self.std.to(latents.dtype)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Unit-scale latents back to raw ones, as `WanPipeline` does before `decode`."""
        return latents * self.std.to(latents.dtype) + self.mean.to(latents.dtype)


def assemble_pipeline(
    transformer: WanTransformer3DModel,
    autoencoder: PixelSpaceVideoAutoencoder,
    scheduler: FlowMatchEulerDiscreteScheduler,
) -> WanPipeline:
    """A `WanPipeline` around ``transformer`` with the hash text stand-ins sized to it."""
    return WanPipeline(
        tokenizer=HashTokenizer(),
        text_encoder=HashTextEncoder(dim=transformer.config.text_dim),
        vae=autoencoder,
        scheduler=scheduler,
        transformer=transformer,
    )


def load_wan_shapes(
    directory: str | Path = MODEL_DIR, torch_dtype: torch.dtype = torch.float32
) -> WanPipeline:
    """The trained ``wan-shapes`` pipeline on the CPU, transformer in ``torch_dtype``, from the
    directory ``training/train_shapes.py --export`` writes.

    Raises `FileNotFoundError` if ``directory`` holds no trained transformer.
    """
    directory = Path(directory)
    if not (directory / "transformer" / "config.json").is_file():
        raise FileNotFoundError(
            f"no {MODEL_NAME} weights in {directory}; train them with training/train_shapes.py"
        )
    transformer = WanTransformer3DModel.from_pretrained(
        directory, subfolder="transformer", torch_dtype=torch_dtype
    )
    # The autoencoder stays fp32: the pipeline casts latents to its dtype before decoding.
    autoencoder = PixelSpaceVideoAutoencoder.from_config(
        PixelSpaceVideoAutoencoder.load_config(directory / "vae")
    )
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(directory, subfolder="scheduler")
    return assemble_pipeline(transformer, autoencoder, scheduler)
