"""GPU probe: SVG2 on the Triton kernel against references, bf16 at Wan 480p (12 heads,
32,760 tokens) on `attention_layer.py`'s structured inputs.

    python benchmarks/probes/svg2_gpu_checks.py OUT.json

Without a GPU it runs at `attention_layer.TINY_LAYOUTS` in fp32 (a check of the script).

Checks: with ``top_p=1`` (every block kept, tokens permuted) the output against cuDNN's dense
attention; at the default top-p the output against the same plan applied by the torch
reference (`block_sparse_attention_reference`, first two heads) on the permuted tensors, and against dense
attention (the sparsity's own error); the GPU plan against the one built on the CPU in fp32
from the same clusterings (blocks that differ).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from attention_layer import LAYOUTS, TINY_LAYOUTS, make_qkv

from dit_sparse import BlockPlan
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.kernels.reference import (
    block_sparse_attention_reference,
    permute_tokens,
    unpermute_tokens,
)
from dit_sparse.methods import AttentionCall
from dit_sparse.methods.svg2 import SparseVideoGen2
from dit_sparse.methods.svg2_clusters import KMeansResult


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main() -> None:
    out = Path(sys.argv[1])
    gpu = torch.cuda.is_available()
    layout, heads, _ = LAYOUTS["480p"] if gpu else TINY_LAYOUTS["tiny"]
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    q, k, v = make_qkv("structured", layout, heads, torch.device(device), dtype)
    dense = F.scaled_dot_product_attention(q, k, v)
    result = {}
    for top_p in (1.0, 0.9, 0.5):
        method = SparseVideoGen2(dense_steps=0, dense_layers=0, top_p=top_p)
        call = AttentionCall(layout, 1, 2, 0, 50, "cond", {})
        sparse = method.attend(q, k, v, call)
        entry = {"density": float(call.info["density"]), "vs_dense": relative(sparse, dense)}
        q_result, k_result, _ = method.cluster(q, k, call)
        arranged = method.arrange(q_result, k_result, 1, q.shape[-1] ** -0.5)
        q_perm = arranged.q_order.perm.view(1, heads, -1)
        k_perm = arranged.k_order.perm.view(1, heads, -1)
        qp, kp, vp = (permute_tokens(t, p) for t, p in ((q, q_perm), (k, k_perm), (v, k_perm)))
        kernel = unpermute_tokens(block_sparse_attention(qp, kp, vp, arranged.plan), q_perm)
        # The reference on the first two heads (fp32 scores of every head would not fit).
        plan = arranged.plan
        two = BlockPlan(
            plan.kv_indices[:, :2], plan.kv_counts[:, :2], plan.block_q, plan.block_k, plan.seq_len
        )
        reference = block_sparse_attention_reference(
            *(t[:, :2].float() for t in (qp, kp, vp)), two, q.shape[-1] ** -0.5
        )
        reference = unpermute_tokens(reference, q_perm[:, :2])
        entry["kernel_vs_reference_2_heads"] = relative(kernel[:, :2], reference)
        cpu = method.arrange(
            *(
                KMeansResult(r.labels.cpu(), r.centroids.cpu(), r.sizes.cpu())
                for r in (q_result, k_result)
            ),
            1,
            q.shape[-1] ** -0.5,
        )
        gpu_mask, cpu_mask = arranged.plan.to_block_mask().cpu(), cpu.plan.to_block_mask()
        entry["plan_blocks_differing_from_cpu"] = int((gpu_mask != cpu_mask).sum())
        entry["plan_blocks"] = gpu_mask.numel()
        result[str(top_p)] = entry
        print(top_p, entry, flush=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
