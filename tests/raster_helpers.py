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


def render_with_grads(rasterizer_cls, s, g, loss_w, return_stats=False, use_precomp=False, split_sh=False):
    """Render ``g`` with one rasterizer implementation and back-propagate sum(w * outputs).
    Returns the outputs and the gradient of every input (means2D included). ``split_sh`` passes the SH as
    the pair (DC, higher bands), as render() does; their gradients come back concatenated."""
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
    wc, wd = loss_w
    loss = (color * wc).sum() + (invdepth * wd).sum()
    loss.backward()
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
