"""PyTorch Gaussian rasterizer: the executable specification of the rasterizer contract.

Same API as the CUDA package ``diff_gaussian_rasterization`` (METHOD.md section 4); its kernels are
tested against this file. Semantics follow graphdeco's rasterizer:

* cull p_view.z <= 0.2 and anything non-finite; 2D mean = ((ndc + 1) * S - 1) / 2 in pixels;
* EWA 2D covariance with the Jacobian's x/z, y/z clamped to 1.3 tan(fov), dilated by 0.3 px;
  det <= 0 culls; antialiasing scales opacity by sqrt(max(2.5e-5, det_before / det_after));
* radius = ceil(3 sqrt(lambda_max)); a Gaussian only reaches the 16x16 tiles of its screen rect;
* per pixel, front to back by view z: alpha = min(0.99, o exp(power)), skipped if power > 0 or
  alpha < 1/255; the pixel stops (without this contribution) when T (1 - alpha) < 1e-4;
* colour += c alpha T, inverse depth += alpha T / z, colour += T_final bg.

Work is done per tile, tiles batched into chunks of bounded size; under autograd each chunk is
checkpointed, so memory stays bounded by the chunk budget rather than by pairs x 256 pixels.
"""
from collections import namedtuple
import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from utils.graphics_utils import quaternion_to_matrix
from utils.sh_utils import eval_sh

TILE = 16
NEAR_Z = 0.2
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
LOG_T_MIN = math.log(T_MIN)
# elements of one [tiles, gaussians, 256] chunk; bounds peak memory of the compositing step
CHUNK_ELEMENTS = 1 << 22

GaussianRasterizationSettings = namedtuple(
    "GaussianRasterizationSettings",
    ["image_height", "image_width", "tanfovx", "tanfovy", "bg", "scale_modifier", "viewmatrix",
     "projmatrix", "sh_degree", "campos", "prefiltered", "debug", "antialiasing"])


def covariance_3d(scales, rotations, scale_modifier=1.0):
    """Sigma = R S S^T R^T. scales [P, 3] (activated), rotations [P, 4]. Returns [P, 3, 3]."""
    M = quaternion_to_matrix(rotations) * (scales * scale_modifier)[:, None, :]  # R S
    return M @ M.transpose(1, 2)


def _cov_from_upper(c6):
    """[P, 6] (xx, xy, xz, yy, yz, zz) -> symmetric [P, 3, 3]."""
    a, b, c, d, e, f = c6.unbind(-1)
    return torch.stack([a, b, c, b, d, e, c, e, f], dim=-1).reshape(-1, 3, 3)


def _finite_rows(*tensors):
    """Rows finite in every given tensor (None entries ignored). Returns bool [P]."""
    ok = None
    for t in tensors:
        if t is None:
            continue
        f = torch.isfinite(t.flatten(1)).all(dim=1) if t.dim() > 1 else torch.isfinite(t)
        ok = f if ok is None else ok & f
    return ok


def _zero_bad(t, ok):
    """Replace rows that are not ``ok`` by zeros so no NaN reaches the math (or its gradient)."""
    if t is None:
        return None
    mask = ok.reshape(-1, *([1] * (t.dim() - 1)))
    return torch.where(mask, t, torch.zeros_like(t))


