"""Readable per-stage reference of the CUDA rasterizer in plain PyTorch, differentiated by autograd.

What the kernels compute, stage by stage, in any dtype (float64 for tests of the CUDA and the chunked PyTorch
rasterizers): slow (one full-image pass per Gaussian), never used for training. Pure Python: importable without
the compiled extension. Gradients are autograd's; the kernels' hand-written backward must agree with them.

Stages (csrc/preprocess.cu, geometry.cuh, common.cuh, render.cu):

1. ``project_means``: view point p_view = [p, 1] V, clip point [p, 1] P (row-vector matrices, as graphdeco),
   pixel mean ((ndc + 1) size - 1) / 2 with ndc = clip.xy / (clip.w + 1e-7); means2D is added to ndc, so its
   gradient is dL/d(ndc), the kernels' convention.
2. ``project_covariances``: Sigma = R S S^T R^T (or given); cov2D = J W Sigma W^T J^T with the Jacobian J taken
   at x/z, y/z clamped to JACOBIAN_CLAMP tan(fov); DILATION is added to its diagonal afterwards.
3. ``screen_footprints``: conic = inverse of the dilated cov2D; opacity, times sqrt(max(AA_MIN_RATIO,
   det(cov2D) / det(dilated))) with antialiasing; radius = ceil(3 sqrt(largest eigenvalue)), the eigenvalue's
   discriminant floored at 0.1; the rect of 16x16 tiles the radius reaches (truncated, clamped to the grid).
4. ``sh_colors``: max(sum_k Y_k(d) sh_k + 0.5, 0), d the unit direction from the camera centre, at the degree
   ``sh_degree_used`` gives.
5. ``preprocess``: which Gaussians are drawn and their stage outputs. A row is culled (radius 0, exactly zero
   gradient) when an input is NaN or infinite, view z <= NEAR_Z, det(dilated cov2D) <= 0, the mean, conic or
   radius is not finite, its tile rect is empty, or its colour is not finite or above COLOR_MAX in magnitude.
   Overflow in the computation culls like a non-finite input, so that decision follows the dtype.
6. ``composite``: per pixel, the drawn Gaussians whose tile rect holds the pixel, front to back by view z
   (ties in index order): power = -(a dx^2 + c dy^2) / 2 - b dx dy, alpha = min(ALPHA_MAX, opacity exp(power));
   skipped when power > 0 or alpha < ALPHA_MIN; the pixel stops, without this contribution, when T (1 - alpha)
   < T_MIN; colour += c alpha T, inverse depth += alpha T / z, T *= 1 - alpha; colour += T bg at the end.
   The per-pixel stat max_contributor is the Gaussian of the largest alpha T (the front-most on ties).
"""
import torch

from . import contract
from .contract import (AA_MIN_RATIO, ALPHA_MAX, ALPHA_MIN, COLOR_MAX, DILATION, JACOBIAN_CLAMP, NEAR_Z, T_MIN, TILE,
                       check_inputs, check_settings, sh_degree_used, sh_features, stats_request)

# real SH constants in the 3DGS sign convention (common.cuh)
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


def finite_rows(*tensors):
    """bool [P]: rows finite in every given tensor (None entries are skipped)."""
    ok = None
    for t in tensors:
        if t is not None:
            f = torch.isfinite(t).flatten(1).all(dim=1) if t.dim() > 1 else torch.isfinite(t)
            ok = f if ok is None else ok & f
    return ok


def rotation_matrices(quaternions):
    """[P, 4] (w, x, y, z) of any norm -> [P, 3, 3]; the zero quaternion gives the identity."""
    q = quaternions / quaternions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=1).reshape(-1, 3, 3)


def covariance_3d(scales, rotations, scale_modifier=1.0):
    """Sigma = R S S^T R^T [P, 3, 3] from scales [P, 3] (activated) and quaternions [P, 4]."""
    M = rotation_matrices(rotations) * (scales * scale_modifier)[:, None, :]  # R S
    return M @ M.transpose(1, 2)


