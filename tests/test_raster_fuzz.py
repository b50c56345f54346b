"""Rasterizer fuzzing on every available backend: NaN / Inf inputs, zero and huge scales, zero quaternions,
Gaussians on and behind the camera plane, huge colours, 1x1 and zero-size images, degenerate cameras.

The contract: a finite image and finite gradients for every input, or a ValueError that says what is wrong.
Where one Gaussian is broken ("culled" cases) it is dropped: the image is the one rendered without it, and its
gradients are zero. The PyTorch rasterizer and the per-stage reference always run; the CUDA extension and gsplat
need a GPU (and a build).
"""
import math

import pytest
import torch

from gaussian_renderer import cuda_extension, torch_rasterizer
from gaussian_renderer.cuda_package import reference
from tests.raster_helpers import look_at_settings, loss_weights, random_gaussians, render_with_grads

P = 24
NAN, INF = float("nan"), float("inf")


def _backend(name):
    if name == "torch":
        return torch_rasterizer, "cpu"
    if name == "reference":
        return _Reference, "cpu"
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if name == "cuda":
        dgr = cuda_extension()
        if not dgr:
            pytest.skip("the diff_gaussian_rasterization extension is not built")
        return dgr, "cuda"
    from gaussian_renderer import gsplat_backend  # noqa: PLC0415
    from utils.errors import UserError  # noqa: PLC0415
    try:
        gsplat_backend.load_gsplat()
    except UserError as exc:
        pytest.skip(str(exc))
    return gsplat_backend, "cuda"


class _Reference:  # the per-stage reference as a backend module
    GaussianRasterizer = reference.ReferenceRasterizer


# our three rasterizers; gsplat (--backend gsplat, a comparison backend) is not ours to fix and fails the table
# (measured on an H200: gsplat 1.5.3 renders NaN for a NaN mean, and an empty image killed the process with
# SIGFPE before the backend checked the size): test_gsplat_empty_image_is_a_value_error covers the latter
BACKENDS = ["torch", "reference", "cuda"]


def _scene(dev, sh_degree=1, **kw):
    s = look_at_settings(W=40, H=30, sh_degree=sh_degree, device=dev, **kw)
    g = random_gaussians(P, seed=3, sh_degree=sh_degree, device=dev)
    g["colors"] = torch.rand(P, 3, generator=torch.Generator().manual_seed(4)).to(dev)
    # the same Gaussians as a precomputed covariance (upper triangle of R S S^T R^T)
    cov = torch_rasterizer.covariance_3d(g["scales"], g["rotations"])
    g["cov3D"] = torch.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 0, 2], cov[:, 1, 1], cov[:, 1, 2], cov[:, 2, 2]], 1)
    return s, g


def _set(key, value, rows=0, cols=None):
    def edit(s, g):
        g = {k: v.clone() for k, v in g.items()}
        idx = (rows,) if cols is None else (rows, cols)
        g[key][idx] = value
        return s, g
    return edit


def _eye_z(offset, rows=0, scale=None):
    """Row(s) at view depth ``offset`` (the camera sits at z = -4 looking along +z)."""
    def edit(s, g):
        g = {k: v.clone() for k, v in g.items()}
        g["means3D"][rows, 2] = -4.0 + offset
        if scale is not None:
            g["scales"][rows] = scale
        return s, g
    return edit


def _settings(**kw):
    def edit(s, g):
        return s._replace(**kw), g
    return edit


def _size(W, H):
    def edit(s, g):
        return s._replace(image_width=W, image_height=H), g
    return edit


def _matrix(name, value):
    def edit(s, g):
        m = getattr(s, name).clone()
        m[0, 0] = value
        return s._replace(**{name: m}), g
    return edit


