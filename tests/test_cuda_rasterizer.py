"""CUDA rasterizer (submodules/diff-gaussian-rasterization) against the PyTorch rasterizers.

Stage by stage: the preprocessing kernel's outputs (means2D, depths, conics, opacities, colours, radii) against
the per-stage reference (diff_gaussian_rasterization.reference, float64). End to end: images and gradients against
the reference and the chunked PyTorch rasterizer. Forward values agree to ~1e-5 relative, every gradient to ~1e-3
relative (norm-wise), radii exactly, stats to float tolerance. Skipped without CUDA.
"""
import numpy as np
import pytest
import torch

from gaussian_renderer.cuda_package import contract, reference
from gaussian_renderer.torch_rasterizer import GaussianRasterizer as TR
from tests.raster_helpers import (assert_close_up_to_atomics, atomics_noise, edge_case_gaussians, look_at_settings,
                                  loss_weights, random_gaussians, rel_err, render_with_grads, unproject)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"
FWD_RTOL = 1e-5
GRAD_RTOL = 1e-3


def _cuda_module():
    from gaussian_renderer import cuda_extension  # noqa: PLC0415
    dgr = cuda_extension()
    if not dgr:
        pytest.skip("the diff_gaussian_rasterization extension is not built")
    return dgr


def _settings(**kw):
    return look_at_settings(device=DEV, **kw)


def _to_cuda_settings(s):
    dgr = _cuda_module()
    return dgr.GaussianRasterizationSettings(*s)


def _compare(s, g, seed=0, use_precomp=False, color=True, depth=True, grad_rtol=GRAD_RTOL, split_sh=False,
             against="torch"):
    """CUDA against the chunked PyTorch rasterizer (float32, same device) or, against="reference", the per-stage
    reference in float64."""
    dgr = _cuda_module()
    w = loss_weights(s, seed, color, depth, DEV)
    if against == "reference":
        ref = render_with_grads(reference.ReferenceRasterizer, s, {k: v.double() for k, v in g.items()}, w,
                                use_precomp=use_precomp)
    else:
        ref = render_with_grads(TR, s, g, w, use_precomp=use_precomp)
    cud = render_with_grads(dgr.GaussianRasterizer, _to_cuda_settings(s), g, w, use_precomp=use_precomp,
                            split_sh=split_sh)
    assert torch.equal(cud["radii"].long().cpu(), ref["radii"].long().cpu())
    assert torch.isfinite(cud["color"]).all() and torch.isfinite(cud["invdepth"]).all()
    assert rel_err(cud["color"], ref["color"]) < FWD_RTOL
    if ref["invdepth"].abs().sum() > 0:
        assert rel_err(cud["invdepth"], ref["invdepth"]) < FWD_RTOL
    _assert_grads_match(cud["grads"], ref["grads"], grad_rtol)
    return ref, cud


def _assert_grads_match(got, ref, grad_rtol=GRAD_RTOL):
    """Each of `ref`'s gradients in `got`: finite, of its shape, grad_rtol relative (norm-wise), ~0 where it is 0."""
    for k, gr in ref.items():
        gc = got[k]
        assert gc is not None, k
        assert gc.shape == gr.shape, k
        assert torch.isfinite(gc).all(), k
        if gr.abs().sum() == 0:
            assert gc.abs().max() < 1e-6, k
        else:
            assert rel_err(gc, gr) < grad_rtol, (k, rel_err(gc, gr))


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
@pytest.mark.parametrize("antialiasing", [False, True])
def test_random_scene_matches_reference(sh_degree, antialiasing):
    s = _settings(W=83, H=61, sh_degree=sh_degree, antialiasing=antialiasing)
    g = random_gaussians(300, seed=sh_degree + 10 * antialiasing, sh_degree=sh_degree, device=DEV)
    _compare(s, g, seed=sh_degree)


@pytest.mark.parametrize("sh_degree", [0, 1, 2])
def test_active_degree_below_stored_coefficients(sh_degree):
    # training keeps 16 coefficients per Gaussian and raises the active degree over time
    s = _settings(W=72, H=56, sh_degree=sh_degree)
    g = random_gaussians(257, seed=20 + sh_degree, sh_degree=3, device=DEV)
    ref, cud = _compare(s, g, seed=20)
    hi = cud["grads"]["shs"][:, (sh_degree + 1) ** 2:]
    assert hi.abs().max() == 0


@pytest.mark.parametrize("sh_degree", [1, 3])
def test_sh_in_two_parts_and_quaternions_of_any_norm(sh_degree):
    """render()'s form: SH as (DC, higher bands), read in place by the kernels for 16 coefficients and
    concatenated otherwise, and raw quaternions (normalised inside): the reference's image and gradients."""
    s = _settings(W=70, H=50, sh_degree=sh_degree)
    g = random_gaussians(400, seed=5, sh_degree=sh_degree, device=DEV)
    g["rotations"] = g["rotations"] * torch.linspace(0.3, 3.0, 400, device=DEV)[:, None]
    _compare(s, g, split_sh=True)


