"""Invariances of every rasterizer backend: the chunked PyTorch rasterizer, the per-stage reference and (with a GPU
and the build) the CUDA kernels.

* a Gaussian outside the view (behind the camera, before the near plane, far to the side) changes nothing: the
  image is bit-identical and the other Gaussians' gradients are unchanged;
* Gaussians that are culled, hidden behind saturated pixels or too transparent to pass alpha >= 1/255 get exactly
  zero gradient for every input;
* the same inputs twice give bit-identical images (and, without atomics, bit-identical gradients).
"""
import pytest
import torch

from gaussian_renderer import cuda_extension
from gaussian_renderer.cuda_package import reference
from gaussian_renderer.torch_rasterizer import GaussianRasterizer as TorchRasterizer
from tests.raster_helpers import look_at_settings, loss_weights, random_gaussians, render_with_grads

BACKENDS = ["torch", "reference", "cuda"]


def _backend(name):
    """(rasterizer class, device, whether gradients are bit-reproducible)."""
    if name == "torch":
        return TorchRasterizer, "cpu", True
    if name == "reference":
        return reference.ReferenceRasterizer, "cpu", True
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    dgr = cuda_extension()
    if not dgr:
        pytest.skip("the diff_gaussian_rasterization extension is not built")
    return dgr.GaussianRasterizer, "cuda", False  # the backward sums with atomics: order varies


def _render(name, s, g, seed=0):
    cls, dev, _ = _backend(name)
    if name == "cuda":
        s = cuda_extension().GaussianRasterizationSettings(*s)
    return render_with_grads(cls, s, g, loss_weights(s, seed, device=dev))


def _scene(dev, P=30):
    s = look_at_settings(W=40, H=32, sh_degree=1, device=dev)
    return s, random_gaussians(P, seed=7, sh_degree=1, spread=0.8, device=dev)


def _with_row(g, row, at):
    """g with one Gaussian (a dict of single rows) inserted at index ``at``."""
    return {k: torch.cat([v[:at], row[k].to(v), v[at:]]) for k, v in g.items()}


def _assert_zero_grads(res, rows, what):
    for k, gr in res["grads"].items():
        assert float(gr[rows].abs().max()) == 0.0, (what, k)


OUTSIDE = {"behind the camera": (0.0, 0.0, -6.0), "before the near plane": (0.0, 0.0, -3.9),
           "far to the side": (60.0, 0.0, 0.0), "far above": (0.0, -80.0, 1.0)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", list(OUTSIDE))
def test_gaussian_outside_the_view_changes_nothing(backend, where):
    _, dev, exact = _backend(backend)
    s, g = _scene(dev)
    extra = random_gaussians(1, seed=8, sh_degree=1, scale=(-1.5, -1.0), device=dev)
    extra["means3D"] = torch.tensor([OUTSIDE[where]], device=dev)
    at = 11
    base = _render(backend, s, g)
    res = _render(backend, s, _with_row(g, extra, at))
    assert int(res["radii"][at]) == 0
    assert torch.equal(res["color"], base["color"]) and torch.equal(res["invdepth"], base["invdepth"])
    _assert_zero_grads(res, at, where)
    others = torch.arange(g["means3D"].shape[0] + 1, device=dev) != at
    for k, gr in base["grads"].items():
        if exact:
            assert torch.equal(res["grads"][k][others], gr), k
        else:
            torch.testing.assert_close(res["grads"][k][others], gr, rtol=1e-5, atol=1e-7, msg=k)


def _occluded_scene(dev):
    """Three opaque, huge Gaussians in front of everything (alpha clamped at 0.99: the centre pixels stop after
    two), a small Gaussian behind them at the centre (hidden), one too faint to blend anywhere (transparent, in
    front), one behind the camera (culled), and ordinary ones around."""
    s, g = _scene(dev, P=12)
    g["means3D"][:, 2] += 1.0  # the ordinary ones behind the wall
    n = 6
    special = random_gaussians(n, seed=9, sh_degree=1, device=dev)
    special["means3D"] = torch.tensor([[0.0, 0.0, -2.0], [0.05, 0.0, -1.9], [0.0, 0.05, -1.8],  # the wall
                                       [0.0, 0.0, 1.0],  # hidden behind it
                                       [0.3, 0.2, -3.0],  # transparent
                                       [0.0, 0.0, -5.0]], device=dev)  # behind the camera
    special["scales"] = torch.tensor([[2.0, 2.0, 2.0]] * 3 + [[0.05, 0.05, 0.05], [0.3, 0.3, 0.3],
                                                                [0.2, 0.2, 0.2]], device=dev)
    special["opacities"] = torch.tensor([[0.999]] * 3 + [[0.9], [0.003], [0.9]], device=dev)
    return s, {k: torch.cat([special[k], v]) for k, v in g.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_hidden_transparent_and_culled_gaussians_get_zero_gradient(backend):
    _, dev, _ = _backend(backend)
    s, g = _occluded_scene(dev)
    res = _render(backend, s, g)
    radii = res["radii"].tolist()
    assert radii[3] > 0 and radii[4] > 0 and radii[5] == 0  # hidden and transparent are drawn, not culled
    for row, what in ((3, "hidden"), (4, "transparent"), (5, "culled")):
        _assert_zero_grads(res, row, what)
    assert float(res["grads"]["opacities"][:3].abs().min()) > 0  # the wall itself does get gradients
    # the hidden one changes no pixel: the image without it is the same
    without = _render(backend, s, {k: torch.cat([v[:3], v[4:]]) for k, v in g.items()})
    assert torch.equal(res["color"], without["color"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_inputs_give_bit_identical_images(backend):
    _, dev, exact = _backend(backend)
    s, g = _scene(dev, P=60)
    a, b = _render(backend, s, g, seed=2), _render(backend, s, g, seed=2)
    assert torch.equal(a["color"], b["color"]) and torch.equal(a["invdepth"], b["invdepth"])
    assert torch.equal(a["radii"], b["radii"])
    for k in a["grads"]:
        if exact:
            assert torch.equal(a["grads"][k], b["grads"][k]), k
        else:
            torch.testing.assert_close(a["grads"][k], b["grads"][k], rtol=1e-5, atol=1e-7, msg=k)
