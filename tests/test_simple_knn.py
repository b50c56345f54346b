"""simple_knn._C.distCUDA2 against an exact k-d tree (scipy cKDTree). Skipped without CUDA."""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _dist(points):
    from simple_knn._C import distCUDA2  # noqa: PLC0415 (only importable where it was built)

    return distCUDA2(torch.as_tensor(points, dtype=torch.float32, device="cuda")).cpu().numpy()


def _expected(points):
    """Mean squared distance to the min(3, N-1) nearest other points, in float64."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    p = np.asarray(points, dtype=np.float32).astype(np.float64)
    n = len(p)
    k = min(3, n - 1)
    if k == 0:
        return np.zeros(n)
    d, idx = cKDTree(p).query(p, k=k + 1)
    # drop the point itself (with duplicates it may not be column 0, but its distance 0 is then shared)
    d2 = d[:, 1:] ** 2
    return d2.mean(axis=1)


def _check(points, rtol=1e-5, atol=1e-12):
    got = _dist(points)
    exp = _expected(points)
    assert got.shape == exp.shape
    np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol)


@pytest.mark.parametrize("n", [4, 5, 33, 1000, 20000])
def test_uniform(n):
    rng = np.random.default_rng(n)
    _check(rng.uniform(-1, 1, size=(n, 3)).astype(np.float32))


def test_clustered_with_outliers_and_anisotropy():
    rng = np.random.default_rng(1)
    dense = rng.normal(0, 0.01, size=(30000, 3))
    planar = np.c_[rng.uniform(-5, 5, (20000, 2)), np.full(20000, 2.0)]
    line = np.c_[np.linspace(-100, 100, 5000), np.zeros(5000), np.zeros(5000)]
    outliers = rng.uniform(-1000, 1000, size=(200, 3))
    pts = np.concatenate([dense, planar, line, outliers]).astype(np.float32)
    rng.shuffle(pts)
    _check(pts)


def test_large_sfm_like():
    rng = np.random.default_rng(2)
    centers = rng.uniform(-20, 20, size=(300, 3))
    pts = (centers[rng.integers(0, 300, 300000)] + rng.normal(0, 0.3, size=(300000, 3))).astype(np.float32)
    _check(pts)


def test_duplicates():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, size=(500, 3)).astype(np.float32)
    pts = np.concatenate([base, base, base[:100], base[:10]])  # pairs, triples, quadruples
    got = _dist(pts)
    np.testing.assert_allclose(got, _expected(pts), rtol=1e-5, atol=1e-12)
    assert (got[:10] == 0).all()  # four copies: the 3 nearest others are at distance 0
    same = np.zeros((7, 3), dtype=np.float32)
    assert (_dist(same) == 0).all()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fewer_than_four_points(n):
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0]], dtype=np.float32)[:n]
    got = _dist(pts)
    np.testing.assert_allclose(got, _expected(pts), rtol=1e-6)
    if n == 3:
        np.testing.assert_allclose(got, [(1 + 4) / 2, (1 + 5) / 2, (4 + 5) / 2], rtol=1e-6)


def test_empty_and_output_format():
    from simple_knn._C import distCUDA2  # noqa: PLC0415

    out = distCUDA2(torch.zeros(0, 3, device="cuda"))
    assert out.shape == (0,)
    out = distCUDA2(torch.rand(100, 3, device="cuda"))
    assert out.dtype == torch.float32 and out.device.type == "cuda" and out.shape == (100,)