def test_means2d_with_two_columns():
    dgr = _cuda_module()
    s = _settings(W=40, H=40)
    g = random_gaussians(80, seed=21, device=DEV)
    outs = []
    for cols in (2, 3):
        m2 = torch.zeros(80, cols, device=DEV, requires_grad=True)
        color, _, _ = dgr.GaussianRasterizer(_to_cuda_settings(s))(
            g["means3D"], m2, g["opacities"], shs=g["shs"], scales=g["scales"], rotations=g["rotations"])
        color.sum().backward()
        assert m2.grad.shape == (80, cols)
        outs.append(m2.grad[:, :2])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)  # atomics: order may differ


def test_wide_scene_with_clamped_jacobian():
    # spread beyond the view: many Gaussians project outside 1.3 tan(fov), large ones still reach the image
    s = _settings(W=64, H=48, sh_degree=3)
    g = random_gaussians(400, seed=3, sh_degree=3, spread=4.0, scale=(-2.0, -0.5), device=DEV)
    _compare(s, g, seed=3)


def test_depth_only_and_color_only_losses():
    s = _settings(W=48, H=40, sh_degree=1)
    g = random_gaussians(150, seed=4, sh_degree=1, device=DEV)
    _compare(s, g, seed=4, color=False)
    _compare(s, g, seed=5, depth=False)


def test_precomputed_colors_and_covariances():
    s = _settings(W=70, H=50)
    g = random_gaussians(200, seed=6, device=DEV)
    from gaussian_renderer.torch_rasterizer import covariance_3d

    cov = covariance_3d(g["scales"], g["rotations"])
    idx = torch.tensor([0, 0, 0, 1, 1, 2], device=DEV), torch.tensor([0, 1, 2, 1, 2, 2], device=DEV)
    g2 = dict(means3D=g["means3D"], opacities=g["opacities"], cov3D=cov[:, idx[0], idx[1]].contiguous(),
              colors=torch.rand(200, 3, device=DEV))
    _compare(s, g2, seed=6, use_precomp=True)


def test_tile_borders():
    s = _settings(W=64, H=48)
    xs = np.array([15.0, 15.5, 16.0, 16.49, 31.99, 32.0, 47.5, 0.0, 63.0, -0.5, 64.2])
    ys = np.array([15.5, 16.0, 31.5, 32.0, 0.0, 47.0, 8.0, 47.9, 16.0, 20.0, 24.0])
    n = len(xs)
    g = random_gaussians(n, seed=7, scale=(-5.0, -3.5), device=DEV)
    g["means3D"] = unproject(s, xs, ys, np.linspace(3.0, 5.0, n), device=DEV)
    g["opacities"] = torch.full((n, 1), 0.9, device=DEV)
    _compare(s, g, seed=7)


def test_behind_camera_large_small_and_crowded():
    s = _settings(W=64, H=64, sh_degree=2)
    g = random_gaussians(600, seed=8, sh_degree=2, spread=0.05, scale=(-4.0, -2.0), device=DEV)
    g["opacities"] = torch.full((600, 1), 0.3, device=DEV)  # hundreds per pixel: T reaches 1e-4
    extra = random_gaussians(6, seed=9, sh_degree=2, device=DEV)
    extra["means3D"] = torch.tensor([[0.0, 0.0, -4.5], [0.3, 0.1, -4.1], [0.0, 0.0, -3.85],  # behind / at near
                                     [0.0, 0.0, 0.5], [0.2, -0.2, 0.0], [0.1, 0.1, 1.0]], device=DEV)
    extra["scales"] = torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.1, 0.1, 0.1],
                                    [3.0, 2.0, 0.5], [1e-6, 1e-6, 1e-6], [1e-4, 2e-4, 1e-4]], device=DEV)
    for k in g:
        g[k] = torch.cat([g[k], extra[k]])
    ref, cud = _compare(s, g, seed=8)
    assert (cud["radii"][600:603] == 0).all()


def test_degenerate_inputs_never_give_nan():
    dgr = _cuda_module()
    s = _settings(W=48, H=32, sh_degree=1, antialiasing=True)
    g = random_gaussians(40, seed=11, sh_degree=1, device=DEV)
    g["rotations"][0] = 0.0                      # zero quaternion -> identity
    g["scales"][1] = 0.0                         # zero scales -> dilation only
    g["scales"][2, 0] = 0.0                      # flat
    g["means3D"][3] = float("nan")
    g["means3D"][4, 1] = float("inf")
    g["means3D"][5, 2] = -float("inf")
    g["opacities"][6] = 0.0
    g["shs"][7, 0, 1] = float("nan")
    ref, cud = _compare(s, g, seed=11)
    assert (cud["radii"][3:6] == 0).all() and cud["radii"][7] == 0
    for v in cud["grads"].values():
        assert torch.isfinite(v).all()
    del dgr


