"""The PyTorch rasterizer against a brute-force float64 per-pixel evaluation, and finite differences."""
import math

import numpy as np
import pytest
import torch

from gaussian_renderer import torch_rasterizer as tr
from gaussian_renderer.torch_rasterizer import GaussianRasterizer
from tests.raster_helpers import look_at_settings, random_gaussians
from utils.sh_utils import eval_sh


def brute_force(s, g):
    """Direct float64 evaluation of the contract, pixel by pixel (numpy, no tiles batching)."""
    H, W = s.image_height, s.image_width
    V = s.viewmatrix.double().numpy().T  # world -> camera
    Pm = s.projmatrix.double().numpy().T
    means = g["means3D"].double().numpy()
    n = means.shape[0]
    hom = np.concatenate([means, np.ones((n, 1))], 1)
    pv = hom @ V.T
    pp = hom @ Pm.T
    ndc = pp[:, :2] / (pp[:, 3:4] + 1e-7)
    mean2d = ((ndc + 1) * np.array([W, H]) - 1) * 0.5
    fx, fy = W / (2 * s.tanfovx), H / (2 * s.tanfovy)
    sh = g["shs"].double()
    dirs = g["means3D"].double() - s.campos.double()
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    colors = np.maximum(eval_sh(s.sh_degree, sh, dirs).numpy() + 0.5, 0)
    items = []
    for i in range(n):
        z = pv[i, 2]
        if z <= 0.2:
            continue
        q = g["rotations"][i].double().numpy()
        q = q / np.linalg.norm(q)
        w, x, y, zq = q
        R = np.array([[1 - 2 * (y * y + zq * zq), 2 * (x * y - w * zq), 2 * (x * zq + w * y)],
                      [2 * (x * y + w * zq), 1 - 2 * (x * x + zq * zq), 2 * (y * zq - w * x)],
                      [2 * (x * zq - w * y), 2 * (y * zq + w * x), 1 - 2 * (x * x + y * y)]])
        Sd = np.diag(g["scales"][i].double().numpy())
        Sigma = R @ Sd @ Sd @ R.T
        tx = np.clip(pv[i, 0] / z, -1.3 * s.tanfovx, 1.3 * s.tanfovx) * z
        ty = np.clip(pv[i, 1] / z, -1.3 * s.tanfovy, 1.3 * s.tanfovy) * z
        J = np.array([[fx / z, 0, -fx * tx / z ** 2], [0, fy / z, -fy * ty / z ** 2]])
        cov = J @ V[:3, :3] @ Sigma @ V[:3, :3].T @ J.T
        det0 = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
        cov = cov + 0.3 * np.eye(2)
        det = np.linalg.det(cov)
        if det <= 0:
            continue
        conic = np.linalg.inv(cov)
        mid = 0.5 * (cov[0, 0] + cov[1, 1])
        lam = mid + math.sqrt(max(0.1, mid * mid - det))
        r = math.ceil(3 * math.sqrt(lam))
        gx, gy = (W + 15) // 16, (H + 15) // 16
        x0 = min(max(int((mean2d[i, 0] - r) / 16), 0), gx)
        x1 = min(max(int((mean2d[i, 0] + r + 15) / 16), 0), gx)
        y0 = min(max(int((mean2d[i, 1] - r) / 16), 0), gy)
        y1 = min(max(int((mean2d[i, 1] + r + 15) / 16), 0), gy)
        if (x1 - x0) * (y1 - y0) == 0:
            continue
        o = float(g["opacities"][i])
        if s.antialiasing:
            o *= math.sqrt(max(0.000025, det0 / det))
        items.append((z, i, mean2d[i], conic, o, (x0 * 16, x1 * 16, y0 * 16, y1 * 16)))
    items.sort(key=lambda t: t[0])
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    T = np.ones((H, W))
    done = np.zeros((H, W), bool)
    C = np.zeros((3, H, W))
    D = np.zeros((H, W))
    acc = np.zeros(n)
    for z, i, m, con, o, (xa, xb, ya, yb) in items:
        dx, dy = m[0] - xs, m[1] - ys
        power = -0.5 * (con[0, 0] * dx * dx + con[1, 1] * dy * dy) - con[0, 1] * dx * dy
        alpha = np.minimum(0.99, o * np.exp(power))
        inrect = (xs >= xa) & (xs < xb) & (ys >= ya) & (ys < yb)
        ok = inrect & (power <= 0) & (alpha >= 1 / 255) & ~done
        test_T = T * (1 - alpha)
        stop = ok & (test_T < 1e-4)
        done |= stop
        ok &= ~stop
        w = np.where(ok, alpha * T, 0)
        C += w[None] * colors[i][:, None, None]
        D += w / z
        acc[i] = w.sum()
        T = np.where(ok, test_T, T)
    C += T[None] * s.bg.double().numpy()[:, None, None]
    return C, D, acc


