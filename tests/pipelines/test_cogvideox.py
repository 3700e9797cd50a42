"""CogVideoX 1.5 patches time too (patch_size_t = 2): half as many latent frames in the layout."""

import torch
from adapter_cases import LayoutSpy, forward

import dit_sparse
from dit_sparse import TokenLayout


def test_cogvideox_15_layout_and_dense():
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=32,
        text_embed_dim=32,
        num_layers=1,
        patch_size=2,
        patch_size_t=2,
        patch_bias=False,
        use_rotary_positional_embeddings=True,
    )
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 4, 4, 16, 16, generator=g),  # 4 latent frames
        encoder_hidden_states=torch.randn(1, 20, 32, generator=g),
        timestep=torch.tensor([500]),
    )
    before = forward(transformer, inputs)
    spy = LayoutSpy()
    with dit_sparse.attached(transformer, spy):
        assert torch.equal(forward(transformer, inputs), before)
    assert spy.layouts == [TokenLayout(2, 8, 8, text_len=20, text_first=True)]