def cov_from_upper(c6):
    """[P, 6] upper triangle (xx, xy, xz, yy, yz, zz) -> symmetric [P, 3, 3]."""
    a, b, c, d, e, f = c6.unbind(-1)
    return torch.stack([a, b, c, b, d, e, c, e, f], dim=-1).reshape(-1, 3, 3)


def project_means(s, means3D, means2D=None):
    """Pixel means [P, 2], view points [P, 3] (z = depth). means2D [P, 2 or 3] is added to the NDC position."""
    dt = means3D.dtype
    hom = torch.cat([means3D, torch.ones_like(means3D[:, :1])], dim=1)
    p_view = hom @ s.viewmatrix.to(dt)
    clip = hom @ s.projmatrix.to(dt)
    ndc = clip[:, :2] / (clip[:, 3:4] + 1e-7)
    if means2D is not None:
        ndc = ndc + means2D[:, :2]
    size = torch.tensor([s.image_width, s.image_height], dtype=dt, device=means3D.device)
    return ((ndc + 1.0) * size - 1.0) * 0.5, p_view[:, :3]


def project_covariances(s, p_view, cov3d):
    """The undilated 2D covariance (xx, xy, yy) [P, 3] of view points [P, 3] with world covariances [P, 3, 3]."""
    dt = p_view.dtype
    x, y, z = p_view.unbind(1)
    fx, fy = s.image_width / (2.0 * s.tanfovx), s.image_height / (2.0 * s.tanfovy)
    limx, limy = JACOBIAN_CLAMP * s.tanfovx, JACOBIAN_CLAMP * s.tanfovy
    tx = (x / z).clamp(-limx, limx) * z
    ty = (y / z).clamp(-limy, limy) * z
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], dim=1).reshape(-1, 2, 3)
    T = J @ s.viewmatrix.to(dt)[:3, :3].T  # the view rotation, world -> camera
    cov = T @ cov3d @ T.transpose(1, 2)
    return torch.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]], dim=1)


def tile_rects(s, means2D, radii):
    """[P, 4] int64 tile rect (x0, y0, x1, y1), x1 / y1 exclusive, of pixel means [P, 2] with radii [P]."""
    gx, gy = (s.image_width + TILE - 1) // TILE, (s.image_height + TILE - 1) // TILE
    m, r = means2D.detach(), radii.detach().to(means2D.dtype)
    lo = (m - r[:, None]) / TILE
    hi = (m + r[:, None] + TILE - 1) / TILE
    limit = torch.tensor([gx, gy], dtype=m.dtype, device=m.device)
    # clamp to the grid in float, then truncate (no integer overflow; the kernels' order)
    lo = torch.minimum(lo.clamp_min(0), limit).to(torch.int64)
    hi = torch.minimum(hi.clamp_min(0), limit).to(torch.int64)
    return torch.cat([lo, hi], dim=1)


def screen_footprints(s, cov2d, opacities):
    """From the undilated 2D covariance [P, 3]: conics [P, 3] (inverse of the dilated one: a, b, c), effective
    opacities [P], radii [P] (float, not rounded to int) and det [P] of the dilated covariance."""
    a0, b, c0 = cov2d.unbind(1)
    a, c = a0 + DILATION, c0 + DILATION
    det = a * c - b * b
    conics = torch.stack([c / det, -b / det, a / det], dim=1)
    if s.antialiasing:
        opacities = opacities * torch.sqrt(torch.clamp((a0 * c0 - b * b) / det, min=AA_MIN_RATIO))
    with torch.no_grad():
        mid = 0.5 * (a + c)
        disc = torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
        radii = torch.ceil(3.0 * torch.sqrt(torch.maximum(mid + disc, mid - disc)))
    return conics, opacities, radii, det


def sh_basis(degree, dirs):
    """Real SH basis [P, (degree + 1)^2] at unit directions [P, 3] (degree <= 3)."""
    x, y, z = dirs.unbind(1)
    b = [torch.full_like(x, SH_C0)]
    if degree > 0:
        b += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree > 1:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        b += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2.0 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree > 2:
        b += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
              SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
              SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(b, dim=1)


