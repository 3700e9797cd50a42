# ruff: noqa: E702, E731, UP031  (a one-off probe, kept as it was run)
"""At AdaSpa's fused first search (``warmup_lse=True``) on ``wan-shapes`` at the bench's
size (61 frames of 64x64; its first prompt; a CPU generator seeded 0), at 8 steps or the
number given,
the plan chosen with the warm-up step's LSE against the plan the step's own LSE gives, per
layer (cond branch first, then uncond): share of blocks that differ, coverage of each plan
under the true block mass, both plans' densities and the mean LSE shift between the two
steps. It stops after the first search. CPU, 1 to 3 minutes::

    python benchmarks/probes/stale_lse_plans.py [STEPS]
"""

import sys

import torch

import dit_sparse
from dit_sparse.kernels import block_attention_mass
from dit_sparse.methods import adaspa as adaspa_module
from dit_sparse.methods.adaspa import AdaSpa
from dit_sparse.pipelines.shapes import load_wan_shapes

pipe = load_wan_shapes()
method = AdaSpa(warmup_lse=True)
records = []
original = adaspa_module.dense_attention_with_mass


def patched(q, k, v, lse, bq, bk, scale=None):
    out, new_lse, mass = original(q, k, v, lse, bq, bk, scale=scale)
    own = block_attention_mass(q, k, new_lse, bq, bk, scale=scale)
    layout = current["layout"]
    plan_stale, _ = method._select(mass, layout, None)
    plan_own, cov_own = method._select(own, layout, None)
    ms, mo = plan_stale.to_block_mask(), plan_own.to_block_mask()
    differ = (ms != mo).float().sum() / mo.float().sum()
    # coverage of each plan under the own (true) mass, normalised per row
    norm = own / own.sum(-1, keepdim=True)
    cov_stale = (norm * ms).sum(-1).mean().item()
    cov_o = (norm * mo).sum(-1).mean().item()
    dens_s = ms.float().mean().item()
    dens_o = mo.float().mean().item()
    lse_shift = (new_lse - lse).abs().mean().item()
    records.append((differ.item(), cov_stale, cov_o, dens_s, dens_o, lse_shift))
    print("differ %.3f  cov stale %.4f own %.4f  density %.3f %.3f  |dlse| %.3f" % records[-1])
    if len(records) == 16:  # both branches of all 8 layers: the first search is done
        raise SystemExit(0)
    return out, new_lse, mass


adaspa_module.dense_attention_with_mass = patched
current = {}
orig_attend = AdaSpa.attend


def attend(self, q, k, v, call):
    current["layout"] = call.layout
    return orig_attend(self, q, k, v, call)


AdaSpa.attend = attend
dit_sparse.apply(pipe, method)
g = torch.Generator().manual_seed(0)
pipe(
    "a red circle moves left slowly over a striped background",
    num_frames=61,
    height=64,
    width=64,
    num_inference_steps=int(sys.argv[1]) if len(sys.argv) > 1 else 8,
    generator=g,
    output_type="np",
)