def preprocess(s, means3D, means2D, opacities, shs, colors_precomp, scales, rotations, cov3D_precomp):
    """Project Gaussians. Returns a dict of per-Gaussian screen-space quantities and ``radii``."""
    P = means3D.shape[0]
    H, W = int(s.image_height), int(s.image_width)
    dev, dt = means3D.device, means3D.dtype
    ok = _finite_rows(means3D, opacities, shs, colors_precomp, scales, rotations, cov3D_precomp)
    means3D, opacities = _zero_bad(means3D, ok), _zero_bad(opacities, ok)
    shs, colors_precomp = _zero_bad(shs, ok), _zero_bad(colors_precomp, ok)
    scales, rotations, cov3D_precomp = _zero_bad(scales, ok), _zero_bad(rotations, ok), _zero_bad(cov3D_precomp, ok)

    viewmatrix = s.viewmatrix.to(dt)
    projmatrix = s.projmatrix.to(dt)
    p_hom = torch.cat([means3D, torch.ones(P, 1, device=dev, dtype=dt)], dim=1)
    p_view = p_hom @ viewmatrix  # [P, 4]
    p_proj = p_hom @ projmatrix
    z = p_view[:, 2]
    in_front = z > NEAR_Z
    z_safe = torch.where(in_front, z, torch.ones_like(z))
    w_inv = 1.0 / (p_proj[:, 3] + 1e-7)
    ndc = p_proj[:, :2] * w_inv[:, None] + means2D[:, :2]  # means2D carries dL/dndc
    size = torch.tensor([W, H], device=dev, dtype=dt)
    mean2d = ((ndc + 1.0) * size - 1.0) * 0.5  # [P, 2] pixels

    if cov3D_precomp is not None:
        Sigma = _cov_from_upper(cov3D_precomp)
    else:
        Sigma = covariance_3d(scales, rotations, s.scale_modifier)
    fx = W / (2.0 * s.tanfovx)
    fy = H / (2.0 * s.tanfovy)
    limx, limy = 1.3 * s.tanfovx, 1.3 * s.tanfovy
    tx = (p_view[:, 0] / z_safe).clamp(-limx, limx) * z_safe
    ty = (p_view[:, 1] / z_safe).clamp(-limy, limy) * z_safe
    zero = torch.zeros_like(z_safe)
    J = torch.stack([fx / z_safe, zero, -fx * tx / (z_safe * z_safe),
                     zero, fy / z_safe, -fy * ty / (z_safe * z_safe)], dim=-1).reshape(P, 2, 3)
    Wr = viewmatrix[:3, :3].T  # rotation block of world-to-camera (stored transposed)
    T = J @ Wr  # [P, 2, 3]
    cov2d = T @ Sigma @ T.transpose(1, 2)
    a0, b, c0 = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    a, c = a0 + 0.3, c0 + 0.3
    det = a * c - b * b
    good = in_front & ok & (det > 0) & torch.isfinite(det) & torch.isfinite(mean2d).all(dim=1)
    det_safe = torch.where(good, det, torch.ones_like(det))
    conic = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    opacity = opacities.reshape(-1)
    if s.antialiasing:
        det0 = a0 * c0 - b * b
        opacity = opacity * torch.sqrt(torch.clamp(det0 / det_safe, min=0.000025))

    with torch.no_grad():
        mid = 0.5 * (a + c)
        disc = torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
        radius = torch.ceil(3.0 * torch.sqrt(torch.maximum(mid + disc, mid - disc)))
        good = good & torch.isfinite(radius) & torch.isfinite(conic).all(dim=1)
        radius = torch.where(good, radius, torch.zeros_like(radius))
        m = torch.where(good[:, None], mean2d, torch.zeros_like(mean2d))
        gx, gy = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
        # float -> int truncation toward zero, then clamp, as the CUDA getRect
        x0 = torch.clamp(((m[:, 0] - radius) / TILE).to(torch.int64), 0, gx)
        x1 = torch.clamp(((m[:, 0] + radius + TILE - 1) / TILE).to(torch.int64), 0, gx)
        y0 = torch.clamp(((m[:, 1] - radius) / TILE).to(torch.int64), 0, gy)
        y1 = torch.clamp(((m[:, 1] + radius + TILE - 1) / TILE).to(torch.int64), 0, gy)
        good = good & ((x1 - x0) * (y1 - y0) > 0)
        radii = torch.where(good, radius, torch.zeros_like(radius)).to(torch.int32)

    if colors_precomp is not None:
        color = colors_precomp
    else:
        dirs = means3D - s.campos.to(dt)[None]
        dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
        color = torch.clamp_min(eval_sh(s.sh_degree, shs, dirs) + 0.5, 0.0)
    return dict(mean2d=mean2d, conic=conic, opacity=opacity, color=color, inv_z=1.0 / z_safe, z=z,
                visible=good, radii=radii, rect=torch.stack([x0, y0, x1, y1], dim=1), grid=(gx, gy))


