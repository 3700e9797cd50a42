"""Attention kernels over `BlockPlan`s (Triton on CUDA; torch references elsewhere)."""

from .block_mass import block_attention_mass
from .block_select import kept_blocks_ascending, rank_key_blocks
from .block_sparse_attention import block_sparse_attention
from .dense_with_lse import dense_attention_with_lse, dense_attention_with_mass
from .kmeans import lloyd_step
from .masked_rows import masked_row_errors
from .reference import block_sparse_attention_reference

__all__ = [
    "block_attention_mass",
    "block_sparse_attention",
    "block_sparse_attention_reference",
    "dense_attention_with_lse",
    "dense_attention_with_mass",
    "kept_blocks_ascending",
    "lloyd_step",
    "masked_row_errors",
    "rank_key_blocks",
]
