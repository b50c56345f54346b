"""The chunked PyTorch rasterizer against the per-stage reference (diff_gaussian_rasterization.reference) in
float64, images, stats and the gradient of every input, and both against finite differences."""
import pytest
import torch

from gaussian_renderer import torch_rasterizer as tr
from gaussian_renderer.cuda_package import contract, reference
from gaussian_renderer.torch_rasterizer import GaussianRasterizer
from tests.raster_helpers import (edge_case_gaussians, look_at_settings, loss_weights, random_gaussians, rel_err,
                                  render_with_grads, unproject)


def render(s, g, **kw):
    m2 = torch.zeros_like(g["means3D"], requires_grad=True)
    return GaussianRasterizer(s)(means2D=m2, **g, **kw)


def _render_reference(s, g, **kw):
    return reference.ReferenceRasterizer(s)(means2D=torch.zeros_like(g["means3D"]), **g, **kw)


@pytest.mark.parametrize("case", ["plain", "sh3", "aa", "dense", "behind"])
def test_forward_matches_reference(case):
    kw = dict(sh_degree=3) if case == "sh3" else {}
    s = look_at_settings(W=37, H=29, antialiasing=(case == "aa"), dtype=torch.float64, **kw)
    P = 300 if case == "dense" else 40
    g = random_gaussians(P, seed=hash(case) % 1000, sh_degree=s.sh_degree, dtype=torch.float64,
                         scale=(-2.5, -0.5) if case == "dense" else (-3, -1.5))
    if case == "behind":
        g["means3D"][:10, 2] = -4.1  # at or behind the camera plane
        g["means3D"][10:15, 2] = -3.85  # in front but closer than the near plane
    every = contract.STAT_NAMES + contract.PIXEL_STAT_NAMES
    color, radii, invd, stats = render(s, g, return_stats=every)
    C, r, D, st = _render_reference(s, g, return_stats=every)
    assert torch.equal(radii, r)
    torch.testing.assert_close(color, C, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(invd, D, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(stats["accum_weights"].double(), st["accum_weights"], atol=1e-5, rtol=1e-5)
    assert torch.equal(stats["area_proj"].double(), st["area_proj"])
    assert torch.equal(stats["area_max"].double(), st["area_max"])
    mc = stats["max_contributor"]
    assert mc.shape == (29, 37) and mc.dtype == torch.int64 and torch.equal(mc, st["max_contributor"])
    # each pixel's winner is the Gaussian area_max counts it for
    assert torch.equal(torch.bincount(mc[mc >= 0], minlength=P).double(), st["area_max"])
    if case == "behind":
        assert (radii[:15] == 0).all()


# scenes of the edge cases (tests/raster_helpers.edge_case_gaussians), rendered in float64
EDGE_CASES = ["behind camera", "tile borders", "huge and tiny", "transparent", "saturated"]


@pytest.mark.parametrize("case", EDGE_CASES)
def test_images_and_gradients_match_reference(case):
    """Colour, inverse depth and the gradient of every input (means2D included), float64: equal to rounding."""
    s = look_at_settings(W=40, H=34, sh_degree=1, dtype=torch.float64)
    g = edge_case_gaussians(case, s, dtype=torch.float64)
    w = tuple(t.double() for t in loss_weights(s, 3))
    got = render_with_grads(GaussianRasterizer, s, g, w)
    ref = render_with_grads(reference.ReferenceRasterizer, s, g, w)
    assert torch.equal(got["radii"], ref["radii"]) and (ref["radii"] > 0).any()
    assert rel_err(got["color"], ref["color"]) < 1e-10 and rel_err(got["invdepth"], ref["invdepth"]) < 1e-10
    for k, gr in ref["grads"].items():
        assert rel_err(got["grads"][k], gr) < 1e-8, (k, rel_err(got["grads"][k], gr))
        assert torch.equal(got["grads"][k][ref["radii"] == 0] != 0, gr[ref["radii"] == 0] != 0), k


def test_precomputed_inputs_match_reference():
    s = look_at_settings(W=30, H=26, dtype=torch.float64)
    g = random_gaussians(50, seed=8, dtype=torch.float64)
    cov = reference.covariance_3d(g["scales"], g["rotations"])
    g = dict(means3D=g["means3D"], opacities=g["opacities"], colors=torch.rand(50, 3, dtype=torch.float64),
             cov3D=cov[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]])
    w = tuple(t.double() for t in loss_weights(s, 4))
    got = render_with_grads(GaussianRasterizer, s, g, w, use_precomp=True)
    ref = render_with_grads(reference.ReferenceRasterizer, s, g, w, use_precomp=True)
    assert rel_err(got["color"], ref["color"]) < 1e-10
    for k, gr in ref["grads"].items():
        assert rel_err(got["grads"][k], gr) < 1e-8, k


def test_reference_single_gaussian_closed_form():
    """One Gaussian centred on a pixel: there alpha = opacity, colour = c alpha + (1 - alpha) bg, inverse depth
    alpha / z; the pixel centre is its 2D mean."""
    s = look_at_settings(W=32, H=32, dtype=torch.float64)
    g = random_gaussians(1, seed=1, dtype=torch.float64)
    g["means3D"] = unproject(s, [16.0], [16.0], [4.0], torch.float64)
    pre = reference.preprocess(s, g["means3D"], g["opacities"], shs=g["shs"], scales=g["scales"],
                               rotations=g["rotations"])
    torch.testing.assert_close(pre["means2D"][0], torch.tensor([16.0, 16.0], dtype=torch.float64))
    color, _, invd = _render_reference(s, g)
    o, c = float(g["opacities"][0]), pre["colors"][0]
    torch.testing.assert_close(color[:, 16, 16], c * o + (1 - o) * s.bg)
    torch.testing.assert_close(invd[0, 16, 16], torch.tensor(o / 4.0, dtype=torch.float64))


def test_reference_matches_finite_differences():
    s = look_at_settings(W=12, H=10, sh_degree=1, antialiasing=True, dtype=torch.float64)
    g = random_gaussians(3, seed=2, sh_degree=1, spread=0.5, scale=(-1.6, -1.0), dtype=torch.float64)
    keys = ["means3D", "scales", "rotations", "opacities", "shs"]
    weights = torch.rand(3, 10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(means2D, *vals):
        c, _, d = reference.ReferenceRasterizer(s)(means2D=means2D, **dict(zip(keys, vals)))
        return (c * weights).sum() + 0.3 * d.sum()

    inputs = [torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)]
    inputs += [g[k].clone().requires_grad_(True) for k in keys]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-4, rtol=1e-3)