# (id, edit, expectation, options): "culled" = finite, and equal to the render without Gaussian 0; "finite";
# "finite_or_error" = finite, or a ValueError matching options["error"]
CASES = []
for key in ("means3D", "scales", "rotations", "opacities", "shs"):
    for v in (NAN, INF, -INF):
        CASES.append((f"{key}={v}", _set(key, v), "culled", {}))
for key in ("colors", "cov3D"):
    CASES.append((f"{key}=nan (precomputed)", _set(key, NAN), "culled", dict(precomp=True)))
CASES += [
    ("zero scale (one)", _set("scales", 0.0), "finite", {}),
    ("zero scales (all)", _set("scales", 0.0, slice(None)), "finite", {}),
    ("zero scales, antialiasing", _set("scales", 0.0, slice(None)), "finite", dict(aa=True)),
    ("one zero axis (flat Gaussians)", _set("scales", 0.0, slice(None), 2), "finite", {}),
    ("huge scale 1e10 (one)", _set("scales", 1e10), "finite", {}),
    ("huge scales 1e20 (all: the covariance overflows)", _set("scales", 1e20, slice(None)), "finite", {}),
    ("huge scale 3e38 (one)", _set("scales", 3e38), "culled", {}),
    ("huge precomputed covariance 3e38", _set("cov3D", 3e38), "culled", dict(precomp=True)),
    ("zero quaternion (one)", _set("rotations", 0.0), "finite", {}),
    ("zero quaternions (all)", _set("rotations", 0.0, slice(None)), "finite", dict(aa=True)),
    ("tiny quaternion 1e-30", _set("rotations", 1e-30), "finite", {}),
    ("huge quaternion 1e30", _set("rotations", 1e30), "finite", {}),
    ("on the camera plane", _eye_z(0.0), "culled", {}),
    ("all on the camera plane", _eye_z(0.0, slice(None)), "finite", {}),
    ("at the camera centre", _set("means3D", torch.tensor([0.0, 0.0, -4.0])), "culled", {}),
    ("behind the camera", _eye_z(-1.0), "culled", {}),
    ("all behind the camera", _eye_z(-3.0, slice(None), 1.0), "finite", {}),
    ("at the near plane", _eye_z(0.2), "culled", {}),
    ("just past the near plane, huge", _eye_z(0.2001, slice(None), 5.0), "finite", {}),
    ("far to the side 1e20", _set("means3D", 1e20, 0, 0), "culled", {}),
    ("very far away 1e30", _set("means3D", 1e30, 0, 2), "finite", {}),
    ("position 3e38 (overflows in the projection)", _set("means3D", 3e38, 0, 0), "culled", {}),
    ("huge SH 3e38 (one)", _set("shs", 3e38), "culled", {}),
    ("huge SH 1e37 (all)", _set("shs", 1e37, slice(None)), "finite", {}),
    ("huge colour 3e38 (precomputed)", _set("colors", 3e38), "culled", dict(precomp=True)),
    ("opacity 1e30", _set("opacities", 1e30, slice(None)), "finite", {}),
    ("negative opacity", _set("opacities", -5.0, slice(None)), "finite", {}),
    ("NaN everywhere in one Gaussian, with stats", _set("means3D", NAN), "culled", dict(stats=True)),
    ("no Gaussians", lambda s, g: (s, {k: v[:0] for k, v in g.items()}), "finite", {}),
    ("1x1 image", _size(1, 1), "finite", {}),
    ("1x7 image", _size(1, 7), "finite", {}),
    ("17x1 image", _size(17, 1), "finite", {}),
    ("0x0 image", _size(0, 0), "finite_or_error", dict(error="at least 1")),
    ("0x30 image", _size(0, 30), "finite_or_error", dict(error="at least 1")),
    ("40x0 image", _size(40, 0), "finite_or_error", dict(error="at least 1")),
    ("tanfovx 0", _settings(tanfovx=0.0), "finite_or_error", dict(error="tanfovx")),
    ("tanfovy inf", _settings(tanfovy=INF), "finite_or_error", dict(error="tanfovy")),
    ("NaN view matrix", _matrix("viewmatrix", NAN), "finite_or_error", dict(error="viewmatrix")),
    ("Inf projection matrix", _matrix("projmatrix", INF), "finite_or_error", dict(error="projmatrix")),
]