def sh_colors(s, means3D, shs):
    """Colours [P, 3] of SH coefficients [P, K, 3] seen from s.campos."""
    dirs = means3D - s.campos.to(means3D.dtype)
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    deg = sh_degree_used(s.sh_degree, shs.shape[1])
    basis = sh_basis(deg, dirs)  # [P, K']
    return torch.clamp_min((basis[:, :, None] * shs[:, :basis.shape[1]]).sum(dim=1) + 0.5, 0.0)


def _stages(s, means3D, opacities, shs, colors_precomp, scales, rotations, cov3D_precomp, means2D):
    """Stages 1-4 on the given rows. Returns the per-row outputs and ``drawn`` [P], the culling decision."""
    cov3d = cov_from_upper(cov3D_precomp) if cov3D_precomp is not None else \
        covariance_3d(scales, rotations, s.scale_modifier)
    pix, p_view = project_means(s, means3D, means2D)
    cov2d = project_covariances(s, p_view, cov3d)
    conics, opac, radii, det = screen_footprints(s, cov2d, opacities)
    colors = colors_precomp if colors_precomp is not None else sh_colors(s, means3D, shs)
    with torch.no_grad():
        rect = tile_rects(s, pix, torch.nan_to_num(radii))
        drawn = (finite_rows(means3D, opacities[:, None], shs, colors_precomp, scales, rotations, cov3D_precomp)
                 & (p_view[:, 2] > NEAR_Z) & finite_rows(pix, conics, radii[:, None]) & (det > 0)
                 & torch.isfinite(det) & ((rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1]) > 0)
                 & (colors.abs() <= COLOR_MAX).all(dim=1))  # False for NaN too
    return dict(means2D=pix, depths=p_view[:, 2], conics=conics, opacities=opac, colors=colors, radii=radii,
                drawn=drawn)


def preprocess(s, means3D, opacities, shs=None, colors_precomp=None, scales=None, rotations=None,
               cov3D_precomp=None, means2D=None):
    """Stages 1-5 for every Gaussian: dict of means2D [P, 2] (pixels), depths [P] (view z), conics [P, 3],
    opacities [P] (effective), colors [P, 3], radii [P] int32 (0 = culled) and visible [P]; culled rows are zero.

    The culling is decided on a first pass without gradients; the stages then run again on the drawn rows only,
    so a culled row's NaN, infinities or overflow never reach autograd and its gradient is exactly zero.
    """
    P = means3D.shape[0]
    shs = sh_features(shs) if shs is not None else None
    rows = [means3D, opacities.reshape(-1), shs, colors_precomp, scales, rotations, cov3D_precomp, means2D]
    with torch.no_grad():
        drawn = _stages(s, *rows)["drawn"]
    idx = torch.nonzero(drawn).squeeze(1)
    out = _stages(s, *(t.index_select(0, idx) if t is not None else None for t in rows))
    keep = out.pop("drawn")  # the same decisions, unless a batched product rounded differently
    out["radii"] = torch.where(keep, out["radii"], torch.zeros_like(out["radii"]))

    def scatter(v):  # [n, ...] rows of idx -> [P, ...] with zeros elsewhere (differentiable)
        return v.new_zeros((P,) + v.shape[1:]).index_copy(0, idx, v)

    res = {k: scatter(v) for k, v in out.items()}
    res["radii"] = res["radii"].to(torch.int32)
    res["visible"] = res["radii"] > 0
    return res