def test_stats_subset_returns_only_what_is_asked():
    s = look_at_settings(W=24, H=20)
    g = random_gaussians(60, seed=5)
    _, _, _, full = render(s, g, return_stats=True)
    _, _, _, sub = render(s, g, return_stats=["area_max"])
    assert list(sub) == ["area_max"] and torch.equal(sub["area_max"], full["area_max"])
    _, _, _, two = render(s, g, return_stats={"area_max", "accum_weights"})
    assert list(two) == ["accum_weights", "area_max"]  # always in the contract's order
    assert list(render(s, g, return_stats="area_max")[3]) == ["area_max"]  # one name as a string
    assert len(render(s, g, return_stats=())) == 3  # nothing asked: the 3-tuple
    with pytest.raises(ValueError, match="area_mx"):
        render(s, g, return_stats=("area_mx",))


@pytest.mark.parametrize("rasterizer", ["torch", "reference"])
def test_max_contributor_is_the_largest_weight_not_the_front_most(rasterizer):
    """Two Gaussians on the same pixels: a faint one in front (opacity 0.3) and a dense one behind (0.9, weight
    0.9 x 0.7 = 0.63): the one behind is the pixel's max_contributor; pixels nothing reaches get -1; only asked for
    by name (return_stats=True is the per-Gaussian stats)."""
    s = look_at_settings(W=32, H=32, dtype=torch.float64)
    g = random_gaussians(2, seed=1, dtype=torch.float64)
    g["means3D"] = unproject(s, [16.0, 16.0], [16.0, 16.0], [3.0, 5.0], torch.float64)
    g["scales"][:] = 0.05
    g["opacities"] = torch.tensor([[0.3], [0.9]], dtype=torch.float64)
    run = render if rasterizer == "torch" else _render_reference
    mc = run(s, g, return_stats=("max_contributor",))[3]["max_contributor"]
    assert mc[16, 16] == 1 and mc[0, 0] == -1 and set(mc.unique().tolist()) <= {-1, 0, 1}
    g["opacities"][0] = 0.8  # now the front one's 0.8 beats 0.9 x 0.2
    assert run(s, g, return_stats=("max_contributor",))[3]["max_contributor"][16, 16] == 0
    assert "max_contributor" not in run(s, g, return_stats=True)[3]