@pytest.mark.parametrize("antialiasing", [False, True])
@pytest.mark.parametrize("fwd_chunks", ["1", "3"])
def test_stats_match_reference(monkeypatch, antialiasing, fwd_chunks):
    """accum_weights, area_proj and area_max, by the one-block forward and by depth chunks (DGR_FWD_CHUNKS: the
    chunk a pixel stops in finds its stop with the exact T in front, so the stats do not change)."""
    monkeypatch.setenv("DGR_FWD_CHUNKS", fwd_chunks)
    dgr = _cuda_module()
    s = _settings(W=80, H=64, sh_degree=1, antialiasing=antialiasing)
    g = random_gaussians(500, seed=12, sh_degree=1, device=DEV)
    w = loss_weights(s, 12, device=DEV)
    every = contract.STAT_NAMES + contract.PIXEL_STAT_NAMES
    ref = render_with_grads(TR, s, g, w, return_stats=every)
    cud = render_with_grads(dgr.GaussianRasterizer, _to_cuda_settings(s), g, w, return_stats=every)
    rs, cs = ref["stats"], cud["stats"]
    assert set(cs) == set(every)
    mc, rmc = cs.pop("max_contributor"), rs["max_contributor"].to(DEV)
    for k in cs:
        assert cs[k].shape == (500,) and cs[k].dtype == torch.float32 and not cs[k].requires_grad
    # each pixel's strongest contributor: the one area_max counts it for; near-ties of alpha T aside, the reference's
    assert mc.shape == (64, 80) and mc.dtype == torch.int64 and (mc >= 0).any() and (mc == -1).any()
    assert torch.equal(torch.bincount(mc[mc >= 0], minlength=500).float(), cs["area_max"])
    assert torch.equal(mc == -1, rmc == -1) and (mc != rmc).float().mean() < 0.01
    # sums of alpha*T over many pixels: float accumulation order differs (atomics vs index_add)
    assert rel_err(cs["accum_weights"], rs["accum_weights"]) < 1e-4
    assert (cs["area_proj"] - rs["area_proj"]).abs().sum() <= 2
    # the pixel count is exact; only near-ties of alpha*T may pick another Gaussian
    assert cs["area_max"].sum() == rs["area_max"].sum()
    assert (cs["area_max"] - rs["area_max"]).abs().sum() <= 0.01 * rs["area_max"].sum() + 2


@pytest.mark.parametrize("fwd_chunks", ["1", "3"])
def test_area_max_only_mode_matches_full_stats(monkeypatch, fwd_chunks):
    monkeypatch.setenv("DGR_FWD_CHUNKS", fwd_chunks)  # (the depth-chunked forward's area_max mode too)
    dgr = _cuda_module()
    s = _to_cuda_settings(_settings(W=80, H=64, sh_degree=1))
    g = random_gaussians(500, seed=14, sh_degree=1, device=DEV)
    kw = dict(shs=g["shs"], scales=g["scales"], rotations=g["rotations"])
    r = dgr.GaussianRasterizer(s)
    c_full, _, d_full, full = r(g["means3D"], torch.zeros_like(g["means3D"]), g["opacities"], **kw,
                                return_stats=True)
    c, _, d, only = r(g["means3D"], torch.zeros_like(g["means3D"]), g["opacities"], **kw,
                      return_stats=("area_max",))
    assert list(only) == ["area_max"] and full["area_max"].sum() > 0
    assert torch.equal(only["area_max"], full["area_max"])  # same per-pixel winners, integer counts
    assert torch.equal(c, c_full) and torch.equal(d, d_full)
    pix = r(g["means3D"], torch.zeros_like(g["means3D"]), g["opacities"], **kw,
            return_stats=("max_contributor",))[3]  # (the area_max mode too)
    with_all = r(g["means3D"], torch.zeros_like(g["means3D"]), g["opacities"], **kw,
                 return_stats=contract.STAT_NAMES + contract.PIXEL_STAT_NAMES)[3]
    assert list(pix) == ["max_contributor"] and torch.equal(pix["max_contributor"], with_all["max_contributor"])
    with pytest.raises(ValueError, match="area_mx"):
        r(g["means3D"], torch.zeros_like(g["means3D"]), g["opacities"], **kw, return_stats=("area_mx",))


def test_no_stats_unless_asked_and_mark_visible():
    dgr = _cuda_module()
    s = _settings(W=32, H=32)
    g = random_gaussians(50, seed=13, device=DEV)
    g["means3D"][:5] = torch.tensor([0.0, 0.0, -5.0], device=DEV)  # behind the camera at z=-4
    cs = _to_cuda_settings(s)
    r = dgr.GaussianRasterizer(cs)
    out = r(g["means3D"], torch.zeros_like(g["means3D"]), g["opacities"], shs=g["shs"], scales=g["scales"],
            rotations=g["rotations"])
    assert len(out) == 3
    assert out[0].shape == (3, 32, 32) and out[1].dtype == torch.int32 and out[2].shape == (1, 32, 32)
    vis = r.markVisible(g["means3D"])
    assert vis.dtype == torch.bool
    assert torch.equal(vis.cpu(), TR(s).markVisible(g["means3D"]).cpu())
    assert not vis[:5].any()


