"""Small random scenes and settings shared by the rasterizer tests."""
import math

import numpy as np
import torch

from gaussian_renderer.torch_rasterizer import GaussianRasterizationSettings
from utils.graphics_utils import look_at, projection_matrix


def look_at_settings(W=40, H=30, fov_deg=60.0, eye=(0.0, 0.0, -4.0), sh_degree=0, bg=(0.1, 0.2, 0.3),
                     antialiasing=False, dtype=torch.float32, device="cpu"):
    """Camera at ``eye`` looking at the origin, y down (COLMAP/OpenCV axes)."""
    eye = np.asarray(eye, dtype=np.float64)
    R = look_at(eye, (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # world -> camera rotation (rows)
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    fovx = math.radians(fov_deg)
    fovy = 2 * math.atan(math.tan(fovx / 2) * H / W)
    view = torch.tensor(w2c.T, dtype=dtype, device=device)
    proj = view @ projection_matrix(0.01, 100.0, fovx, fovy).T.to(dtype=dtype, device=device)
    return GaussianRasterizationSettings(
        image_height=H, image_width=W, tanfovx=math.tan(fovx / 2), tanfovy=math.tan(fovy / 2),
        bg=torch.tensor(bg, dtype=dtype, device=device), scale_modifier=1.0, viewmatrix=view,
        projmatrix=proj, sh_degree=sh_degree, campos=torch.tensor(eye, dtype=dtype, device=device),
        prefiltered=False, debug=False, antialiasing=antialiasing)


def random_gaussians(P, seed=0, sh_degree=0, spread=1.0, scale=(-3.0, -1.5), dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(P, 3, generator=g) * 2 - 1) * spread
    scales = torch.exp(torch.empty(P, 3).uniform_(*scale, generator=g))
    rots = torch.randn(P, 4, generator=g)
    rots = rots / rots.norm(dim=1, keepdim=True)
    opac = torch.rand(P, 1, generator=g) * 0.9 + 0.05
    shs = torch.randn(P, (sh_degree + 1) ** 2, 3, generator=g) * 0.5
    out = dict(means3D=means, scales=scales, rotations=rots, opacities=opac, shs=shs)
    return {k: v.to(dtype=dtype, device=device) for k, v in out.items()}


def unproject(s, px, py, depth, dtype=torch.float32, device="cpu"):
    """World points [n, 3] whose 2D mean lands on pixel coordinates (px, py) at view depth ``depth``."""
    W, H = s.image_width, s.image_height
    V = s.viewmatrix.double().cpu().numpy().T  # world -> camera
    # pixel = ((ndc + 1) S - 1) / 2 and ndc.x = x_cam / (z tanfovx) for graphdeco's projection
    ndc_x = (2 * np.asarray(px, dtype=np.float64) + 1) / W - 1
    ndc_y = (2 * np.asarray(py, dtype=np.float64) + 1) / H - 1
    z = np.broadcast_to(np.asarray(depth, dtype=np.float64), ndc_x.shape)
    cam = np.stack([ndc_x * z * s.tanfovx, ndc_y * z * s.tanfovy, z, np.ones_like(z)], -1)
    world = cam @ np.linalg.inv(V).T
    return torch.tensor(world[:, :3], dtype=dtype, device=device)


def edge_case_gaussians(case, s, P=40, seed=0, dtype=torch.float32, device="cpu"):
    """A random scene of P Gaussians for camera ``s`` (look_at_settings, eye at z = -4) whose first rows are one
    edge case: "behind camera" (behind it, on its plane, just before and just past the near plane), "tile
    borders" (2D means on and next to 16-pixel tile borders, and just outside the image), "huge and tiny" (scales
    3 near the camera, 1e-6, flat), "transparent" (opacity 0 and just under 1/255) or "saturated" (opaque layers:
    alpha clamped at 0.99, pixels that stop early, Gaussians hidden behind them)."""
    g = random_gaussians(P, seed=seed, sh_degree=s.sh_degree, spread=0.8, scale=(-2.5, -1.2), dtype=dtype,
                         device=device)
    m, sc, op = g["means3D"], g["scales"], g["opacities"]
    if case == "behind camera":
        m[:4, 2] = torch.tensor([-5.0, -4.0, -3.85, -3.7999]).to(m)  # behind, on the plane, z = 0.15, z = 0.2001
    elif case == "tile borders":
        W, H = s.image_width, s.image_height
        xs = [15.0, 15.5, 16.0, 16.49, 31.99, 32.0, 0.0, W - 1.0, -0.5, W + 0.2, 8.0, 20.0]
        ys = [15.5, 16.0, 31.5, 0.0, 16.0, H - 1.0, 8.0, 20.0, 10.0, 12.0, -0.6, H + 0.3]
        m[:12] = unproject(s, xs, ys, np.linspace(3.0, 5.0, 12), dtype, device)
        sc[:12] = sc[:12] * 0.3
    elif case == "huge and tiny":
        m[0] = torch.tensor([0.0, 0.0, -2.5]).to(m)  # 1.5 in front of the camera
        sc[0] = torch.tensor([3.0, 2.0, 0.5]).to(sc)
        sc[1:4] = torch.tensor([1e-6, 1e-4, 1e-3]).to(sc)[:, None]
        sc[4, 2] = 0.0
    elif case == "transparent":
        op[:6] = torch.tensor([0.0, 0.0, 1e-3, 0.0039, 0.5 / 255, 1e-8]).to(op)[:, None]
        sc[:6] = 0.2  # large enough to cover others if they were drawn
    elif case == "saturated":
        m[:12] = m[:12] * 0.2 + torch.tensor([0.0, 0.0, -1.0]).to(m)  # a crowd in front of the others
        sc[:12] = 0.25
        op[:12] = torch.linspace(0.9, 1.0, 12).to(op)[:, None]
    else:
        raise ValueError(case)
    return g


def render_with_grads(rasterizer_cls, s, g, loss_w, return_stats=False, use_precomp=False, split_sh=False):
    """Render ``g`` with one rasterizer implementation and back-propagate sum(w * outputs), loss_w = (colour's,
    inverse depth's weights); a weight None leaves that output out of the loss (no gradient for it, as in training
    without depth maps; zeros keep it in with a zero gradient). Returns the outputs and the gradient of every input
    (means2D included). ``split_sh`` passes the SH as the pair (DC, higher bands), as render() does; their gradients
    come back concatenated."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in g.items()}
    if split_sh:
        leaves["shs"] = tuple(t.detach().clone().requires_grad_(True) for t in (g["shs"][:, :1], g["shs"][:, 1:]))
    means2D = torch.zeros(leaves["means3D"].shape[0], 3, device=leaves["means3D"].device, requires_grad=True)
    kw = dict(means3D=leaves["means3D"], means2D=means2D, opacities=leaves["opacities"])
    if use_precomp:
        kw.update(colors_precomp=leaves["colors"], cov3D_precomp=leaves["cov3D"])
    else:
        kw.update(shs=leaves["shs"], scales=leaves["scales"], rotations=leaves["rotations"])
    out = rasterizer_cls(raster_settings=s)(**kw, return_stats=return_stats)
    color, radii, invdepth = out[:3]
    sum((o * w).sum() for o, w in zip((color, invdepth), loss_w) if w is not None).backward()
    grads = {k: v.grad for k, v in leaves.items() if k != "shs" or not split_sh}
    if split_sh:
        grads["shs"] = torch.cat([t.grad for t in leaves["shs"]], dim=1)
    grads["means2D"] = means2D.grad
    res = dict(color=color.detach(), invdepth=invdepth.detach(), radii=radii, grads=grads)
    if return_stats:
        res["stats"] = out[3]
    return res


def loss_weights(s, seed=0, color=True, depth=True, device="cpu"):
    """Random per-pixel weights for the colour and inverse-depth outputs (zeros for a left-out one)."""
    g = torch.Generator().manual_seed(seed)
    H, W = s.image_height, s.image_width
    wc = torch.rand(3, H, W, generator=g) if color else torch.zeros(3, H, W)
    wd = torch.rand(1, H, W, generator=g) if depth else torch.zeros(1, H, W)
    return wc.to(device), wd.to(device)


def rel_err(a, b):
    """||a - b|| / ||b|| in float64."""
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


def atomics_noise(first, *again):
    """By name, the largest gap between CUDA runs of the same inputs, `first` against each of `again` (the backward's
    atomics add in any order; one pair's gap can be well below another's, so tests comparing many runs sample more)."""
    return {k: max(float((a[k] - first[k]).abs().max()) for a in again) for k in first}


def assert_close_up_to_atomics(a, b, noise=None):
    """b's tensors (gradients, float stats) are a's up to the atomics' float order: rtol 1e-3 and an absolute 1e-5 of
    the largest, widened to 4x `noise` (atomics_noise, by name) where huge Gaussians sum more terms than that allows."""
    for k in a:
        scale = float(a[k].abs().max()) or 1.0
        atol = max(1e-5 * scale, 4 * (noise or {}).get(k, 0.0))
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=atol, msg=k)
