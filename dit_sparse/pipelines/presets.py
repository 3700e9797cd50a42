"""Offline presets: pipelines built from small configs in-process, with random weights.

A preset with random weights is for smoke tests and speed measurements, never for looks or
quality claims: its videos are noise-like, whatever the method.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .text import HashTextEncoder, HashTokenizer


@dataclass(frozen=True)
class Preset:
    """A named pipeline recipe, with the video size it is meant to run at."""

    name: str
    family: str
    description: str
    build: Callable[[], object]
    frames: int
    height: int
    width: int
    steps: int
    guidance: float | None = None  # None: the pipeline's own default
    random_weights: bool = True
    prompt: str = "a red ball rolls left"  # what `dit-sparse generate` uses without --prompt
    # A model trained on a closed vocabulary: the warning for a prompt outside it, else None.
    prompt_warning: Callable[[str], str | None] | None = None

    def warn_about(self, prompt: str) -> str | None:
        """Why ``prompt`` is a poor fit for this model, or None."""
        return self.prompt_warning(prompt) if self.prompt_warning else None


def _tiny_wan():
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=32,
        in_channels=16,
        out_channels=16,
        text_dim=64,
        freq_dim=64,
        ffn_dim=256,
        num_layers=4,
        rope_max_seq_len=256,
    )
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    return WanPipeline(
        tokenizer=HashTokenizer(),
        text_encoder=HashTextEncoder(dim=64),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )


# --- the other families: same hash tokenizer, tiny random transformers text encoders -------
#
# Their pipelines index the encoder output (``[0]``), ask for ``hidden_states`` (HunyuanVideo's
# Llama) or ``pooler_output`` (CLIP), which `HashTextEncoder` does not give; small
# `transformers` models built from configs do, with no download. Their vocabularies match the
# hash tokenizer's, and each tokenizer's ``model_max_length`` is the length its pipeline asks
# for, so the pipelines' truncation check (a second call with ``padding="longest"``) finds
# nothing truncated.

_TEXT_DIM = 32
_VOCAB = 8192
_TOKEN = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


class _PipelineTokenizer(HashTokenizer):
    """`HashTokenizer` with the rest of the tokenizer interface the HunyuanVideo and Flux
    pipelines use.

    Punctuation marks are tokens too, as in the real models' BPE tokenizers:
    HunyuanVideoPipeline drops the first 95 tokens of its Llama prompt template (the
    template's length under Llama's tokenizer), and counting words only the template is 76
    tokens long, so the crop would eat the prompt. FluxPipeline runs the prompt through
    textual inversion's ``maybe_convert_prompt``, which calls ``tokenize`` and reads
    ``added_tokens_encoder``.
    """

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {}

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())

    def __call__(self, text: str | list[str], **kwargs: object):
        texts = [text] if isinstance(text, str) else list(text)
        # A mark is spelled as a word, which the hash tokenizer then hashes like any other.
        spelled = [
            " ".join(t if t.isalnum() else f"mark{ord(t)}" for t in self.tokenize(item))
            for item in texts
        ]
        return super().__call__(spelled, **kwargs)


def _t5():
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=_VOCAB, d_model=_TEXT_DIM, d_kv=8, d_ff=64, num_layers=1, num_heads=4
    )
    return T5EncoderModel(config).eval()  # eval: built modules train, and T5 has dropout


def _clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=_VOCAB,
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
        # eos id 2 makes CLIP pool the token with the largest id, as in diffusers' own tests;
        # the hash tokenizer has no end-of-text token.
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=0,
    )
    return CLIPTextModel(config).eval()


def _llama():
    from transformers import LlamaConfig, LlamaModel

    # Two layers: HunyuanVideoPipeline reads the hidden states three from the end.
    config = LlamaConfig(
        vocab_size=_VOCAB,
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaModel(config).eval()


def _tiny_hunyuan():
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=32,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=_TEXT_DIM,
        pooled_projection_dim=_TEXT_DIM,
        rope_axes_dim=(8, 12, 12),
    )
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
    )
    return HunyuanVideoPipeline(
        text_encoder=_llama(),
        tokenizer=_PipelineTokenizer(_VOCAB),
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=_clip(),
        tokenizer_2=_PipelineTokenizer(_VOCAB, model_max_length=77),
    )


def _tiny_cogvideox():
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=_TEXT_DIM,
        num_layers=2,
        sample_width=16,
        sample_height=16,
        sample_frames=17,
        patch_size=2,
        use_rotary_positional_embeddings=True,  # as CogVideoX-5b and 1.5
    )
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
    )
    return CogVideoXPipeline(
        tokenizer=_PipelineTokenizer(_VOCAB, model_max_length=226),
        text_encoder=_t5(),
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(timestep_spacing="trailing"),
    )


def _tiny_ltx():
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=32,
        num_layers=2,
        caption_channels=_TEXT_DIM,
    )
    # 4x4 patches and three 2x stages: 32x in space, 8x in time, like LTX-Video's VAE.
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=4,
    )
    return LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_t5(),
        tokenizer=_PipelineTokenizer(_VOCAB, model_max_length=128),
        transformer=transformer,
    )


def _tiny_flux():
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        in_channels=16,  # 4 latent channels, packed 2x2
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_TEXT_DIM,
        pooled_projection_dim=_TEXT_DIM,
        axes_dims_rope=(4, 6, 6),
        guidance_embeds=True,  # as FLUX.1-dev
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_clip(),
        tokenizer=_PipelineTokenizer(_VOCAB, model_max_length=77),
        text_encoder_2=_t5(),
        tokenizer_2=_PipelineTokenizer(_VOCAB, model_max_length=512),
        transformer=transformer,
    )


def _wan_shapes():
    from .shapes import load_wan_shapes

    return load_wan_shapes()


def _shapes_prompt_warning(prompt: str) -> str | None:
    from ..synthetic.vocabulary import untrained_prompt_warning

    return untrained_prompt_warning(prompt, "wan-shapes")


PRESETS: dict[str, Preset] = {
    "tiny-wan": Preset(
        name="tiny-wan",
        family="wan",
        description="WanPipeline, 4 layers x 4 heads x 32 dims, random weights (smoke tests, speed)",
        build=_tiny_wan,
        frames=17,
        height=64,
        width=64,
        steps=4,
    ),
    "tiny-hunyuan": Preset(
        name="tiny-hunyuan",
        family="hunyuan_video",
        description="HunyuanVideoPipeline, 2 dual + 2 single blocks x 2 heads x 32 dims, 1x1 "
        "patches, 256 padded text tokens, random weights (smoke tests, speed)",
        build=_tiny_hunyuan,
        frames=17,
        height=64,
        width=64,
        steps=4,
    ),
    "tiny-cogvideox": Preset(
        name="tiny-cogvideox",
        family="cogvideox",
        description="CogVideoXPipeline (rotary, as 5b), 2 layers x 2 heads x 16 dims, 226 text "
        "tokens first, random weights (smoke tests, speed)",
        build=_tiny_cogvideox,
        frames=17,
        height=128,
        width=128,
        steps=4,
    ),
    "tiny-ltx": Preset(
        name="tiny-ltx",
        family="ltx",
        description="LTXPipeline, 2 layers x 2 heads x 16 dims, 32x/8x VAE, random weights "
        "(smoke tests, speed)",
        build=_tiny_ltx,
        frames=33,
        height=256,
        width=256,
        steps=4,
    ),
    "tiny-flux": Preset(
        name="tiny-flux",
        family="flux",
        description="FluxPipeline (images), 2 dual + 2 single blocks x 2 heads x 16 dims, 512 "
        "text tokens first, random weights (smoke tests, speed)",
        build=_tiny_flux,
        frames=1,
        height=256,
        width=256,
        steps=4,
    ),
    "wan-shapes": Preset(
        name="wan-shapes",
        family="wan",
        description="WanPipeline, 8 layers x 4 heads x 64 dims, trained on procedural shapes "
        "clips (training/), pixel-space autoencoder; 17x64x64 = 1,280 video tokens",
        build=_wan_shapes,
        # The size and steps at which the example prompt's clip passes the motion check for
        # most seeds, within a CPU's patience (training/default_demo_check.json); fewer steps
        # or more frames and the shape stalls, drifts sideways or is not drawn.
        frames=17,
        height=64,
        width=64,
        steps=20,
        guidance=5.0,
        random_weights=False,
        prompt="a red circle moves left slowly over a striped background",
        prompt_warning=_shapes_prompt_warning,
    ),
}


def build_preset(name: str) -> object:
    """Build the preset pipeline ``name`` in float32 on the CPU (move it with ``.to``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name].build()
