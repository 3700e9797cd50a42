"""Early stopping: a candidate's latents against dense's at the same steps, and the rule that
ends a generation whose latents have already drifted past a known failure.

Drift at step ``s`` is ``||x_s - d_s|| / ||d_s||``: the candidate's latents ``x_s`` after
denoising step ``s`` against dense's ``d_s`` from the same seed. The rule (`EarlyStopRule`):
on a prompt where some finished run missed the target's per-prompt floor with final drift
``D``, a candidate whose drift at any checkpoint already exceeds ``D`` is stopped there. It
rests on two assumptions, both recorded per candidate in the profile so they can be checked:
drift does not shrink over the remaining steps, and a run that ends further from dense
scores no better. Before any run on a prompt has failed, nothing is stopped there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Where drift is compared: these shares of the steps (rounded to a step index), and the last.
CHECKPOINTS = (0.25, 0.5, 0.75)


class StopGeneration(Exception):
    """Raised from a step callback to end a generation early (`EarlyStopRule` said so)."""

    def __init__(self, step: int, drift: float) -> None:
        super().__init__(f"stopped after step {step}: drift {drift:.4f}")
        self.step = step
        self.drift = drift


def checkpoint_steps(num_steps: int) -> list[int]:
    """The step indices (0-based, ascending, distinct) whose latents are compared: the
    `CHECKPOINTS` shares of ``num_steps`` and the last step."""
    steps = {min(num_steps - 1, max(0, round(share * num_steps) - 1)) for share in CHECKPOINTS}
    return sorted(steps | {num_steps - 1})


def relative_drift(latents: torch.Tensor, reference: torch.Tensor) -> float:
    """``||latents - reference|| / ||reference||`` over the whole tensor, in float64."""
    if latents.shape != reference.shape:
        raise ValueError(
            f"latents differ in shape: {tuple(latents.shape)} vs {tuple(reference.shape)}"
        )
    reference = reference.double()
    norm = reference.norm().item()
    return (latents.double() - reference).norm().item() / max(norm, 1e-12)


class EarlyStopRule:
    """Per prompt, the smallest final drift of a finished run that missed the per-prompt floor;
    a candidate drifting past it at a checkpoint is stopped (see the module docstring)."""

    def __init__(self) -> None:
        self._failed: dict[int, float] = {}

    def record_failure(self, prompt: int, final_drift: float) -> None:
        """A finished run on ``prompt`` missed the floor, ending ``final_drift`` from dense."""
        self._failed[prompt] = min(final_drift, self._failed.get(prompt, float("inf")))

    def bound(self, prompt: int) -> float | None:
        """The drift past which a run on ``prompt`` is stopped, or None (nothing failed yet)."""
        return self._failed.get(prompt)

    def should_stop(self, prompt: int, drift: float) -> bool:
        bound = self.bound(prompt)
        return bound is not None and drift > bound


def latent_recorder(
    steps: list[int],
    into: dict[int, torch.Tensor],
    reference: dict[int, torch.Tensor] | None = None,
    drifts: dict[int, float] | None = None,
    stop: Callable[[float], bool] | None = None,
) -> Callable[[int, torch.Tensor], None]:
    """A step callback for `dit_sparse.generation.generate`: at each of ``steps`` it keeps a
    CPU copy of the latents in ``into``; with a ``reference`` it also writes the drift from
    it into ``drifts`` and raises `StopGeneration` when ``stop(drift)`` says so."""

    def on_step(step: int, latents: torch.Tensor) -> None:
        if step not in steps:
            return
        into[step] = latents.detach().to("cpu", copy=True)
        if reference is None or drifts is None:
            return
        drift = relative_drift(into[step], reference[step])
        drifts[step] = drift
        if stop is not None and step != steps[-1] and stop(drift):
            raise StopGeneration(step, drift)

    return on_step