def composite(s, means2D, conics, opacities, colors, depths, radii, return_stats=False):
    """Stage 6 over the whole image. Returns colour [3, H, W] (background included), inverse depth [1, H, W],
    final transmittance [H, W] and, with return_stats, accum_weights, area_proj and area_max [P] (sum of the
    weights alpha T, number of pixels, and of pixels where it has the largest weight, the front-most on ties) and
    max_contributor [H, W] (that Gaussian's index at each pixel, -1 where none contributes)."""
    H, W = int(s.image_height), int(s.image_width)
    dt, dev = means2D.dtype, means2D.device
    P = means2D.shape[0]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dt, device=dev), torch.arange(W, dtype=dt, device=dev),
                            indexing="ij")
    T = torch.ones(H, W, dtype=dt, device=dev)
    # zero times every input: the outputs stay in their autograd graph when no Gaussian is drawn (zero gradients)
    anchor = sum((t * 0).sum() for t in (means2D, conics, opacities, colors, depths))
    color = torch.zeros(3, H, W, dtype=dt, device=dev) + anchor
    invdepth = torch.zeros(H, W, dtype=dt, device=dev) + anchor
    done = torch.zeros(H, W, dtype=torch.bool, device=dev)
    accum = torch.zeros(P, dtype=dt, device=dev)
    area = torch.zeros(P, dtype=dt, device=dev)
    best_w = torch.zeros(H, W, dtype=dt, device=dev)
    best_g = torch.full((H, W), -1, dtype=torch.int64, device=dev)
    drawn = torch.nonzero(radii > 0).squeeze(1)
    order = drawn[torch.sort(depths.detach()[drawn], stable=True)[1]]
    rects = tile_rects(s, means2D, radii) * TILE
    for i in order.tolist():
        x0, y0, x1, y1 = rects[i].tolist()
        in_rect = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        dx, dy = means2D[i, 0] - xs, means2D[i, 1] - ys
        a, b, c = conics[i]
        power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
        alpha = torch.clamp_max(opacities[i] * torch.exp(power), ALPHA_MAX)
        ok = in_rect & (power <= 0) & (alpha >= ALPHA_MIN) & ~done
        test_T = T * (1 - alpha)
        stop = ok & (test_T < T_MIN)
        done = done | stop
        ok = ok & ~stop
        w = torch.where(ok, alpha * T, torch.zeros_like(alpha))
        color = color + w * colors[i][:, None, None]
        invdepth = invdepth + w / depths[i]
        T = torch.where(ok, test_T, T)
        if return_stats:
            with torch.no_grad():
                accum[i], area[i] = w.sum(), ok.sum()
                better = w > best_w
                best_w = torch.where(better, w, best_w)
                best_g = torch.where(better, torch.full_like(best_g, i), best_g)
    color = color + T * s.bg.to(dt)[:, None, None]
    stats = None
    if return_stats:
        area_max = torch.bincount(best_g[best_g >= 0], minlength=P).to(dt)
        stats = dict(accum_weights=accum, area_proj=area, area_max=area_max, max_contributor=best_g)
    return color, invdepth[None], T, stats


def rasterize_reference(s, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None, rotations=None,
                        cov3D_precomp=None, return_stats=False):
    """The GaussianRasterizer contract through the reference stages: (colour, radii, inverse depth), plus the
    dict of the requested stats when return_stats asks for some."""
    check_inputs(shs, colors_precomp, scales, rotations, cov3D_precomp)
    check_settings(s)
    names, _ = stats_request(return_stats)
    pre = preprocess(s, means3D, opacities, shs, colors_precomp, scales, rotations, cov3D_precomp, means2D)
    color, invdepth, _, stats = composite(s, pre["means2D"], pre["conics"], pre["opacities"], pre["colors"],
                                          pre["depths"], pre["radii"], bool(names))
    if names:
        return color, pre["radii"], invdepth, {n: stats[n] for n in names}
    return color, pre["radii"], invdepth


class ReferenceRasterizer(contract.RasterizerModule):
    """rasterize_reference behind the GaussianRasterizer interface (drop-in for tests)."""

    def forward(self, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None, rotations=None,
                cov3D_precomp=None, return_stats=False):
        return rasterize_reference(self.raster_settings, means3D, means2D, opacities, shs, colors_precomp, scales,
                                   rotations, cov3D_precomp, return_stats)
