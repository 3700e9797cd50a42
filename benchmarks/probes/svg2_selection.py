"""CPU probe: how SVG2's kept cluster pairs become blocks of our kernel, by block density and
the share of the exact attention the blocks hold (recall), on `attention_layer.py`'s
structured inputs (q = k; 4 heads at 13x20x32 = 8,320 tokens, clusters as large as Wan 720p's
defaults make them: 252 tokens a query cluster, 76 a key cluster).

    python benchmarks/probes/svg2_selection.py OUT.json

Per selection (``clusters``: every block holding a kept pair; ``blocks``: top-p over the
cluster estimate spread over blocks), key-cluster order (``order_key_clusters``), block size
and top-p: the plan's density, the kept cluster pairs' token density and the recall, from one
pair of clusterings (20 k-means iterations).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import torch.nn.functional as F
from attention_layer import HEAD_DIM, structured_qk

from dit_sparse.layout import TokenLayout
from dit_sparse.methods.svg2 import SparseVideoGen2
from dit_sparse.methods.svg2_clusters import initial_centroids, kmeans

LAYOUT, HEADS = TokenLayout(13, 20, 32), 4
SCALE = HEAD_DIM**-0.5


def recall(arranged, x: torch.Tensor, block: int) -> float:
    """Mean over rows of the exact attention's mass inside the plan's blocks."""
    seq_len = x.shape[1]
    mask = arranged.plan.to_block_mask()[0].double()
    blocks = -(-seq_len // block)
    total = 0.0
    for h in range(x.shape[0]):
        q = x[h][arranged.q_order.perm[h]].double()
        k = x[h][arranged.k_order.perm[h]].double()
        probs = torch.softmax(q @ k.T * SCALE, -1)
        pad = blocks * block - seq_len
        probs = F.pad(probs, (0, pad, 0, pad)).view(blocks, block, blocks, block).sum((1, 3))
        total += (probs * mask[h]).sum().item() / seq_len
    return total / x.shape[0]


def main() -> None:
    out = Path(sys.argv[1])
    x = structured_qk(LAYOUT, HEADS, torch.Generator().manual_seed(0), "cpu")[0]
    seq_len = LAYOUT.seq_len
    q_clusters, k_clusters = seq_len // 252, seq_len // 76
    generator = torch.Generator().manual_seed(1)
    q = kmeans(x, initial_centroids(x, q_clusters, generator), 20)
    k = kmeans(x, initial_centroids(x, k_clusters, generator), 20)
    rows = []
    for selection in ("clusters", "blocks"):
        for ordered in (False, True):
            for block in (128, 64):
                for top_p in (0.5, 0.7, 0.9, 0.95):
                    method = SparseVideoGen2(
                        top_p=top_p, selection=selection, block_size=block,
                        order_key_clusters=ordered,
                    )  # fmt: skip
                    arranged = method.arrange(q, k, 1, SCALE)
                    row = dict(
                        selection=selection,
                        order_key_clusters=ordered,
                        block=block,
                        top_p=top_p,
                        density=round(arranged.plan.density, 4),
                        cluster_density=round(arranged.cluster_density().mean().item(), 4),
                        recall=round(recall(arranged, x, block), 4),
                    )
                    print(row, flush=True)
                    rows.append(row)
    body = dict(layout=LAYOUT.describe(), heads=HEADS, q_clusters=q_clusters, k_clusters=k_clusters)
    out.write_text(json.dumps({**body, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
