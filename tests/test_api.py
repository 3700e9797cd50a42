import pytest
import torch
from conftest import run_pipe

import dit_sparse
from dit_sparse.processor import SparseAttentionProcessor


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_dense_reproduces_unpatched_pipeline_and_remove_restores_it(tiny_wan, guidance):
    before = run_pipe(tiny_wan, guidance)
    processors = [block.attn1.processor for block in tiny_wan.transformer.blocks]
    handle = dit_sparse.apply(tiny_wan, "dense")
    assert all(
        isinstance(b.attn1.processor, SparseAttentionProcessor) for b in tiny_wan.transformer.blocks
    )
    # Cross-attention is untouched.
    assert not any(
        isinstance(b.attn2.processor, SparseAttentionProcessor) for b in tiny_wan.transformer.blocks
    )
    dense = run_pipe(tiny_wan, guidance)
    assert (dense - before).abs().max() <= 1e-6
    records = handle.records()
    branches = {"cond", "uncond"} if guidance > 1 else {"cond"}
    assert len(records) == 3 * len(branches) * len(processors)
    assert {r["branch"] for r in records} == branches
    dit_sparse.remove(tiny_wan)
    assert [b.attn1.processor for b in tiny_wan.transformer.blocks] == processors
    assert (
        not hasattr(tiny_wan.transformer._diffusers_hook, "hooks")
        or "dit_sparse" not in tiny_wan.transformer._diffusers_hook.hooks
    )
    assert torch.equal(run_pipe(tiny_wan, guidance), before)


def test_apply_replaces_and_remove_is_idempotent(tiny_wan):
    dit_sparse.remove(tiny_wan)  # clean pipeline: no-op
    first = dit_sparse.apply(tiny_wan, dit_sparse.Dense())
    second = dit_sparse.apply(tiny_wan, "dense", dense_layers=2)
    assert dit_sparse.handle_of(tiny_wan) is second and first is not second
    processor = tiny_wan.transformer.blocks[0].attn1.processor
    assert isinstance(processor, SparseAttentionProcessor)
    assert not isinstance(processor.inner, SparseAttentionProcessor)  # not wrapped twice
    dit_sparse.remove(tiny_wan)
    dit_sparse.remove(tiny_wan)
    assert dit_sparse.handle_of(tiny_wan) is None


def test_attached_scope_and_report(tiny_wan):
    with dit_sparse.attached(tiny_wan, "dense") as handle:
        run_pipe(tiny_wan, 1.0, steps=2)
        report = handle.report()
    assert dit_sparse.handle_of(tiny_wan) is None
    assert "dense" in report and "total: 8 calls" in report
    assert handle.summary()["mean_density"] == 1.0


def test_processor_keeps_wrapped_signature_and_forwards_backend(tiny_wan):
    import inspect

    with dit_sparse.attached(tiny_wan, "dense"):
        module = tiny_wan.transformer.blocks[0].attn1
        params = inspect.signature(module.processor.__call__).parameters
        assert "rotary_emb" in params
        module.set_attention_backend("native")
        assert module.processor.inner._attention_backend is not None


def test_unsupported_transformer_and_bad_method():
    with pytest.raises(ValueError, match="WanTransformer3DModel"):
        dit_sparse.apply(torch.nn.Linear(2, 2), "dense")
    with pytest.raises(ValueError, match="accepted: dense"):
        dit_sparse.apply(torch.nn.Linear(2, 2), "sparse-magic")
    with pytest.raises(TypeError, match="pipeline"):
        dit_sparse.apply(object(), "dense")
    with pytest.raises(ValueError, match="share"):
        dit_sparse.Dense(dense_steps=1.5)
