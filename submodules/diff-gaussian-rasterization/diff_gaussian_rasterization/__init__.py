"""Differentiable tile rasterizer of 3D Gaussians (CUDA).

Same API (graphdeco's interface) as the per-stage reference (reference.py) and the chunked PyTorch rasterizer
(gaussian_renderer/torch_rasterizer.py):

    s = GaussianRasterizationSettings(image_height, image_width, tanfovx, tanfovy, bg, scale_modifier,
                                      viewmatrix, projmatrix, sh_degree, campos, prefiltered, debug,
                                      antialiasing)
    color, radii, invdepth = GaussianRasterizer(s)(means3D, means2D, opacities, shs=..., scales=..., rotations=...)
    color, radii, invdepth, stats = GaussianRasterizer(s)(..., return_stats=True)

shs is [P, K, 3], or a pair (DC [P, 1, 3], higher bands [P, 15, 3]): the model's two parameters, read by the
kernels in place instead of concatenated on every call. Rotations may have any norm (normalised inside).

The settings' optional pair_capacity and pair_meta (contract.py) select the capacity mode: the forward then
reads no count back to the host (a CUDA graph can hold it), and pair_meta tells afterwards on the device how many
pairs there were and whether they fitted.

return_stats=True gives the dict of accum_weights, area_proj and area_max [P]; a collection of those names
gives only them, e.g. ("area_max",) skips the two per-contribution atomics the other two cost. The per-pixel
max_contributor [H, W] (contract.PIXEL_STAT_NAMES: each pixel's Gaussian of the largest weight, -1 for none) is
given when asked for by name.

fused_photometric_loss(render, targets, weights, lambda_dssim) is the training step's L1 + SSIM image loss
in one kernel each way (loss.py); HAS_FUSED_LOSS says whether the compiled extension has it.

stage_outputs(settings, means3D, opacities, ...) runs only the preprocessing kernel and returns its per-Gaussian
outputs (means2D, depths, conics, opacities, colors, radii, tiles_touched): what tests compare, stage by stage,
with reference.preprocess, the readable per-stage PyTorch reference (reference.py).

contract.py (settings, constants, input checks) and reference.py are pure Python: they import without the
compiled extension, which is loaded when present (``_C`` is None in a source tree that was not built).
"""
import glob
import os

import torch

from . import contract
from .contract import (GaussianRasterizationSettings, PIXEL_STAT_NAMES, STAT_NAMES, check_image_size,  # noqa: F401
                       check_inputs, stats_request)

try:
    from . import _C
except ImportError as exc:  # not built: contract and reference still work; extension() says how to build
    _C, _C_ERROR = None, exc

from .loss import HAS_FUSED_LOSS, fused_photometric_loss  # noqa: F401,E402 (re-exported)


def extension():
    """The compiled kernels (the _C module); ImportError with the build command where it was not built."""
    if _C is None:
        built = glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_C*"))
        why = f"its build does not load ({_C_ERROR})" if built else "it was not built"
        raise ImportError(f"diff_gaussian_rasterization has no CUDA kernels here: {why}; run `pip install "
                          "--no-build-isolation ./submodules/diff-gaussian-rasterization`")
    return _C


def sh_parts(shs):
    """shs [P, K, 3] -> (shs, None); (DC [P, 1, 3], rest [P, 15, 3]) -> the pair; another pair (a model of
    SH degree < 3) -> its concatenation (the kernels read split rows only for 16 coefficients)."""
    if not isinstance(shs, (tuple, list)):
        return shs, None
    dc, rest = shs
    if dc.dim() == 3 and dc.shape[1] == 1 and rest.dim() == 3 and rest.shape[1] == 15:
        return dc, rest
    return torch.cat([dc, rest], dim=1), None


