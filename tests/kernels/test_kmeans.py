"""The Triton k-means iteration (run by Triton's interpreter) against float64 torch."""

import pytest
import torch
from triton_interpreter import triton_interpreter  # noqa: F401 (selects the interpreter)

from dit_sparse.kernels import lloyd_step
from dit_sparse.kernels.kmeans import _INTERPRETER_ASSIGN, narrow_labels
from dit_sparse.kernels.reference import lloyd_step_reference

pytestmark = pytest.mark.usefixtures("triton_interpreter")


def float64_means(x, labels, centroids):
    """float64 means of the clusters ``labels`` gives; an empty cluster keeps its centroid."""
    sizes = torch.stack([torch.bincount(row, minlength=centroids.shape[1]) for row in labels])
    means = centroids.double().clone()
    for g in range(x.shape[0]):
        for c in range(centroids.shape[1]):
            if sizes[g, c]:
                means[g, c] = x[g][labels[g] == c].double().mean(0)
    return means, sizes


def float64_step(x, centroids):
    """Labels by float64 distances (ties to the lower index), then their float64 means."""
    labels = torch.cdist(x.double(), centroids.double()).argmin(-1)
    return labels, *float64_means(x, labels, centroids)


@pytest.mark.parametrize(
    ("groups", "seq_len", "clusters", "dim"),
    [
        (3, 150, 37, 16),  # ragged: neither tokens nor centroids fill their last tile
        (2, 64, 16, 64),  # whole tiles
        (1, 5, 40, 32),  # more centroids than vectors: most clusters empty
    ],
)
def test_lloyd_step_equals_float64(groups, seq_len, clusters, dim):
    g = torch.Generator().manual_seed(groups * 1000 + seq_len)
    centers = torch.randn(groups, 6, dim, generator=g) * 3
    pick = torch.randint(6, (groups, seq_len), generator=g)
    x = centers.gather(1, pick[..., None].expand(-1, -1, dim))
    x = x + torch.randn(groups, seq_len, dim, generator=g)
    centroids = torch.randn(groups, clusters, dim, generator=g)
    centroids[:, -1] = 1e3  # far from every vector: stays empty, keeps its centroid
    labels, means, sizes = lloyd_step(x, centroids)
    want_labels, want_means, want_sizes = float64_step(x, centroids)
    assert labels.dtype == sizes.dtype == torch.int64 and means.dtype == torch.float32
    assert torch.equal(labels, want_labels)
    assert torch.equal(sizes, want_sizes) and (sizes[:, -1] == 0).all()
    assert (means.double() - want_means).abs().max() < 1e-5
    assert (means[:, -1] == 1e3).all()
    ref_labels, ref_means, ref_sizes = lloyd_step_reference(x.double(), centroids)
    assert torch.equal(ref_labels, want_labels) and torch.equal(ref_sizes, want_sizes)
    assert (ref_means - want_means).abs().max() < 1e-12


def test_ties_go_to_the_lower_index_across_centroid_tiles():
    # Centroid 3 and the same point again past the first tile of centroids: equal distances.
    tile = _INTERPRETER_ASSIGN.block_n
    x = torch.randn(1, 40, 16, generator=torch.Generator().manual_seed(1))
    centroids = torch.full((1, tile + 8, 16), 50.0)
    centroids[0, 3] = centroids[0, tile + 2] = x[0, :20].mean(0)
    centroids[0, 5] = centroids[0, 6] = x[0, 20:].mean(0) + 0.5
    labels, _, sizes = lloyd_step(x, centroids)
    assert set(labels.unique().tolist()) <= {3, 5}
    assert sizes[0, tile + 2] == 0 and sizes[0, 6] == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_lloyd_step_in_half_precision_follows_float64(dtype):
    # Norms of ~1,000: squared centroid norms overflow fp16 (max 65,504); scores stay fp32.
    g = torch.Generator().manual_seed(13)
    x = (torch.randn(2, 300, 16, generator=g) * 250).to(dtype)
    centroids = x[:, :10].float() + torch.randn(2, 10, 16, generator=g)
    labels, means, sizes = lloyd_step(x, centroids)
    want_labels = float64_step(x.float(), centroids)[0]
    agree = (labels == want_labels).float().mean()
    assert agree > (0.97 if dtype == torch.float16 else 0.999)  # near ties may flip
    # The means and sizes are those of the kernel's own clusters.
    own_means, own_sizes = float64_means(x, labels, centroids)
    assert torch.isfinite(means).all() and torch.equal(sizes, own_sizes)
    assert ((means.double() - own_means).abs() / own_means.abs().clamp_min(1)).max() < 1e-5


def test_inputs_are_checked():
    x = torch.randn(2, 10, 16)
    with pytest.raises(ValueError, match="centroids"):
        lloyd_step(x, torch.randn(2, 3, 32))
    with pytest.raises(TypeError, match="float32"):
        lloyd_step(x, torch.randn(2, 3, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="D in"):
        lloyd_step(torch.randn(2, 10, 8), torch.randn(2, 3, 8))


@pytest.mark.parametrize(("clusters", "dtype"), [(1000, torch.int16), (32767, torch.int16),
                                                 (32768, torch.int32)])  # fmt: skip
def test_narrow_labels_sort_in_the_same_stable_order(clusters, dtype):
    labels = torch.randint(clusters, (3, 5000))
    labels[:, :50] = clusters - 1  # the largest id, and many ties
    keys = narrow_labels(labels, clusters)
    assert keys.dtype == dtype and torch.equal(keys.long(), labels)
    expected = torch.sort(labels, dim=-1, stable=True)
    got = torch.sort(keys, dim=-1, stable=True)
    assert torch.equal(got.indices, expected.indices)
    assert torch.equal(got.values.long(), expected.values)