def render(s, g, **kw):
    m2 = torch.zeros_like(g["means3D"], requires_grad=True)
    return GaussianRasterizer(s)(means2D=m2, **g, **kw)


@pytest.mark.parametrize("case", ["plain", "sh3", "aa", "dense", "behind"])
def test_forward_matches_brute_force(case):
    kw = dict(sh_degree=3) if case == "sh3" else {}
    s = look_at_settings(W=37, H=29, antialiasing=(case == "aa"), dtype=torch.float64, **kw)
    P = 300 if case == "dense" else 40
    g = random_gaussians(P, seed=hash(case) % 1000, sh_degree=s.sh_degree, dtype=torch.float64,
                         scale=(-2.5, -0.5) if case == "dense" else (-3, -1.5))
    if case == "behind":
        g["means3D"][:10, 2] = -4.1  # at or behind the camera plane
        g["means3D"][10:15, 2] = -3.85  # in front but closer than the near plane
    color, radii, invd, stats = render(s, g, return_stats=True)
    C, D, acc = brute_force(s, g)
    np.testing.assert_allclose(color.detach().numpy(), C, atol=1e-9, rtol=1e-7)
    np.testing.assert_allclose(invd[0].detach().numpy(), D, atol=1e-9, rtol=1e-7)
    np.testing.assert_allclose(stats["accum_weights"].numpy(), acc, atol=1e-5, rtol=1e-5)
    if case == "behind":
        assert (radii[:15] == 0).all()


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


def reference_composite(s, pre):
    """Plain autograd composition of the contract over the whole image (CUDA-style T product).

    Takes preprocess()'s per-Gaussian tensors, loops over visible Gaussians front to back, and is
    differentiated by autograd: the reference for the analytic backward of the compositing Function.
    """
    H, W = s.image_height, s.image_width
    dt = pre["mean2d"].dtype
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dt), torch.arange(W, dtype=dt), indexing="ij")
    T = torch.ones(H, W, dtype=dt)
    C = torch.zeros(3, H, W, dtype=dt)
    D = torch.zeros(H, W, dtype=dt)
    done = torch.zeros(H, W, dtype=torch.bool)
    vis = torch.nonzero(pre["visible"]).squeeze(1)
    for i in vis[torch.sort(pre["z"].detach()[vis], stable=True)[1]].tolist():
        x0, y0, x1, y1 = (int(v) * 16 for v in pre["rect"][i])
        inrect = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        dx, dy = pre["mean2d"][i, 0] - xs, pre["mean2d"][i, 1] - ys
        a, b, c = pre["conic"][i]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        alpha = torch.clamp_max(pre["opacity"][i] * torch.exp(power), 0.99)
        ok = inrect & (power <= 0) & (alpha >= 1 / 255) & ~done
        test_t = T * (1 - alpha)
        stop = ok & (test_t < 1e-4)
        done = done | stop
        ok = ok & ~stop
        w = torch.where(ok, alpha * T, torch.zeros_like(alpha))
        C = C + w * pre["color"][i][:, None, None]
        D = D + w * pre["inv_z"][i]
        T = torch.where(ok, test_t, T)
    return C + T * s.bg[:, None, None], D[None]


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

    c0, d0, g0 = grads(lambda: reference_composite(s, pre))
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
    C, D, acc = brute_force(s, {k: v.double() for k, v in g.items()})
    np.testing.assert_allclose(color.detach().numpy(), C, atol=2e-6)
    np.testing.assert_allclose(invd[0].detach().numpy(), D, atol=2e-6)
    np.testing.assert_allclose(st["accum_weights"].numpy(), acc, atol=1e-4, rtol=1e-4)


def test_sh_pair_equals_concatenated_sh():
    """render() passes SH as (DC, higher bands): the PyTorch rasterizer gives the same image and gradients."""
    from tests.raster_helpers import loss_weights, render_with_grads  # noqa: PLC0415
    s = look_at_settings(W=30, H=20, sh_degree=2)
    g = random_gaussians(60, seed=3, sh_degree=2)
    w = loss_weights(s, 1)
    a = render_with_grads(GaussianRasterizer, s, g, w)
    b = render_with_grads(GaussianRasterizer, s, g, w, split_sh=True)
    assert torch.equal(a["color"], b["color"])
    for k in a["grads"]:
        torch.testing.assert_close(b["grads"][k], a["grads"][k], rtol=0, atol=0)
