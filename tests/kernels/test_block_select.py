"""The Triton block-selection kernels (run by Triton's interpreter) against plain torch."""

import pytest
import torch
from triton_interpreter import triton_interpreter  # noqa: F401 (selects the interpreter)

from dit_sparse.kernels.block_select import kept_blocks_ascending, rank_key_blocks
from dit_sparse.kernels.reference import (
    kept_blocks_ascending_reference,
    rank_key_blocks_reference,
)

pytestmark = pytest.mark.usefixtures("triton_interpreter")


def generator():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def expected_ranking(mass, forced, limit):
    """Row by row in float64: forced blocks in index order, then the rest by descending mass,
    ties to the lower index; the prefix sums as shares of the row."""
    order = torch.empty(*mass.shape[:3], limit, dtype=torch.int64)
    cum = torch.empty(*mass.shape[:3], limit, dtype=torch.float64)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in mass.shape[:3])):
        row = mass[tuple(index)].double()
        rest = sorted(set(range(row.numel())) - set(forced), key=lambda j: (-row[j].item(), j))
        ranking = torch.tensor([*forced, *rest][:limit])
        order[tuple(index)] = ranking
        cum[tuple(index)] = (row[ranking] / row.sum()).cumsum(0)
    return order, cum


@pytest.mark.parametrize(
    "nk,forced,limit",
    [
        (37, range(0), 37),  # ragged (not a power of two), whole ranking
        (50, range(48, 50), 13),  # text at the end
        (64, range(0, 3), 20),  # text first
        (5, range(0, 5), 5),  # every block forced
    ],
)
def test_ranking_matches_a_row_by_row_sort(nk, forced, limit):
    g = generator()
    mass = torch.rand(2, 3, 4, nk, generator=g)
    # Exact ties and zeros: a tie goes to the lower index, as a stable sort gives.
    mass[0, 0, 0, 10 % nk] = mass[0, 0, 0, 3 % nk] = 0.5
    mass[1, 2, 3, : nk // 2] = 0.0
    order, cum = rank_key_blocks(mass, forced, limit)
    want_order, want_cum = expected_ranking(mass, forced, limit)
    assert order.dtype == torch.int64 and order.shape == (2, 3, 4, limit)
    assert torch.equal(order, want_order)
    assert (cum.double() - want_cum).abs().max() < 1e-5
    ref_order, ref_cum = rank_key_blocks_reference(mass, forced, limit)
    assert torch.equal(ref_order, want_order)
    assert (ref_cum.double() - want_cum).abs().max() < 1e-5


def test_ranking_of_rows_without_mass_keeps_index_order():
    order, cum = rank_key_blocks(torch.zeros(1, 1, 2, 9), range(0), 4)
    assert torch.equal(order, torch.arange(4).expand(1, 1, 2, 4))
    assert torch.equal(cum, torch.zeros(1, 1, 2, 4))


@pytest.mark.parametrize("nk,max_kv", [(40, 17), (64, 64), (9, 1)])
def test_kept_blocks_are_the_first_counts_of_the_ranking_ascending(nk, max_kv):
    g = generator()
    order = torch.rand(2, 3, 5, nk, generator=g).argsort(-1)[..., : max(max_kv, 3)]
    counts = torch.randint(1, max_kv + 1, (2, 3, 5), generator=g)
    counts[0, 0, 0] = max_kv
    kept = kept_blocks_ascending(order, counts, max_kv)
    assert kept.dtype == torch.int32 and kept.shape == (2, 3, 5, max_kv)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in counts.shape)):
        row, count = tuple(index), int(counts[tuple(index)])
        assert kept[row][:count].tolist() == sorted(order[row][:count].tolist())
        assert kept[row][count:].eq(0).all()
    assert torch.equal(kept_blocks_ascending_reference(order, counts, max_kv), kept)
    # Counts broadcast from one per head, as AdaSpa's hierarchical budget passes them.
    per_head = counts[..., :1].expand_as(counts)
    assert torch.equal(
        kept_blocks_ascending(order, per_head, max_kv),
        kept_blocks_ascending_reference(order, per_head, max_kv),
    )


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="limit"):
        rank_key_blocks(torch.rand(1, 1, 2, 8), range(0), 9)
    with pytest.raises(ValueError, match="fp32"):
        rank_key_blocks(torch.rand(1, 1, 2, 8).half(), range(0), 4)
    with pytest.raises(ValueError, match="max_kv"):
        kept_blocks_ascending(torch.zeros(1, 1, 2, 4, dtype=torch.int64), torch.ones(1, 1, 2), 5)
