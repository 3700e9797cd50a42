"""What every adapter must do, checked on each family's tiny preset (fp32, CPU)."""

import pytest
import torch
from adapter_cases import (
    FRAME_METHODS,
    SPARSE_METHODS,
    LayoutSpy,
    each_family,
    forward,
    preset_pipe,
    sparse_method,
)

import dit_sparse
from dit_sparse.pipelines.loading import KNOWN_MODELS, model_family
from dit_sparse.pipelines.presets import PRESETS
from dit_sparse.pipelines.registry import get_adapter, size_rule_for
from dit_sparse.processor import SparseAttentionProcessor


@each_family
def test_adapter_lists_the_self_attention_modules(family):
    pipe = preset_pipe(family.preset)
    transformer = pipe.transformer
    adapter = get_adapter(transformer)
    assert type(transformer).__name__ == family.transformer_class
    modules = adapter.attention_modules(transformer)
    assert [name for name, _ in modules] == list(family.attention_modules)
    assert all(module is transformer.get_submodule(name) for name, module in modules)
    with dit_sparse.attached(pipe, "dense"):
        wrapped = {
            name
            for name, module in transformer.named_modules()
            if isinstance(getattr(module, "processor", None), SparseAttentionProcessor)
        }
    assert wrapped == set(family.attention_modules)  # cross-attention (attn2) untouched


@each_family
def test_layout_read_from_forward_arguments(family):
    pipe = preset_pipe(family.preset)
    spy = LayoutSpy()
    inputs = family.inputs(pipe, torch.Generator().manual_seed(0), 1)
    with dit_sparse.attached(pipe.transformer, spy):
        forward(pipe.transformer, inputs)
    assert set(spy.layouts) == {family.layout}
    assert len(spy.layouts) == len(family.attention_modules)


@each_family
@pytest.mark.parametrize("batch", [1, 2])
def test_dense_reproduces_unpatched_transformer(family, batch):
    pipe = preset_pipe(family.preset)
    inputs = family.inputs(pipe, torch.Generator().manual_seed(batch), batch)
    before = forward(pipe.transformer, inputs)
    with dit_sparse.attached(pipe, "dense") as handle:
        dense = forward(pipe.transformer, inputs)
    assert (dense - before).abs().max() <= 1e-6
    assert len(handle.records()) == len(family.attention_modules)
    assert torch.equal(forward(pipe.transformer, inputs), before)  # removed: exactly as before


@each_family
@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_every_method_runs_or_refuses_by_name(family, method):
    pipe = preset_pipe(family.preset)
    config = sparse_method(method)
    inputs = family.inputs(pipe, torch.Generator().manual_seed(0), 2)
    with dit_sparse.attached(pipe, config) as handle:
        if family.layout.frames == 1 and method in FRAME_METHODS:
            with pytest.raises(ValueError, match=r"frame.*adaspa"):
                forward(pipe.transformer, inputs)
            return
        out = forward(pipe.transformer, inputs)
        records = handle.records()
    assert torch.isfinite(out).all()
    assert len(records) == len(family.attention_modules)
    assert all(r["kind"] != "dense" for r in records)
    assert all(0.0 < r["density"] <= 1.0 for r in records)


@each_family
@pytest.mark.parametrize("guided", [True, False], ids=["guidance", "no-guidance"])
def test_steps_counted_per_branch(family, guided):
    pipe = preset_pipe(family.preset)
    options = family.guided if guided else family.unguided
    branches = family.branches[0 if guided else 1]
    with dit_sparse.attached(pipe, "dense") as handle:
        pipe(
            prompt="a red ball rolls left",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            **family.pipe_size,
            **options,
        )
        records = handle.records()
    # Each branch counts its own steps, 0 1 2, from the timestep (no step_index but Wan's).
    layers = len(family.attention_modules)
    assert {r["branch"] for r in records} == set(branches)
    for branch in branches:
        steps = sorted(r["step"] for r in records if r["branch"] == branch)
        assert steps == [step for step in range(3) for _ in range(layers)], branch


@each_family
def test_known_hub_ids_and_preset_resolve_to_the_family(family):
    assert model_family(family.preset) == family.name
    assert PRESETS[family.preset].family == family.name
    ids = [model for model, name in KNOWN_MODELS.items() if name == family.name]
    assert ids, f"no hub id listed for {family.name}"
    assert all(model_family(model) == family.name for model in ids)
    assert size_rule_for(family.name) is not None
    preset = PRESETS[family.preset]
    size_rule_for(family.name).check(preset.frames, preset.height, preset.width)