def test_empty_and_fully_culled():
    dgr = _cuda_module()
    s = _settings(W=40, H=30)
    r = dgr.GaussianRasterizer(_to_cuda_settings(s))
    e = torch.zeros(0, 3, device=DEV, requires_grad=True)
    color, radii, invd = r(e, torch.zeros(0, 3, device=DEV), torch.zeros(0, 1, device=DEV),
                           shs=torch.zeros(0, 1, 3, device=DEV), scales=torch.zeros(0, 3, device=DEV),
                           rotations=torch.zeros(0, 4, device=DEV))
    assert torch.allclose(color, s.bg[:, None, None].expand(3, 30, 40))
    assert radii.numel() == 0 and invd.abs().max() == 0
    g = random_gaussians(10, seed=14, device=DEV)
    g["means3D"] = g["means3D"] + torch.tensor([0.0, 0.0, -10.0], device=DEV)  # all behind
    _compare(s, g, seed=14)


def test_means2d_gradient_is_ndc_scaled():
    """means2D.grad is dL/d(ndc): the pixel gradient times (W/2, H/2), as the reference defines it."""
    s = _settings(W=64, H=32)
    g = random_gaussians(60, seed=15, device=DEV)
    ref, cud = _compare(s, g, seed=15)
    gm = cud["grads"]["means2D"]
    assert gm[:, 2].abs().max() == 0
    assert gm[:, :2].abs().sum() > 0


def test_matches_reference_at_larger_size():
    s = _settings(W=256, H=192, sh_degree=3, antialiasing=True)
    g = random_gaussians(5000, seed=16, sh_degree=3, spread=1.5, scale=(-4.0, -2.0), device=DEV)
    _compare(s, g, seed=16)


def test_strided_upstream_gradients():
    """Expanded (stride 0) and permuted output gradients are read in place and give the reference grads."""
    dgr = _cuda_module()
    s = _settings(W=56, H=40, sh_degree=1)
    g = random_gaussians(120, seed=22, sh_degree=1, device=DEV)
    w = torch.rand(40, 56, 3, device=DEV)
    res = []
    for cls, st in ((TR, s), (dgr.GaussianRasterizer, _to_cuda_settings(s))):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in g.items()}
        m2 = torch.zeros(120, 3, device=DEV, requires_grad=True)
        color, _, invd = cls(raster_settings=st)(leaves["means3D"], m2, leaves["opacities"], shs=leaves["shs"],
                                                 scales=leaves["scales"], rotations=leaves["rotations"])
        loss = (color.permute(1, 2, 0) * w).sum() + invd.sum()  # permuted colour grad, expanded depth grad
        loss.backward()
        res.append({k: v.grad for k, v in leaves.items()})
    for k in res[0]:
        assert rel_err(res[1][k], res[0][k]) < GRAD_RTOL, k


@pytest.mark.parametrize("chunks", ["1", "2", "3", "8", "auto"])
def test_backward_in_depth_chunks_matches_the_torch_rasterizer(monkeypatch, chunks):
    """DGR_BWD_CHUNKS (the render backward's depth chunks; auto, the default, picks 1-8 by the tile count): each chunk
    rebuilds the transmittance and colour behind it. Pixels that blend all of a 600-deep list (chunk bounds inside
    every pixel's list), pixels that stop at T = 1e-4 within the first chunk, and a larger random scene."""
    monkeypatch.setenv("DGR_BWD_CHUNKS", chunks)
    s = _settings(W=48, H=40, sh_degree=1)
    g = random_gaussians(600, seed=30, sh_degree=1, spread=0.08, scale=(-3.0, -1.5), device=DEV)
    g["opacities"] = torch.rand(600, 1, generator=torch.Generator().manual_seed(30)).to(DEV) * 0.02 + 0.005
    _compare(s, g, seed=30)
    g["opacities"] = torch.full((600, 1), 0.3, device=DEV)  # T reaches 1e-4 after ~26 of them
    _compare(s, g, seed=31)
    s = _settings(W=256, H=192, sh_degree=3, antialiasing=True)
    g = random_gaussians(5000, seed=16, sh_degree=3, spread=1.5, scale=(-4.0, -2.0), device=DEV)
    _compare(s, g, seed=16)


