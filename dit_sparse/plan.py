"""`BlockPlan`: the one structure between every sparse method and the attention kernel."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def num_blocks(seq_len: int, block: int) -> int:
    return -(-seq_len // block)


@dataclass(frozen=True)
class BlockPlan:
    """Which key blocks each query block attends to, per (batch, head).

    Like FlexAttention's ``BlockMask``: ``kv_indices[b, h, i, :kv_counts[b, h, i]]`` lists,
    in ascending order, the key blocks that query block ``i`` of head ``h`` attends to; the
    entries past ``kv_counts`` are padding and never read. A batch dimension of 1 broadcasts
    over the batch. The last block of a sequence may be ragged (``seq_len`` is not a multiple
    of the block size); its missing tokens are masked.

    ``perm`` (optional, int64 ``[B|1, H|1, S]``) says that the plan is written in a permuted
    token order: position ``p`` of head ``h`` holds original token ``perm[b, h, p]``. Sparse
    VideoGen uses it to make temporal heads block-dense. The output is always returned in the
    original order. ``permuted`` (optional, bool ``[B|1, H]``) says which heads use ``perm``;
    the others read their tokens in place (default: every head). One shared permutation
    (``perm`` ``[1, 1, S]``) and per-head flags then describe a mix of kinds without a
    ``[B, H, S]`` copy; `head_perms` gives each head's effective permutation.

    ``key_perm`` (optional, int ``[B|1, H|1, S]``, beside a ``perm``) gives keys and values an
    order of their own: key position ``p`` holds original token ``key_perm[b, h, p]``, while
    queries (and O, LSE) keep ``perm``. Sparse VideoGen 2 sorts queries and keys by different
    clusterings. Without it keys use ``perm``; ``permuted`` governs both; `head_key_perms`
    gives each head's effective key permutation.

    ``head_plans`` (optional, int ``[B|1, H]``) lets heads share a few plans: the plan tensors
    then hold ``P`` plans along their head dim (``kv_indices`` ``[1, P, nq, max_kv]``,
    ``perm`` and ``key_perm`` ``[1, P|1, S]``, ``permuted`` ``[1, P]``) and head ``(b, h)``
    runs plan ``head_plans[b, h]``; the kernel looks it up, so choosing plans per head costs
    no copy.
    Sparse VideoGen's two kinds are two such plans. `expanded` gives the per-head form.
    """

    kv_indices: torch.Tensor
    kv_counts: torch.Tensor
    block_q: int
    block_k: int
    seq_len: int
    perm: torch.Tensor | None = None
    permuted: torch.Tensor | None = None
    head_plans: torch.Tensor | None = None
    key_perm: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kv_indices.dim() != 4 or self.kv_counts.dim() != 3:
            raise ValueError(
                "BlockPlan expects kv_indices [B|1, H, nq, max_kv] and kv_counts [B|1, H, nq], "
                f"got {tuple(self.kv_indices.shape)} and {tuple(self.kv_counts.shape)}"
            )
        if self.kv_indices.shape[:3] != self.kv_counts.shape:
            raise ValueError("BlockPlan kv_indices and kv_counts disagree on [B, H, nq]")
        if self.kv_counts.shape[2] != self.num_q_blocks:
            raise ValueError(
                f"BlockPlan has {self.kv_counts.shape[2]} query blocks, but seq_len "
                f"{self.seq_len} with block_q {self.block_q} needs {self.num_q_blocks}"
            )
        plans = self.kv_counts.shape[1]  # per-head lists, or the shared ones of head_plans
        if self.perm is not None and (
            self.perm.dim() != 3
            or self.perm.shape[-1] != self.seq_len
            or self.perm.shape[1] not in (1, plans)
        ):
            raise ValueError(
                f"BlockPlan.perm must be [B|1, {plans}|1, {self.seq_len}], "
                f"got {tuple(self.perm.shape)}"
            )
        if self.key_perm is not None and (
            self.perm is None
            or self.key_perm.dim() != 3
            or self.key_perm.shape[-1] != self.seq_len
            or self.key_perm.shape[1] not in (1, plans)
        ):
            raise ValueError(
                f"BlockPlan.key_perm must be [B|1, {plans}|1, {self.seq_len}] beside a perm, "
                f"got {tuple(self.key_perm.shape)}"
                + ("" if self.perm is not None else " without a perm")
            )
        if self.permuted is not None and (
            self.perm is None
            or self.permuted.dtype != torch.bool
            or self.permuted.dim() != 2
            or self.permuted.shape[1] != plans
        ):
            raise ValueError(
                f"BlockPlan.permuted must be bool [B|1, {plans}] beside a perm, got "
                f"{self.permuted.dtype} {tuple(self.permuted.shape)}"
                + ("" if self.perm is not None else " without a perm")
            )
        if self.head_plans is not None:
            shared = [
                t
                for t in (self.kv_counts, self.perm, self.permuted, self.key_perm)
                if t is not None
            ]
            if (
                self.head_plans.dim() != 2
                or self.head_plans.dtype not in (torch.int32, torch.int64)
                or any(t.shape[0] != 1 for t in shared)
            ):
                raise ValueError(
                    "BlockPlan.head_plans must be int [B|1, H] over plans with a batch dim of "
                    f"1, got {self.head_plans.dtype} {tuple(self.head_plans.shape)} over "
                    f"{tuple(self.kv_counts.shape)}"
                )

    def expanded(self) -> BlockPlan:
        """This plan with per-head tensors (``head_plans`` resolved); itself without them."""
        if self.head_plans is None:
            return self
        index = self.head_plans.long()

        def per_head(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[0][index]

        def per_head_perm(t: torch.Tensor | None) -> torch.Tensor | None:
            # One permutation for every plan stays shared; one per plan is picked per head.
            return t if t is not None and t.shape[1] == 1 else per_head(t)

        return BlockPlan(
            per_head(self.kv_indices),
            per_head(self.kv_counts),
            self.block_q,
            self.block_k,
            self.seq_len,
            per_head_perm(self.perm),
            per_head(self.permuted),
            key_perm=per_head_perm(self.key_perm),
        )

    def head_perms(self) -> torch.Tensor | None:
        """int64 ``[B|1, H, S]``: each head's query permutation (the identity where
        ``permuted`` is False), or None without ``perm``."""
        if self.head_plans is not None:
            return self.expanded().head_perms()
        return self._where_permuted(self.perm)

    def head_key_perms(self) -> torch.Tensor | None:
        """int64 ``[B|1, H, S]``: each head's key and value permutation, ``key_perm`` or else
        ``perm`` (the identity where ``permuted`` is False), or None without ``perm``."""
        if self.head_plans is not None:
            return self.expanded().head_key_perms()
        return self._where_permuted(self.perm if self.key_perm is None else self.key_perm)

    def _where_permuted(self, perm: torch.Tensor | None) -> torch.Tensor | None:
        """``perm`` per head, the identity where ``permuted`` is False (per-head plans)."""
        if perm is None:
            return None
        perm = perm.long().expand(-1, self.heads, -1)
        if self.permuted is None:
            return perm
        identity = torch.arange(self.seq_len, device=perm.device)
        return torch.where(self.permuted[..., None], perm, identity)

    @property
    def batch(self) -> int:
        return (self.kv_counts if self.head_plans is None else self.head_plans).shape[0]

    @property
    def heads(self) -> int:
        return (self.kv_counts if self.head_plans is None else self.head_plans).shape[1]

    @property
    def num_q_blocks(self) -> int:
        return num_blocks(self.seq_len, self.block_q)

    @property
    def num_k_blocks(self) -> int:
        return num_blocks(self.seq_len, self.block_k)

    @property
    def max_kv(self) -> int:
        return self.kv_indices.shape[-1]

    @property
    def density(self) -> float:
        """Share of (query, key) token pairs computed, averaged over batch and heads."""
        return self.density_per_head().mean().item()

    def density_per_head(self) -> torch.Tensor:
        """fp32 ``[B|1, H]``: share of (query, key) token pairs each head computes."""
        if self.head_plans is not None:
            return self.expanded().density_per_head()
        q_sizes = _block_sizes(self.seq_len, self.block_q, self.kv_counts.device)
        k_sizes = _block_sizes(self.seq_len, self.block_k, self.kv_counts.device)
        # From the listed blocks ([.., max_kv]), not the [.., nk] mask: AdaSpa reports it at
        # every search step.
        slots = torch.arange(self.max_kv, device=self.kv_counts.device)
        listed = torch.where(slots < self.kv_counts[..., None], k_sizes[self.kv_indices.long()], 0)
        return (listed.sum(-1) * q_sizes).sum(-1) / float(self.seq_len) ** 2

    @staticmethod
    def from_block_mask(
        mask: torch.Tensor,
        block_q: int,
        block_k: int,
        seq_len: int,
        perm: torch.Tensor | None = None,
    ) -> BlockPlan:
        """Build a plan from ``bool[B|1, H, nq, nk]`` (or ``[nq, nk]``, one head, batch 1)."""
        if mask.dtype != torch.bool:
            raise TypeError(f"block mask must be bool, got {mask.dtype}")
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        nq, nk = num_blocks(seq_len, block_q), num_blocks(seq_len, block_k)
        if mask.shape[-2:] != (nq, nk):
            raise ValueError(
                f"block mask is {tuple(mask.shape[-2:])} blocks, seq_len {seq_len} with blocks "
                f"({block_q}, {block_k}) needs ({nq}, {nk})"
            )
        counts, order = _kept_blocks_first(mask)
        max_kv = max(int(counts.max().item()), 1)
        indices = order[..., :max_kv].contiguous()
        return BlockPlan(indices, counts, block_q, block_k, seq_len, perm)

    @staticmethod
    def dense(
        batch: int, heads: int, seq_len: int, block_q: int = 128, block_k: int = 128, device=None
    ) -> BlockPlan:
        """A plan in which every query block attends to every key block."""
        nq, nk = num_blocks(seq_len, block_q), num_blocks(seq_len, block_k)
        indices = torch.arange(nk, dtype=torch.int32, device=device).expand(batch, heads, nq, nk)
        counts = torch.full((batch, heads, nq), nk, dtype=torch.int32, device=device)
        return BlockPlan(indices.contiguous(), counts, block_q, block_k, seq_len)

    def to_block_mask(self) -> torch.Tensor:
        """``bool[B|1, H, nq, nk]``: True where a (query block, key block) pair is computed."""
        if self.head_plans is not None:
            return self.expanded().to_block_mask()
        slots = torch.arange(self.max_kv, device=self.kv_counts.device)
        valid = slots < self.kv_counts[..., None]
        # Padding slots land in a spare last column, which is dropped.
        index = torch.where(valid, self.kv_indices.long(), self.num_k_blocks)
        mask = torch.zeros(
            *self.kv_counts.shape, self.num_k_blocks + 1, dtype=torch.bool, device=valid.device
        )
        return mask.scatter_(-1, index, True)[..., : self.num_k_blocks]

    def to_flex_block_mask(self):
        """This plan as a FlexAttention ``BlockMask`` (for baseline benchmarks).

        Kept blocks are full blocks, except those of a ragged last key block: those are
        partial, so that the compiled kernel applies the ``mask_mod`` there, which drops keys
        past ``seq_len``. The ``mask_mod`` also encodes the blocks themselves, since eager
        FlexAttention reads only it. Plans with ``perm`` have no FlexAttention form (permute
        q, k, v first).
        """
        from torch.nn.attention.flex_attention import BlockMask

        if self.perm is not None:
            raise ValueError("a plan with perm has no BlockMask form; permute q, k, v first")
        if self.head_plans is not None:
            return self.expanded().to_flex_block_mask()
        mask = self.to_block_mask()
        partial = torch.zeros_like(mask)
        if self.seq_len % self.block_k:
            partial[..., -1] = mask[..., -1]
        seq_len, block_q, block_k = self.seq_len, self.block_q, self.block_k
        plan_batch, plan_heads = mask.shape[:2]

        def in_plan(b, h, q_idx, kv_idx):
            kept = mask[b % plan_batch, h % plan_heads, q_idx // block_q, kv_idx // block_k]
            return kept & (kv_idx < seq_len)

        return BlockMask.from_kv_blocks(
            *_kept_blocks_first(partial),
            *_kept_blocks_first(mask & ~partial),
            BLOCK_SIZE=(self.block_q, self.block_k),
            mask_mod=in_plan,
            seq_lengths=(seq_len, seq_len),
        )

    def to(self, device: torch.device | str) -> BlockPlan:
        perm, permuted, head_plans, key_perm = (
            None if t is None else t.to(device)
            for t in (self.perm, self.permuted, self.head_plans, self.key_perm)
        )
        return BlockPlan(
            self.kv_indices.to(device),
            self.kv_counts.to(device),
            self.block_q,
            self.block_k,
            self.seq_len,
            perm,
            permuted,
            head_plans,
            key_perm,
        )


def _block_sizes(seq_len: int, block: int, device) -> torch.Tensor:
    starts = torch.arange(0, seq_len, block, device=device)
    return (torch.clamp(starts + block, max=seq_len) - starts).float()


def _kept_blocks_first(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``bool[..., nk]``: int32 count of kept blocks, and int32 ``[..., nk]`` block
    indices with the kept ones first, in ascending order."""
    # A stable descending sort puts the kept key blocks first, in ascending order.
    order = torch.sort(mask.to(torch.int8), dim=-1, descending=True, stable=True).indices
    return mask.sum(-1, dtype=torch.int32).contiguous(), order.to(torch.int32)