def _tile_pairs(pre):
    """(tile, gaussian) pairs sorted by tile, then view depth. Returns (tile_ids, gauss_ids, counts)."""
    gx, gy = pre["grid"]
    vis = torch.nonzero(pre["visible"]).squeeze(1)
    rect = pre["rect"][vis]
    w = rect[:, 2] - rect[:, 0]
    n = w * (rect[:, 3] - rect[:, 1])
    g = torch.repeat_interleave(vis, n)
    start = torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    local = torch.arange(g.shape[0], device=g.device) - start
    wr = torch.repeat_interleave(w, n)
    r = torch.repeat_interleave(rect, n, dim=0)
    tile = (r[:, 1] + local // wr) * gx + r[:, 0] + local % wr
    # depth rank, so one integer key sorts by tile then depth (stable: ties keep index order)
    depth_rank = torch.empty_like(pre["z"], dtype=torch.int64)
    depth_rank[torch.sort(pre["z"].detach(), stable=True)[1]] = torch.arange(
        pre["z"].shape[0], device=g.device)
    key = tile * pre["z"].shape[0] + depth_rank[g]
    order = torch.sort(key)[1]
    counts = torch.bincount(tile, minlength=gx * gy)
    return tile[order], g[order], counts


def _composite_chunk(mean2d, conic, opacity, color, inv_z, idx, valid, pix, pix_ok, log_t_all, log_t_acc):
    """Blend one chunk: idx [B, K] Gaussians (depth order) over pix [B, 256, 2] pixels.

    log_t_all / log_t_acc [B, 256]: running log T with every valid alpha / with accepted alphas only
    (they differ once a pixel is done; the first keeps T monotone so 'done' stays done across chunks).
    """
    d = mean2d[idx][:, :, None, :] - pix[:, None, :, :]  # [B, K, 256, 2]
    cn = conic[idx]
    power = (-0.5 * (cn[..., 0, None] * d[..., 0] ** 2 + cn[..., 2, None] * d[..., 1] ** 2)
             - cn[..., 1, None] * d[..., 0] * d[..., 1])  # [B, K, 256]
    alpha = torch.clamp_max(opacity[idx][..., None] * torch.exp(power), ALPHA_MAX)
    take = (power <= 0) & (alpha >= ALPHA_MIN) & valid[..., None] & pix_ok[:, None, :]
    alpha = torch.where(take, alpha, torch.zeros_like(alpha))
    log1m = torch.log1p(-alpha)
    cum = torch.cumsum(log1m, dim=1) + log_t_all[:, None, :]  # log T after each Gaussian
    accept = take & (cum >= LOG_T_MIN)
    weight = torch.where(accept, alpha * torch.exp(cum - log1m), torch.zeros_like(alpha))  # alpha T
    rgb = torch.einsum("bkp,bkc->bpc", weight, color[idx])
    invd = torch.einsum("bkp,bk->bp", weight, inv_z[idx])
    new_all = cum[:, -1]
    new_acc = log_t_acc + torch.where(accept, log1m, torch.zeros_like(log1m)).sum(dim=1)
    return rgb, invd, new_all, new_acc, weight


def _chunks(counts, budget_gaussians):
    """Group tiles (sorted by descending count) so tiles x max count stays within the budget.

    Yields (tile_ids, k_start, k_end): a tile with more Gaussians than the budget is split along K.
    """
    order = torch.argsort(counts, descending=True)
    cnt = counts[order].tolist()
    i, n = 0, len(cnt)
    while i < n and cnt[i] > 0:
        kmax = cnt[i]
        if kmax >= budget_gaussians:
            for k0 in range(0, kmax, budget_gaussians):
                yield order[i:i + 1], k0, min(kmax, k0 + budget_gaussians)
            i += 1
            continue
        b = max(1, budget_gaussians // kmax)
        j = min(n, i + b)
        while j > i and cnt[j - 1] == 0:
            j -= 1
        yield order[i:j], 0, kmax
        i = j


def rasterize(s, pre, return_stats=False):
    H, W = int(s.image_height), int(s.image_width)
    gx, gy = pre["grid"]
    dev, dt = pre["mean2d"].device, pre["mean2d"].dtype
    P = pre["mean2d"].shape[0]
    n_tiles = gx * gy
    tiles_g, gauss, counts = _tile_pairs(pre)
    offsets = torch.cumsum(counts, 0) - counts

    rgb = torch.zeros(n_tiles, TILE * TILE, 3, device=dev, dtype=dt)
    invd = torch.zeros(n_tiles, TILE * TILE, device=dev, dtype=dt)
    log_t = torch.zeros(n_tiles, TILE * TILE, device=dev, dtype=dt)
    stats = None
    if return_stats:
        stats = dict(accum_weights=torch.zeros(P, device=dev), area_proj=torch.zeros(P, device=dev),
                     area_max=torch.zeros(P, device=dev))
        best_w = torch.zeros(n_tiles, TILE * TILE, device=dev)
        best_g = torch.full((n_tiles, TILE * TILE), -1, device=dev, dtype=torch.int64)

    ly, lx = torch.meshgrid(torch.arange(TILE, device=dev), torch.arange(TILE, device=dev), indexing="ij")
    lx, ly = lx.reshape(-1), ly.reshape(-1)
    tensors = (pre["mean2d"], pre["conic"], pre["opacity"], pre["color"], pre["inv_z"])
    use_ckpt = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    budget = max(1, CHUNK_ELEMENTS // (TILE * TILE))
    rgb_parts, invd_parts, logt_parts, tile_parts = [], [], [], []
    for tiles, k0, k1 in _chunks(counts, budget):
        kk = torch.arange(k0, k1, device=dev)
        pos = offsets[tiles][:, None] + kk[None, :]
        valid = kk[None, :] < counts[tiles][:, None]
        idx = gauss[torch.where(valid, pos, torch.zeros_like(pos))]
        px = (tiles % gx)[:, None] * TILE + lx[None]
        py = (tiles // gx)[:, None] * TILE + ly[None]
        pix = torch.stack([px, py], dim=-1).to(dt)
        pix_ok = (px < W) & (py < H)
        if k0 > 0:  # continuation of a long tile: carry its transmittance state
            state_all, state_acc = carry
        else:
            state_all = state_acc = torch.zeros(len(tiles), TILE * TILE, device=dev, dtype=dt)
        args = tensors + (idx, valid, pix, pix_ok, state_all, state_acc)
        if use_ckpt:
            out = checkpoint(_composite_chunk, *args, use_reentrant=False)
        else:
            out = _composite_chunk(*args)
        c_rgb, c_invd, new_all, new_acc, weight = out
        carry = (new_all, new_acc)
        rgb_parts.append(c_rgb)
        invd_parts.append(c_invd)
        logt_parts.append(new_acc - state_acc)
        tile_parts.append(tiles)
        if return_stats:
            with torch.no_grad():
                wgt = weight.detach().float()
                flat = idx.reshape(-1)
                stats["accum_weights"].index_add_(0, flat, wgt.sum(dim=2).reshape(-1))
                stats["area_proj"].index_add_(0, flat, (wgt > 0).sum(dim=2).reshape(-1).float())
                cmax, carg = wgt.max(dim=1)  # first maximum = front-most on ties
                gbest = torch.gather(idx, 1, carg)
                better = cmax > best_w[tiles]
                best_w[tiles] = torch.where(better, cmax, best_w[tiles])
                best_g[tiles] = torch.where(better, gbest, best_g[tiles])
    if tile_parts:
        all_tiles = torch.cat(tile_parts)
        rgb = rgb.index_add(0, all_tiles, torch.cat(rgb_parts))
        invd = invd.index_add(0, all_tiles, torch.cat(invd_parts))
        log_t = log_t.index_add(0, all_tiles, torch.cat(logt_parts))
    if return_stats:
        hit = best_g >= 0
        stats["area_max"].index_add_(0, best_g[hit], torch.ones(int(hit.sum()), device=dev))

    t_final = torch.exp(log_t)
    rgb = rgb + t_final[..., None] * s.bg.to(dt)[None, None, :]

    def untile(x):  # [tiles, 256, C] -> [C, H, W]
        C = x.shape[-1]
        x = x.reshape(gy, gx, TILE, TILE, C).permute(4, 0, 2, 1, 3).reshape(C, gy * TILE, gx * TILE)
        return x[:, :H, :W]

    return untile(rgb), untile(invd[..., None]), stats


class GaussianRasterizer(nn.Module):
    def __init__(self, raster_settings):
        super().__init__()
        self.raster_settings = raster_settings

    def markVisible(self, positions):
        with torch.no_grad():
            p = torch.cat([positions, torch.ones_like(positions[:, :1])], 1) @ self.raster_settings.viewmatrix
            return p[:, 2] > NEAR_Z

    def forward(self, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None,
                rotations=None, cov3D_precomp=None, return_stats=False):
        s = self.raster_settings
        if (shs is None) == (colors_precomp is None):
            raise ValueError("provide exactly one of shs or colors_precomp")
        if ((scales is None or rotations is None) and cov3D_precomp is None) or \
                (scales is not None and cov3D_precomp is not None):
            raise ValueError("provide either scales and rotations, or cov3D_precomp")
        pre = preprocess(s, means3D, means2D, opacities, shs, colors_precomp, scales, rotations,
                         cov3D_precomp)
        color, invdepth, stats = rasterize(s, pre, return_stats)
        if return_stats:
            return color, pre["radii"], invdepth, stats
        return color, pre["radii"], invdepth