def _cull_scenes():
    """(seed, settings, Gaussians) for the warp culling's tests: small and elongated rotated Gaussians (most miss most
    8x4 pixel blocks of their tiles), opacities just above 1/255 (ellipses of almost no area, whose pixels sit at the
    alpha test's threshold), and a 600-deep list of large faint ones (no block culled: the lists' depth chunks)."""
    gen = torch.Generator().manual_seed(40)
    s = _settings(W=96, H=72, sh_degree=1)
    g = random_gaussians(2500, seed=40, sh_degree=1, spread=1.2, scale=(-5.0, -3.5), device=DEV)
    stretch = torch.rand(2500, generator=gen) < 0.3  # 30% needles: one axis 20x the others
    g["scales"][stretch.to(DEV), 0] *= 20.0
    faint = torch.rand(2500, generator=gen) < 0.2
    g["opacities"][faint.to(DEV)] = (torch.rand(int(faint.sum()), 1, generator=gen) * 0.0004 + 0.00395).to(DEV)
    deep = random_gaussians(600, seed=41, sh_degree=1, spread=0.08, scale=(-3.0, -1.5), device=DEV)
    deep["opacities"] = torch.rand(600, 1, generator=gen).to(DEV) * 0.02 + 0.005
    return [(40, s, g), (41, s, deep)]


def _runs_by_flag(monkeypatch, flag):
    """For each of _cull_scenes, the CUDA render with its gradients and stats: twice with the environment `flag` off,
    once on. Leaves it on."""
    dgr = _cuda_module()
    for seed, s, scene in _cull_scenes():
        w = loss_weights(s, seed, True, True, DEV)
        runs = []
        for value in ("off", "off", "on"):
            monkeypatch.setenv(flag, value)
            runs.append(render_with_grads(dgr.GaussianRasterizer, _to_cuda_settings(s), scene, w, return_stats=True))
        yield runs


def _assert_the_same_render(base, again, other):
    """`other` renders what `base` does: image, inverse depth, radii and the area stats bit for bit, the accumulated
    weights and the gradients up to the atomics' float order (their noise: `base` against `again`, the same run)."""
    for k in ("color", "invdepth", "radii"):
        assert torch.equal(other[k], base[k]), k
    for k in ("area_proj", "area_max"):
        assert torch.equal(other["stats"][k], base["stats"][k]), k
    weights = [{"accum_weights": r["stats"]["accum_weights"]} for r in (base, again, other)]
    assert_close_up_to_atomics(weights[0], weights[2], atomics_noise(weights[0], weights[1]))
    assert_close_up_to_atomics(base["grads"], other["grads"], atomics_noise(base["grads"], again["grads"]))


@pytest.mark.parametrize("chunks", ["1", "3"])
def test_backward_warp_culling_matches_the_full_walk(monkeypatch, chunks):
    """DGR_BWD_CULL=on: each warp of the render backward walks only the staged Gaussians whose alpha ellipse may reach
    its 8x4 pixels. The skipped ones are those no pixel of the warp blends, so the gradients are the full walk's and
    the torch rasterizer's; in depth chunks the walk behind a chunk is culled too."""
    monkeypatch.setenv("DGR_BWD_CHUNKS", chunks)
    for full, again, culled in _runs_by_flag(monkeypatch, "DGR_BWD_CULL"):
        assert_close_up_to_atomics(full["grads"], culled["grads"], atomics_noise(full["grads"], again["grads"]))
    seed, s, deep = _cull_scenes()[-1]
    _compare(s, deep, seed=seed)  # (DGR_BWD_CULL=on) and the torch rasterizer's


def _grads_under(monkeypatch, s, g, loss_w):
    """The CUDA render's gradients (render_with_grads's, under the loss weights loss_w; None: that output out of the
    loss), and the colour and inverse-depth gradients its backward handed the extension."""
    dgr = _cuda_module()
    extension = dgr.extension
    real = extension()
    handed = []

    class Spy:  # the extension, keeping the output gradients rasterize_backward gets
        def __getattr__(self, name):
            return getattr(real, name)

        def rasterize_backward(self, *args):
            handed.append((args[12], args[13]))
            return real.rasterize_backward(*args)

    monkeypatch.setattr(dgr, "extension", lambda: Spy())
    try:
        grads = render_with_grads(dgr.GaussianRasterizer, _to_cuda_settings(s), g, loss_w)["grads"]
    finally:
        monkeypatch.setattr(dgr, "extension", extension)
    assert len(handed) == 1
    return grads, handed[0]


