"""Differentiable tile rasterizer of 3D Gaussians (CUDA).

Same API as the PyTorch reference in gaussian_renderer/torch_rasterizer.py (graphdeco's interface):

    s = GaussianRasterizationSettings(image_height, image_width, tanfovx, tanfovy, bg, scale_modifier,
                                      viewmatrix, projmatrix, sh_degree, campos, prefiltered, debug,
                                      antialiasing)
    color, radii, invdepth = GaussianRasterizer(s)(means3D, means2D, opacities, shs=..., scales=..., rotations=...)
    color, radii, invdepth, stats = GaussianRasterizer(s)(..., return_stats=True)

shs is [P, K, 3], or a pair (DC [P, 1, 3], higher bands [P, 15, 3]): the model's two parameters, read by the
kernels in place instead of concatenated on every call. Rotations may have any norm (normalised inside).

return_stats=True gives the dict of accum_weights, area_proj and area_max [P]; a collection of those names
gives only them, e.g. ("area_max",) skips the two per-contribution atomics the other two cost.

fused_photometric_loss(render, targets, weights, lambda_dssim) is the training step's L1 + SSIM image loss
in one kernel each way (loss.py); HAS_FUSED_LOSS says whether the compiled extension has it.
"""
from collections import namedtuple

import torch
import torch.nn as nn

from . import _C
from .loss import HAS_FUSED_LOSS, fused_photometric_loss  # noqa: F401 (re-exported)

GaussianRasterizationSettings = namedtuple(
    "GaussianRasterizationSettings",
    ["image_height", "image_width", "tanfovx", "tanfovy", "bg", "scale_modifier", "viewmatrix",
     "projmatrix", "sh_degree", "campos", "prefiltered", "debug", "antialiasing"])


STAT_NAMES = ("accum_weights", "area_proj", "area_max")


def stats_request(return_stats):
    """return_stats (False, True = all, one name, or a collection of STAT_NAMES) -> (the requested names in
    STAT_NAMES order, kernel mode: 0 none, 1 area_max only, 2 all)."""
    if return_stats is None or isinstance(return_stats, bool):
        names = STAT_NAMES if return_stats else ()
    else:
        asked = {return_stats} if isinstance(return_stats, str) else set(return_stats)
        if asked - set(STAT_NAMES):
            raise ValueError(f"unknown stats {sorted(asked - set(STAT_NAMES))}; choose from {STAT_NAMES}")
        names = tuple(n for n in STAT_NAMES if n in asked)
    return names, (0 if not names else 1 if names == ("area_max",) else 2)


def sh_parts(shs):
    """shs [P, K, 3] -> (shs, None); (DC [P, 1, 3], rest [P, 15, 3]) -> the pair; another pair (a model of
    SH degree < 3) -> its concatenation (the kernels read split rows only for 16 coefficients)."""
    if not isinstance(shs, (tuple, list)):
        return shs, None
    dc, rest = shs
    if dc.dim() == 3 and dc.shape[1] == 1 and rest.dim() == 3 and rest.shape[1] == 15:
        return dc, rest
    return torch.cat([dc, rest], dim=1), None


def _empty(device):
    return torch.empty(0, device=device, dtype=torch.float32)


def _prep(t, device):
    """None -> empty placeholder; else float32 contiguous (differentiable conversion)."""
    if t is None:
        return _empty(device)
    return t.float().contiguous()