def test_dense_pixels_stop_early_and_stats_are_consistent():
    s = look_at_settings(W=32, H=32)
    g = random_gaussians(400, seed=3, spread=0.3, scale=(-1.5, -1.0))
    g["opacities"][:] = 0.9
    color, radii, invd, st = render(s, g, return_stats=True)
    # opacity (1 - T) with white colours on black: saturated pixels stop just above T = 1e-4
    s0 = s._replace(bg=torch.zeros(3))
    ones = torch.ones(400, 3)
    op, _, _ = GaussianRasterizer(s0)(means2D=torch.zeros(400, 3), means3D=g["means3D"], opacities=g["opacities"],
                                      colors_precomp=ones, scales=g["scales"], rotations=g["rotations"])
    assert op.max() <= 1.0 and op.max() > 0.99
    assert ((1 - op[0]) >= 1e-4 - 1e-6).all()
    assert int(st["area_max"].sum()) <= 32 * 32
    assert (st["area_max"] <= st["area_proj"]).all()
    assert ((st["accum_weights"] > 0) == (st["area_proj"] > 0)).all()
    assert (st["area_proj"][radii == 0] == 0).all()


def test_chunking_matches_single_chunk(monkeypatch):
    s = look_at_settings(W=48, H=40, sh_degree=1)
    g = random_gaussians(500, seed=1, sh_degree=1, scale=(-2.5, -1.0))
    ref = render(s, g, return_stats=True)
    monkeypatch.setattr(tr, "CHUNK_ELEMENTS", 256 * 7)  # forces K-splitting of every tile
    out = render(s, g, return_stats=True)
    for a, b in zip(ref[:3], out[:3]):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-5, rtol=1e-5)
    for k in ref[3]:
        torch.testing.assert_close(ref[3][k], out[3][k], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("aa", [False, True])
def test_gradients_match_finite_differences(aa):
    s = look_at_settings(W=20, H=18, sh_degree=1, antialiasing=aa, dtype=torch.float64)
    g = random_gaussians(6, seed=5, sh_degree=1, spread=0.6, scale=(-1.8, -1.0), dtype=torch.float64)
    keys = ["means3D", "scales", "rotations", "opacities", "shs"]
    weights = torch.rand(3, 18, 20, dtype=torch.float64)

    def f(means2D, *vals):
        kw = dict(zip(keys, vals))
        c, _, d = GaussianRasterizer(s)(means2D=means2D, **kw)
        return (c * weights).sum() + 0.3 * d.sum()

    inputs = [torch.zeros(6, 3, dtype=torch.float64, requires_grad=True)]
    inputs += [g[k].clone().requires_grad_(True) for k in keys]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-4, rtol=1e-3)


def test_means2d_grad_is_ndc_gradient():
    s = look_at_settings(W=24, H=20, dtype=torch.float64)
    g = random_gaussians(4, seed=9, spread=0.5, scale=(-1.5, -1.2), dtype=torch.float64)
    m2 = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    c, _, _ = GaussianRasterizer(s)(means2D=m2, **g)
    c.sum().backward()
    assert m2.grad[:, :2].abs().sum() > 0
    assert (m2.grad[:, 2] == 0).all()
    # shift Gaussian 0 by one pixel in x: ndc shift 2/W
    eps = 1e-5
    shift = torch.zeros(4, 3, dtype=torch.float64)
    shift[0, 0] = eps
    cp, _, _ = GaussianRasterizer(s)(means2D=shift, **g)
    cm, _, _ = GaussianRasterizer(s)(means2D=-shift, **g)
    fd = (cp.sum() - cm.sum()) / (2 * eps)
    assert abs(fd - m2.grad[0, 0]) < 1e-4 * max(1.0, abs(float(fd)))


def test_degenerate_inputs_give_no_nan():
    s = look_at_settings(W=32, H=24, sh_degree=0)
    g = random_gaussians(20, seed=2)
    g["rotations"][0] = 0.0
    g["scales"][1] = 0.0
    g["means3D"][2, 0] = float("nan")
    g["means3D"][3, 1] = float("inf")
    g["scales"][4] = 1e4  # covers the whole screen
    g["scales"][5] = 1e-8
    g["opacities"][6] = 0.0
    g["shs"][7] = float("nan")
    for k in g:
        g[k].requires_grad_(True)
    m2 = torch.zeros(20, 3, requires_grad=True)
    c, radii, d, st = GaussianRasterizer(s)(means2D=m2, **g, return_stats=True)
    assert torch.isfinite(c).all() and torch.isfinite(d).all()
    assert radii[2] == 0 and radii[3] == 0 and radii[7] == 0
    (c.sum() + d.sum()).backward()
    for k in g:
        assert torch.isfinite(g[k].grad).all(), k
    assert torch.isfinite(m2.grad).all()
    assert all(torch.isfinite(v).all() for v in st.values())