def _run(mod, s, g, opts, dev):
    if mod is not torch_rasterizer and hasattr(mod, "GaussianRasterizationSettings"):
        s = mod.GaussianRasterizationSettings(*s)
    keys = ("means3D", "opacities", "colors", "cov3D") if opts.get("precomp") else \
        ("means3D", "opacities", "shs", "scales", "rotations")
    w = loss_weights(s, seed=1, device=dev) if s.image_height > 0 and s.image_width > 0 else \
        (torch.zeros(3, s.image_height, s.image_width, device=dev), torch.zeros(1, s.image_height, s.image_width,
                                                                                  device=dev))
    return render_with_grads(mod.GaussianRasterizer, s, {k: g[k] for k in keys}, w, return_stats=opts.get("stats"),
                             use_precomp=opts.get("precomp", False))


def _check_finite(res, s):
    assert res["color"].shape == (3, s.image_height, s.image_width)
    assert torch.isfinite(res["color"]).all() and torch.isfinite(res["invdepth"]).all()
    for k, gr in res["grads"].items():
        assert gr is None or torch.isfinite(gr).all(), k
    for k, v in res.get("stats", {}).items():
        assert torch.isfinite(v).all(), k


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fuzz(backend, case):
    _, edit, expect, opts = case
    mod, dev = _backend(backend)
    if backend == "gsplat" and (opts.get("stats") or opts.get("precomp")):
        pytest.skip("gsplat's backend has no per-Gaussian stats or precomputed inputs")
    s, g = _scene(dev, antialiasing=opts.get("aa", False))
    s, g = edit(s, g)
    if expect == "finite_or_error":
        try:
            res = _run(mod, s, g, opts, dev)
        except ValueError as exc:
            assert opts["error"] in str(exc), str(exc)
            return
        _check_finite(res, s)
        return
    res = _run(mod, s, g, opts, dev)
    _check_finite(res, s)
    if expect == "culled":
        assert int(res["radii"][0]) == 0
        for k, gr in res["grads"].items():
            if gr is not None and k != "means2D":
                assert float(gr[0].abs().max()) == 0.0, k
        rest = _run(mod, s, {k: v[1:] for k, v in g.items()}, opts, dev)
        torch.testing.assert_close(res["color"], rest["color"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res["invdepth"], rest["invdepth"], atol=1e-5, rtol=1e-5)


def test_gsplat_empty_image_is_a_value_error():
    mod, dev = _backend("gsplat")
    s, g = _scene(dev)
    with pytest.raises(ValueError, match=r"0x30: both must be at least 1"):
        _run(mod, s._replace(image_width=0), g, {}, dev)


def test_torch_zero_size_image_is_a_value_error():
    s, g = _scene("cpu")
    with pytest.raises(ValueError, match=r"0x30: both must be at least 1"):
        _run(torch_rasterizer, s._replace(image_width=0), g, {}, "cpu")


def test_torch_huge_scales_no_longer_give_nan_gradients():
    # 1e20 scales: the 2D covariance overflows to inf; its row is culled, and computed again from zeros so
    # that the backward pass has no 0 * inf (it gave NaN gradients for every Gaussian's position and scale)
    s, g = _scene("cpu")
    g["scales"][:] = 1e20
    res = _run(torch_rasterizer, s, g, {}, "cpu")
    assert all(torch.isfinite(v).all() for v in res["grads"].values() if v is not None)
    assert (res["radii"] == 0).all()
    bg = s.bg[:, None, None].expand(3, s.image_height, s.image_width)
    torch.testing.assert_close(res["color"], bg)
    assert math.isfinite(float(res["color"].sum()))