@pytest.mark.parametrize("cull", ["on", "off"])
@pytest.mark.parametrize("chunks", ["1", "3"])
def test_backward_without_a_depth_gradient(monkeypatch, chunks, cull):
    """Training without depth maps leaves the inverse depth out of the loss: autograd then hands the backward no
    gradient for it (set_materialize_grads(False)), the extension gets an empty one and the render backward skips the
    depth terms (its DEPTH false). A colour-only loss gives the gradients of the same loss + 0 x invdepth (the depth
    terms with a zero gradient: the same arithmetic, up to the atomics' order) and the torch rasterizer's; a loss on the
    inverse depth alone (no colour gradient: zeros in its place) the torch rasterizer's. A 600-deep list of faint
    Gaussians (with DGR_BWD_CHUNKS=3 every pixel's list crosses the chunk bounds: the walk behind a chunk sums colour
    only) and a random scene, with the warp culling (DGR_BWD_CULL) on and off."""
    monkeypatch.setenv("DGR_BWD_CHUNKS", chunks)
    monkeypatch.setenv("DGR_BWD_CULL", cull)
    deep = random_gaussians(600, seed=30, sh_degree=1, spread=0.08, scale=(-3.0, -1.5), device=DEV)
    deep["opacities"] = torch.rand(600, 1, generator=torch.Generator().manual_seed(30)).to(DEV) * 0.02 + 0.005
    scenes = [(30, _settings(W=48, H=40, sh_degree=1), deep),
              (34, _settings(W=83, H=61, sh_degree=2, antialiasing=True),
               random_gaussians(300, seed=34, sh_degree=2, device=DEV))]
    for seed, s, g in scenes:
        wc, wd = loss_weights(s, seed, device=DEV)
        no_depth, (gc, gd) = _grads_under(monkeypatch, s, g, (wc, None))
        assert gd.numel() == 0 and torch.equal(gc, wc)  # (the no-depth path)
        again, _ = _grads_under(monkeypatch, s, g, (wc, None))
        zero_depth, (_, gd) = _grads_under(monkeypatch, s, g, (wc, torch.zeros_like(wd)))
        assert gd.shape == (1, s.image_height, s.image_width) and not gd.any()  # (the depth terms, gradient 0)
        assert_close_up_to_atomics(no_depth, zero_depth, atomics_noise(no_depth, again))
        _assert_grads_match(no_depth, render_with_grads(TR, s, g, (wc, torch.zeros_like(wd)))["grads"])
        depth_only, (gc, gd) = _grads_under(monkeypatch, s, g, (None, wd))
        assert not gc.any() and gc.shape == (3, s.image_height, s.image_width) and torch.equal(gd, wd)
        _assert_grads_match(depth_only, render_with_grads(TR, s, g, (torch.zeros_like(wc), wd))["grads"])


@pytest.mark.parametrize("chunks", ["1", "3"])
def test_forward_warp_culling_draws_the_full_walks_image(monkeypatch, chunks):
    """DGR_FWD_CULL=on: the thread that stages a Gaussian marks the 8x4 pixel blocks it may reach and each warp blends
    only those marked for it, in the same order: the image and inverse depth bit for bit, the per-Gaussian stats (the
    counts exactly), and the gradients (the backward starts from the forward's final T and last contributor); in
    depth chunks (DGR_FWD_CHUNKS=3) the chunks' transmittance pass is culled too."""
    monkeypatch.setenv("DGR_FWD_CHUNKS", chunks)
    for runs in _runs_by_flag(monkeypatch, "DGR_FWD_CULL"):
        _assert_the_same_render(*runs)
    seed, s, deep = _cull_scenes()[-1]
    _compare(s, deep, seed=seed)  # (DGR_FWD_CULL=on) and the torch rasterizer's


@pytest.mark.parametrize("split_sh", [False, True])
@pytest.mark.parametrize("culled_share", [0.0, 0.7])
def test_sh_rows_staged_in_batches(split_sh, culled_share):
    """The per-Gaussian kernels load a warp's SH rows into shared memory in batches of loads (common.cuh, warp_stage:
    6 float4 a lane for whole rows, 3 and 15 floats for the two parts), only the rows of the warp's visible Gaussians:
    16 coefficients (the staged path) in one array or two (render()'s form), whole warps and a last partial one
    (1,000 Gaussians: 31 full warps and 8 rows, which take the tail loop), all visible or 70% culled at random
    (mirrored behind the camera, so nearly every warp mixes both), against the torch rasterizer; the culled
    Gaussians get radius 0 and no gradient."""
    s, g = _settings(W=64, H=48, sh_degree=3), random_gaussians(1000, seed=50, sh_degree=3, device=DEV)
    culled = (torch.rand(1000, generator=torch.Generator().manual_seed(51)) < culled_share).to(DEV)
    g["means3D"][culled] = 2 * s.campos - g["means3D"][culled]  # (mirrored through the camera: view depth -z)
    _, cud = _compare(s, g, seed=50, split_sh=split_sh)
    assert (cud["radii"][culled] == 0).all() and (cud["radii"][~culled] > 0).float().mean() > 0.9
    for k, gr in cud["grads"].items():
        assert gr[culled].abs().sum() == 0, k