def test_empty_and_all_culled():
    s = look_at_settings(W=20, H=20)
    g = random_gaussians(0)
    c, radii, d = render(s, g)
    torch.testing.assert_close(c, s.bg[:, None, None].expand(3, 20, 20))
    assert radii.shape == (0,) and (d == 0).all()


@pytest.mark.parametrize("split", [False, True])
def test_composite_function_grads_match_autograd_composition(split, monkeypatch):
    s = look_at_settings(W=36, H=28, sh_degree=1, dtype=torch.float64)
    s = s._replace(bg=torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64, requires_grad=True))
    g = random_gaussians(120, seed=11, sh_degree=1, spread=0.5, scale=(-2.2, -1.2), dtype=torch.float64)
    g["opacities"][:60] = 0.97  # saturates pixels: early stops, alpha clamped at 0.99
    if split:
        monkeypatch.setattr(tr, "CHUNK_ELEMENTS", tr.SUB * tr.SUB * 3)  # long sub-tiles split along K
    with torch.no_grad():
        m2 = torch.zeros(120, 3, dtype=torch.float64)
        pre = tr.preprocess(s, g["means3D"], m2, g["opacities"], g["shs"], None, g["scales"], g["rotations"], None)
    keys = ["mean2d", "conic", "opacity", "color", "inv_z"]
    for k in keys:
        pre[k] = pre[k].detach().requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    wc = torch.rand(3, 28, 36, generator=gen, dtype=torch.float64)
    wd = torch.rand(1, 28, 36, generator=gen, dtype=torch.float64)

    def grads(fn):
        c, d = fn()[:2]
        gs = torch.autograd.grad((c * wc).sum() + (d * wd).sum(), [pre[k] for k in keys] + [s.bg])
        return c.detach(), d.detach(), gs

    def composite_reference():  # the reference's stage 6 on the same per-Gaussian tensors
        c, d, _, _ = reference.composite(s, pre["mean2d"], pre["conic"], pre["opacity"], pre["color"],
                                         1.0 / pre["inv_z"], pre["radii"])
        return c, d

    c0, d0, g0 = grads(composite_reference)
    c1, d1, g1 = grads(lambda: tr.rasterize(s, pre))
    assert g0[2].abs().sum() > 0 and (c0 < 0.5).any()
    torch.testing.assert_close(c1, c0, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(d1, d0, atol=1e-12, rtol=1e-10)
    for k, a, b in zip(keys + ["bg"], g0, g1):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-8, msg=k)


def test_alpha_culling_is_exact_for_thin_faint_gaussians():
    """Sub-tile culling by the alpha >= 1/255 ellipse drops nothing: thin, tilted, faint Gaussians."""
    s = look_at_settings(W=64, H=48, sh_degree=0)
    g = random_gaussians(150, seed=4, spread=0.9, scale=(-2.5, -1.0))
    gen = torch.Generator().manual_seed(5)
    g["scales"][:, 1:] = torch.exp(torch.empty(150, 2).uniform_(-6, -4, generator=gen))
    g["opacities"][:] = torch.rand(150, 1, generator=gen) * 0.05 + 0.003  # many near 1/255
    color, _, invd, st = render(s, g, return_stats=True)
    C, _, D, st_ref = _render_reference(s, {k: v.double() for k, v in g.items()}, return_stats=True)
    torch.testing.assert_close(color.double(), C, atol=2e-6, rtol=0)
    torch.testing.assert_close(invd.double(), D, atol=2e-6, rtol=0)
    torch.testing.assert_close(st["accum_weights"].double(), st_ref["accum_weights"], atol=1e-4, rtol=1e-4)


def test_sh_pair_equals_concatenated_sh():
    """render() passes SH as (DC, higher bands): the PyTorch rasterizer gives the same image and gradients."""
    s = look_at_settings(W=30, H=20, sh_degree=2)
    g = random_gaussians(60, seed=3, sh_degree=2)
    w = loss_weights(s, 1)
    a = render_with_grads(GaussianRasterizer, s, g, w)
    b = render_with_grads(GaussianRasterizer, s, g, w, split_sh=True)
    assert torch.equal(a["color"], b["color"])
    for k in a["grads"]:
        torch.testing.assert_close(b["grads"][k], a["grads"][k], rtol=0, atol=0)