class _RasterizeGaussians(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means3D, means2D, shs, sh_rest, colors_precomp, opacities, scales, rotations, cov3D_precomp,
                settings, stats_mode):
        s = settings
        dev = means3D.device
        bg = s.bg.to(device=dev, dtype=torch.float32).contiguous()
        view = s.viewmatrix.to(device=dev, dtype=torch.float32).contiguous()
        proj = s.projmatrix.to(device=dev, dtype=torch.float32).contiguous()
        campos = s.campos.to(device=dev, dtype=torch.float32).contiguous()
        (color, invdepth, radii, rank, xy, conic_op, rgbd, point_list, ranges, final_T, n_contrib,
         accum_w, area_proj, area_max) = _C.rasterize_forward(
            bg, means3D, colors_precomp, opacities, scales, rotations, float(s.scale_modifier), cov3D_precomp,
            view, proj, float(s.tanfovx), float(s.tanfovy), int(s.image_height), int(s.image_width), shs, sh_rest,
            int(s.sh_degree), campos, bool(s.prefiltered), bool(s.antialiasing), int(stats_mode),
            bool(s.debug))
        ctx.settings = s
        ctx.means2D_shape = means2D.shape
        ctx.opacity_shape = opacities.shape
        ctx.save_for_backward(means3D, shs, sh_rest, colors_precomp, opacities, scales, rotations, cov3D_precomp,
                              rank, xy, conic_op, rgbd, point_list, ranges, final_T, n_contrib, bg, view, proj, campos)
        ctx.mark_non_differentiable(radii, accum_w, area_proj, area_max)
        return color, radii, invdepth, accum_w, area_proj, area_max

    @staticmethod
    def backward(ctx, grad_color, grad_radii, grad_invdepth, *_):
        s = ctx.settings
        (means3D, shs, sh_rest, colors_precomp, opacities, scales, rotations, cov3D_precomp, rank, xy, conic_op,
         rgbd, point_list, ranges, final_T, n_contrib, bg, view, proj, campos) = ctx.saved_tensors
        shape2 = ctx.means2D_shape
        n2 = 2 if len(shape2) == 2 and shape2[-1] == 2 else 3
        (d_means2D, d_colors, d_opacity, d_means3D, d_cov3D, d_shs, d_scales, d_rotations,
         d_sh_rest) = _C.rasterize_backward(
            bg, means3D, colors_precomp, opacities, scales, rotations, float(s.scale_modifier),
            cov3D_precomp, view, proj, float(s.tanfovx), float(s.tanfovy), grad_color,
            grad_invdepth, shs, sh_rest, int(s.sh_degree), campos, rank, xy, conic_op, rgbd, point_list, ranges,
            final_T, n_contrib, n2, bool(s.antialiasing), bool(s.debug))
        if d_means2D.shape != shape2:
            d_means2D = d_means2D[:, :shape2[-1]].reshape(shape2) if len(shape2) == 2 else d_means2D.reshape(shape2)
        d_opacity = d_opacity.reshape(ctx.opacity_shape)

        def opt(g, t):
            return g if t.numel() > 0 else None

        return (d_means3D, d_means2D, opt(d_shs, shs), opt(d_sh_rest, sh_rest), opt(d_colors, colors_precomp),
                d_opacity, opt(d_scales, scales), opt(d_rotations, rotations), opt(d_cov3D, cov3D_precomp), None,
                None)


def rasterize_gaussians(means3D, means2D, sh, colors_precomp, opacities, scales, rotations, cov3D_precomp,
                        raster_settings, stats_mode=0):
    dev = means3D.device
    sh, sh_rest = sh_parts(sh)
    args = [_prep(t, dev) for t in (means3D, means2D, sh, sh_rest, colors_precomp, opacities, scales, rotations,
                                    cov3D_precomp)]
    return _RasterizeGaussians.apply(*args, raster_settings, int(stats_mode))


class GaussianRasterizer(nn.Module):
    def __init__(self, raster_settings):
        super().__init__()
        self.raster_settings = raster_settings

    def markVisible(self, positions):
        """bool [P]: True where the point is in front of the near plane (view z > 0.2)."""
        with torch.no_grad():
            s = self.raster_settings
            dev = positions.device
            return _C.mark_visible(positions.float().contiguous(), s.viewmatrix.to(dev, torch.float32).contiguous(),
                                   s.projmatrix.to(dev, torch.float32).contiguous())

    def forward(self, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None, rotations=None,
                cov3D_precomp=None, return_stats=False):
        s = self.raster_settings
        if (shs is None) == (colors_precomp is None):
            raise ValueError("provide exactly one of shs or colors_precomp")
        if ((scales is None or rotations is None) and cov3D_precomp is None) or \
                (scales is not None and cov3D_precomp is not None):
            raise ValueError("provide either scales and rotations, or cov3D_precomp")
        if not means3D.is_cuda:
            raise ValueError("diff_gaussian_rasterization needs CUDA tensors; use the PyTorch rasterizer on CPU")
        if s.image_width < 1 or s.image_height < 1:
            raise ValueError(f"image_width x image_height is {s.image_width}x{s.image_height}: both must be at least 1")
        if shs is not None and any(t.dim() != 3 for t in (shs if isinstance(shs, (tuple, list)) else (shs,))):
            raise ValueError("shs must be [P, K, 3] or a pair of [P, 1, 3] and [P, K - 1, 3] tensors")
        names, mode = stats_request(return_stats)
        color, radii, invdepth, aw, ap, am = rasterize_gaussians(
            means3D, means2D, shs, colors_precomp, opacities, scales, rotations, cov3D_precomp, s, mode)
        if names:
            stats = dict(accum_weights=aw, area_proj=ap, area_max=am)
            return color, radii, invdepth, {n: stats[n] for n in names}
        return color, radii, invdepth