def test_a_bad_chunk_count_is_refused(monkeypatch):
    """A bad flag stops the first render's forward, before any work (the backward's flags too: thrown in a backward
    they would surface from autograd's device thread, mid-step)."""
    dgr = _cuda_module()
    s = _to_cuda_settings(_settings(W=32, H=32))
    g = random_gaussians(50, seed=3, device=DEV)
    for name, value, message in (("DGR_BWD_CHUNKS", "0", "DGR_BWD_CHUNKS must be auto or a number of chunks from 1 "
                                  "to 64, not '0'"),
                                 ("DGR_FWD_CHUNKS", "2x", "DGR_FWD_CHUNKS must be auto or a number of chunks from 1 "
                                  "to 16, not '2x'"),
                                 ("DGR_BWD_CULL", "yes", "DGR_BWD_CULL must be on or off, not 'yes'"),
                                 ("DGR_FWD_CULL", "1", "DGR_FWD_CULL must be on or off, not '1'")):
        monkeypatch.setenv(name, value)
        with torch.no_grad(), pytest.raises(RuntimeError, match=message):
            dgr.GaussianRasterizer(raster_settings=s)(
                means3D=g["means3D"], means2D=torch.zeros_like(g["means3D"]), shs=g["shs"],
                opacities=g["opacities"], scales=g["scales"], rotations=g["rotations"])
        monkeypatch.delenv(name)


def test_chunk_counts_follow_the_flags_and_the_tile_count(monkeypatch):
    """Auto (the default): the forward is cut only where the tiles leave the GPU short of one wave of blocks, the
    backward where they give fewer than four waves of warps; both at most 8, fewer as the tiles grow. A forced count
    is taken as it is."""
    ext = _cuda_module().extension()
    for name in ("DGR_FWD_CHUNKS", "DGR_BWD_CHUNKS"):
        monkeypatch.delenv(name, raising=False)
    tiles = [1, 24, 625, 1700, 10_000, 1_000_000]
    counts = [ext.render_chunks(t) for t in tiles]
    assert counts[0] == [8, 8] and counts[-1] == [1, 1], counts
    for (f0, b0), (f1, b1) in zip(counts, counts[1:]):
        assert f1 <= f0 and b1 <= b0, counts
    sms = torch.cuda.get_device_properties(DEV).multi_processor_count
    assert ext.render_chunks(sms * 64)[0] == 1  # (no GPU holds 64 such blocks an SM: more than one wave)
    monkeypatch.setenv("DGR_FWD_CHUNKS", "auto")
    assert ext.render_chunks(625) == counts[2]
    monkeypatch.setenv("DGR_FWD_CHUNKS", "5")
    monkeypatch.setenv("DGR_BWD_CHUNKS", "12")
    assert ext.render_chunks(1_000_000) == [5, 12]


@pytest.mark.parametrize("chunks", ["2", "3", "8", "auto"])
def test_forward_in_depth_chunks_matches_the_torch_rasterizer(monkeypatch, chunks):
    """DGR_FWD_CHUNKS (the render forward's depth chunks, with the backward's default): each chunk starts from the
    transmittance of the chunks in front (their alpha-only products) and the merge adds the chunks up to the one a
    pixel stopped in. Pixels that blend all of a 600-deep list, pixels that stop at T = 1e-4 in the first chunk,
    stops near the chunk bounds, and a larger random scene; the colour, depth, final T, last contributor and the
    gradients (the backward walks from the forward's final T and last contributor). (The colour's error is a norm over
    the image: test_forward_chunks_give_the_one_block_walks_state compares pixel by pixel.)"""
    monkeypatch.setenv("DGR_FWD_CHUNKS", chunks)
    s = _settings(W=48, H=40, sh_degree=1)
    g = random_gaussians(600, seed=30, sh_degree=1, spread=0.08, scale=(-3.0, -1.5), device=DEV)
    g["opacities"] = torch.rand(600, 1, generator=torch.Generator().manual_seed(30)).to(DEV) * 0.02 + 0.005
    _compare(s, g, seed=30)
    for opacity in (0.3, 0.05):  # T reaches 1e-4 after ~26 of them (44 pixels stop, in the first chunk or a later
        # one by the count), or after ~180 (12 pixels, in a later chunk)
        g["opacities"] = torch.full((600, 1), opacity, device=DEV)
        _compare(s, g, seed=31)
    s = _settings(W=256, H=192, sh_degree=3, antialiasing=True)
    g = random_gaussians(5000, seed=16, sh_degree=3, spread=1.5, scale=(-4.0, -2.0), device=DEV)
    _compare(s, g, seed=16)