def _camera(s, device):
    """The settings' view and projection matrices and camera centre as float32 contiguous tensors on ``device``."""
    return tuple(t.to(device=device, dtype=torch.float32).contiguous() for t in (s.viewmatrix, s.projmatrix, s.campos))


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
        view, proj, campos = _camera(s, dev)
        (color, invdepth, radii, rank, xy, conic_op, rgbd, point_list, ranges, final_T, n_contrib,
         accum_w, area_proj, area_max, max_id) = extension().rasterize_forward(
            bg, means3D, colors_precomp, opacities, scales, rotations, float(s.scale_modifier), cov3D_precomp,
            view, proj, float(s.tanfovx), float(s.tanfovy), int(s.image_height), int(s.image_width), shs, sh_rest,
            int(s.sh_degree), campos, bool(s.prefiltered), bool(s.antialiasing), int(stats_mode),
            bool(s.debug), int(s.pair_capacity or 0),
            s.pair_meta if s.pair_meta is not None else torch.empty(0, device=dev, dtype=torch.int32))
        ctx.set_materialize_grads(False)  # (backward: None for an output the loss does not use)
        ctx.settings = s
        ctx.means2D_shape = means2D.shape
        ctx.opacity_shape = opacities.shape
        ctx.save_for_backward(means3D, shs, sh_rest, colors_precomp, opacities, scales, rotations, cov3D_precomp,
                              rank, xy, conic_op, rgbd, point_list, ranges, final_T, n_contrib, bg, view, proj, campos)
        ctx.mark_non_differentiable(radii, accum_w, area_proj, area_max, max_id)
        return color, radii, invdepth, accum_w, area_proj, area_max, max_id

    @staticmethod
    def backward(ctx, grad_color, grad_radii, grad_invdepth, *_):
        s = ctx.settings
        (means3D, shs, sh_rest, colors_precomp, opacities, scales, rotations, cov3D_precomp, rank, xy, conic_op,
         rgbd, point_list, ranges, final_T, n_contrib, bg, view, proj, campos) = ctx.saved_tensors
        shape2 = ctx.means2D_shape
        n2 = 2 if len(shape2) == 2 and shape2[-1] == 2 else 3
        # no gradient of the inverse depth (not in the loss): an empty one, and the render backward skips its terms;
        # none of the colour (only the depth in the loss): zeros, which the kernel reads as any other
        if grad_invdepth is None:
            grad_invdepth = _empty(bg.device)
        if grad_color is None:
            grad_color = torch.zeros(3, *final_T.shape, device=final_T.device)
        (d_means2D, d_colors, d_opacity, d_means3D, d_cov3D, d_shs, d_scales, d_rotations,
         d_sh_rest) = extension().rasterize_backward(
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


def stage_outputs(settings, means3D, opacities, shs=None, colors_precomp=None, scales=None, rotations=None,
                  cov3D_precomp=None):
    """The preprocessing kernel alone (no gradient): dict of means2D [P, 2] (pixels), depths [P] (view z),
    conics [P, 3], opacities [P] (with the antialiasing factor), colors [P, 3], radii [P] int32 and
    tiles_touched [P] int32; culled rows (radius 0) are zero. reference.preprocess computes the same keys but
    tiles_touched, which reference.tile_rects bounds (the radius's rect; the kernels drop tiles the ellipse misses)."""
    s = settings
    check_inputs(shs, colors_precomp, scales, rotations, cov3D_precomp)
    dev = means3D.device
    sh, sh_rest = sh_parts(shs) if shs is not None else (None, None)
    args = [_prep(t, dev) for t in (means3D, colors_precomp, opacities, scales, rotations, cov3D_precomp, sh,
                                    sh_rest)]
    view, proj, campos = _camera(s, dev)
    with torch.no_grad():
        radii, xy, conic_op, rgbd, tiles = extension().preprocess_forward(
            *args[:5], float(s.scale_modifier), args[5], view, proj, float(s.tanfovx), float(s.tanfovy),
            int(s.image_height), int(s.image_width), args[6], args[7], int(s.sh_degree), campos,
            bool(s.antialiasing))
    drawn = radii > 0
    depths = torch.where(drawn, 1.0 / torch.where(drawn, rgbd[:, 3], 1.0), 0.0)
    return dict(means2D=xy, depths=depths, conics=conic_op[:, :3], opacities=conic_op[:, 3], colors=rgbd[:, :3],
                radii=radii, tiles_touched=tiles)


class GaussianRasterizer(contract.RasterizerModule):
    def markVisible(self, positions):
        """bool [P]: True where the point is in front of the near plane (view z > 0.2), by our kernel."""
        with torch.no_grad():
            s = self.raster_settings
            dev = positions.device
            view, proj, _ = _camera(s, dev)
            return extension().mark_visible(positions.float().contiguous(), view, proj)

    def forward(self, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None, rotations=None,
                cov3D_precomp=None, return_stats=False):
        s = self.raster_settings
        check_inputs(shs, colors_precomp, scales, rotations, cov3D_precomp)
        if not means3D.is_cuda:
            raise ValueError("diff_gaussian_rasterization needs CUDA tensors; use the PyTorch rasterizer on CPU")
        check_image_size(s)
        names, mode = stats_request(return_stats)
        color, radii, invdepth, aw, ap, am, mc = rasterize_gaussians(
            means3D, means2D, shs, colors_precomp, opacities, scales, rotations, cov3D_precomp, s, mode)
        if names:
            # (max_contributor as int64, as the PyTorch rasterizers give it: asked for by name, off the training step)
            stats = dict(accum_weights=aw, area_proj=ap, area_max=am,
                         max_contributor=mc.long() if "max_contributor" in names else mc)
            return color, radii, invdepth, {n: stats[n] for n in names}
        return color, radii, invdepth
