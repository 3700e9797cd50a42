import torch
from conftest import run_pipe

import dit_sparse


def steps_by_branch(records):
    seen = {}
    for r in records:
        seen.setdefault(r["branch"], []).append(r["step"])
    return {branch: sorted(set(steps)) for branch, steps in seen.items()}


def test_steps_counted_with_and_without_guidance(tiny_wan):
    with dit_sparse.attached(tiny_wan, "dense") as handle:
        run_pipe(tiny_wan, guidance=5.0, steps=3)
        assert steps_by_branch(handle.records()) == {"cond": [0, 1, 2], "uncond": [0, 1, 2]}
        handle.reset_stats()
        run_pipe(tiny_wan, guidance=1.0, steps=4)  # a new generation starts again at step 0
        assert steps_by_branch(handle.records()) == {"cond": [0, 1, 2, 3]}


def test_schedule_sees_num_steps_from_context(tiny_wan):
    # dense_steps=0.5 of 4 steps: steps 0 and 1 dense, 2 and 3 reach the method.
    seen = []

    class Spy(dit_sparse.Dense):
        def runs_dense(self, call):
            seen.append((call.step, call.num_steps, super(dit_sparse.Dense, self).runs_dense(call)))
            return True

    with dit_sparse.attached(tiny_wan, Spy(dense_steps=0.5)):
        run_pipe(tiny_wan, guidance=1.0, steps=4)
    per_step = {step: (n, dense) for step, n, dense in seen}
    assert per_step == {0: (4, True), 1: (4, True), 2: (4, False), 3: (4, False)}


def test_timestep_fallback_without_context(tiny_wan):
    transformer = tiny_wan.transformer
    latents = torch.randn(1, 16, 3, 4, 4)
    text = torch.randn(1, 5, 64)
    with dit_sparse.attached(transformer, "dense") as handle:
        for t in (900.0, 900.0, 500.0, 100.0):  # the same timestep twice: one step, two calls
            transformer(latents, torch.tensor([t]), text, return_dict=False)
        records = handle.records()
    assert steps_by_branch(records) == {"default": [0, 1, 2]}
    assert sum(r["step"] == 0 for r in records) == 2 * len(transformer.blocks)