def test_forward_chunks_give_the_one_block_walks_state(monkeypatch):
    """The chunked forward's per-pixel state that the backward reads (final T, last contributor) equals the
    one-block walk's: the last contributor exactly (up to pixels whose stop is within float rounding of 1e-4), T and
    the colour to float rounding."""
    dgr = _cuda_module()
    real = dgr.extension()
    forwards = []

    class Spy:  # the extension, keeping what rasterize_forward returns (final T and n_contrib among it)
        def __getattr__(self, name):
            return getattr(real, name)

        def rasterize_forward(self, *args):
            forwards.append(real.rasterize_forward(*args))
            return forwards[-1]

    monkeypatch.setattr(dgr, "extension", lambda: Spy())
    s = _settings(W=64, H=48, sh_degree=0)
    g = random_gaussians(800, seed=40, sh_degree=0, spread=0.1, scale=(-3.0, -1.8), device=DEV)
    g["opacities"] = torch.rand(800, 1, generator=torch.Generator().manual_seed(40)).to(DEV) * 0.3
    got = {}
    for chunks in ("1", "4"):
        monkeypatch.setenv("DGR_FWD_CHUNKS", chunks)
        render_with_grads(dgr.GaussianRasterizer, _to_cuda_settings(s), g, loss_weights(s, 40, device=DEV))
        color, final_T, n_contrib = (forwards[-1][i] for i in (0, 9, 10))
        got[chunks] = color.clone(), final_T.clone(), n_contrib.clone()
    (c1, t1, n1), (c4, t4, n4) = got["1"], got["4"]
    assert (t1 < 1e-3).any() and (t1 > 0.5).any()  # (pixels that stop, pixels that do not)
    assert (n1 > 0).any() and (n1 != n4).float().mean() < 0.002
    torch.testing.assert_close(t4, t1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(c4, c1, rtol=1e-4, atol=1e-5)


def test_large_tile_grid_uses_32bit_keys():
    # 257 x 257 = 66049 tiles: more than a 16-bit tile key holds
    s = _settings(W=4100, H=4100, fov_deg=40.0)
    g = random_gaussians(60, seed=23, spread=0.8, scale=(-2.5, -1.5), device=DEV)
    _compare(s, g, seed=23)


# ---- stage by stage: the preprocessing kernel against reference.preprocess ----

STAGES = ("means2D", "depths", "conics", "opacities", "colors")


def _compare_stages(s, g, use_precomp=False, split_sh=False):
    """stage_outputs (float32 kernels) against reference.preprocess (float64) on the same float32 inputs."""
    dgr = _cuda_module()
    if use_precomp:
        kw = dict(colors_precomp=g["colors"], cov3D_precomp=g["cov3D"])
    else:
        kw = dict(shs=g["shs"], scales=g["scales"], rotations=g["rotations"])
    got = dgr.stage_outputs(_to_cuda_settings(s), g["means3D"], g["opacities"],
                            **(dict(kw, shs=(g["shs"][:, :1], g["shs"][:, 1:])) if split_sh else kw))
    ref = reference.preprocess(s, g["means3D"].double(), g["opacities"].double(),
                               **{k: v.double() for k, v in kw.items()})
    assert torch.equal(got["radii"], ref["radii"])
    vis = ref["visible"]
    assert vis.any()
    for k in STAGES:
        assert got[k].shape == ref[k].shape, k
        assert rel_err(got[k][vis], ref[k][vis]) < FWD_RTOL, (k, rel_err(got[k][vis], ref[k][vis]))
        assert (got[k][~vis] == 0).all(), k
    # tiles: within the radius's tile rect (the kernels drop tiles the alpha >= 1/255 ellipse misses)
    rect = reference.tile_rects(s, ref["means2D"], ref["radii"])
    area = (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])
    tiles = got["tiles_touched"].long()
    assert (tiles[vis] <= area[vis]).all() and (tiles[~vis] == 0).all()
    return got, ref


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
@pytest.mark.parametrize("antialiasing", [False, True])
def test_stages_match_reference(sh_degree, antialiasing):
    s = _settings(W=83, H=61, sh_degree=sh_degree, antialiasing=antialiasing)
    g = random_gaussians(300, seed=30 + sh_degree, sh_degree=sh_degree, device=DEV)
    _compare_stages(s, g)


def test_stages_with_split_sh_and_a_wide_scene():
    # 16 coefficients in two parts (the kernels' shared-memory path); beyond the view: the clamped Jacobian
    s = _settings(W=64, H=48, sh_degree=3)
    g = random_gaussians(400, seed=31, sh_degree=3, spread=4.0, scale=(-2.0, -0.5), device=DEV)
    _compare_stages(s, g, split_sh=True)


def test_stages_with_precomputed_inputs():
    s = _settings(W=70, H=50)
    g = random_gaussians(200, seed=32, device=DEV)
    cov = reference.covariance_3d(g["scales"], g["rotations"])
    g = dict(means3D=g["means3D"], opacities=g["opacities"], colors=torch.rand(200, 3, device=DEV) * 2 - 0.5,
             cov3D=cov[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]].contiguous())
    _compare_stages(s, g, use_precomp=True)


EDGE_CASES = ["behind camera", "tile borders", "huge and tiny", "transparent", "saturated"]


@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_case_stages_and_end_to_end_match_reference(case):
    s = _settings(W=64, H=48, sh_degree=1)
    g = edge_case_gaussians(case, s, P=60, seed=33, device=DEV)
    _compare_stages(s, g)
    _compare(s, g, seed=33, against="reference")


@pytest.mark.parametrize("antialiasing", [False, True])
def test_end_to_end_matches_reference(antialiasing):
    s = _settings(W=83, H=61, sh_degree=2, antialiasing=antialiasing)
    g = random_gaussians(300, seed=34, sh_degree=2, device=DEV)
    _compare(s, g, seed=34, against="reference")
