"""The rasterizer contract shared by every backend: settings, the kernels' constants, the stats request and the
input checks. Pure Python (no compiled extension): gaussian_renderer's PyTorch rasterizer imports it too.
"""
from collections import namedtuple
import math

import torch

# graphdeco's thirteen fields, then two of ours with defaults (the CUDA rasterizer's capacity mode; the other
# backends ignore them): pair_capacity > 0 sizes the (tile, Gaussian) pair buffers so that the forward needs no
# host-device sync, and pair_meta (int32 [3] on the GPU) receives [visible Gaussians, pairs, overflow]; overflow
# is 1 when the pairs did not fit (the deepest were dropped from that render).
GaussianRasterizationSettings = namedtuple(
    "GaussianRasterizationSettings",
    ["image_height", "image_width", "tanfovx", "tanfovy", "bg", "scale_modifier", "viewmatrix",
     "projmatrix", "sh_degree", "campos", "prefiltered", "debug", "antialiasing", "pair_capacity", "pair_meta"],
    defaults=(0, None))

# the kernels' constants (csrc/common.cuh)
TILE = 16  # side of a screen tile in pixels
NEAR_Z = 0.2  # a Gaussian is drawn only where its view z > NEAR_Z
ALPHA_MIN = 1.0 / 255.0  # smaller alphas are skipped
ALPHA_MAX = 0.99  # alpha is clamped here
T_MIN = 1e-4  # a pixel stops before the contribution that would bring its transmittance below this
DILATION = 0.3  # pixels^2 added to the 2D covariance's diagonal (low-pass filter)
AA_MIN_RATIO = 0.000025  # floor of det(cov2D) / det(dilated cov2D) in the antialiasing opacity factor
JACOBIAN_CLAMP = 1.3  # the projection's Jacobian uses x/z, y/z clamped to 1.3 tan(fov)
# a Gaussian whose colour (an image is in [0, 1]) exceeds this in magnitude is culled like a non-finite one:
# summed over pixels in the backward pass, colours near the float32 limit overflow to NaN gradients
COLOR_MAX = 1e15

STAT_NAMES = ("accum_weights", "area_proj", "area_max")
# per-pixel outputs asked for by name only (return_stats=True gives STAT_NAMES): max_contributor [H, W] int64 is the
# index of the Gaussian of the largest weight alpha T at each pixel (the one area_max counts; the front-most on
# ties), -1 where none contributes
PIXEL_STAT_NAMES = ("max_contributor",)


def stats_request(return_stats):
    """return_stats (False, True = every STAT_NAMES, one name, or a collection of STAT_NAMES and PIXEL_STAT_NAMES)
    -> (the requested names in that order, the CUDA kernels' stats mode: 0 none, 1 area_max and max_contributor
    only, 2 all)."""
    known = STAT_NAMES + PIXEL_STAT_NAMES
    if return_stats is None or isinstance(return_stats, bool):
        names = STAT_NAMES if return_stats else ()
    else:
        asked = {return_stats} if isinstance(return_stats, str) else set(return_stats)
        if asked - set(known):
            raise ValueError(f"unknown stats {sorted(asked - set(known))}; choose from {known}")
        names = tuple(n for n in known if n in asked)
    return names, (0 if not names else 1 if set(names) <= {"area_max", "max_contributor"} else 2)


def check_inputs(shs, colors_precomp, scales, rotations, cov3D_precomp):
    """ValueError unless the colour comes from exactly one of shs / colors_precomp and the shape from exactly one
    of (scales, rotations) / cov3D_precomp, and shs is [P, K, 3] or a pair of [P, 1, 3] and [P, K - 1, 3]."""
    if (shs is None) == (colors_precomp is None):
        raise ValueError("provide exactly one of shs or colors_precomp")
    if ((scales is None or rotations is None) and cov3D_precomp is None) or \
            (scales is not None and cov3D_precomp is not None):
        raise ValueError("provide either scales and rotations, or cov3D_precomp")
    if shs is not None and any(t.dim() != 3 for t in (shs if isinstance(shs, (tuple, list)) else (shs,))):
        raise ValueError("shs must be [P, K, 3] or a pair of [P, 1, 3] and [P, K - 1, 3] tensors")


def check_image_size(s):
    """ValueError for an image below 1x1 (no host-device sync: the GPU backends call it on every render)."""
    H, W = int(s.image_height), int(s.image_width)
    if H < 1 or W < 1:
        raise ValueError(f"image_width x image_height is {W}x{H}: both must be at least 1")


def check_settings(s):
    """ValueError for settings no image can come from: a size below 1x1, a field of view that is not positive
    and finite, non-finite camera matrices (reads the matrices: a sync on the GPU)."""
    check_image_size(s)
    for name in ("tanfovx", "tanfovy"):
        v = float(getattr(s, name))
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} is {v}: it must be positive and finite")
    for name in ("viewmatrix", "projmatrix", "campos"):
        if not bool(torch.isfinite(getattr(s, name)).all()):
            raise ValueError(f"{name} holds NaN or infinite values")


def sh_features(shs):
    """shs as one [P, K, 3] tensor; a pair (DC [P, 1, 3], higher bands [P, K - 1, 3]), the form render() passes
    so that the CUDA kernels read the model's two parameters in place, is concatenated."""
    return torch.cat(shs, dim=1) if isinstance(shs, (tuple, list)) else shs


def sh_degree_used(sh_degree, n_coeffs):
    """The SH degree the kernels evaluate: the requested one, at most the largest d <= 3 whose (d + 1)^2
    coefficients are all given (training stores 16 and raises the active degree over time)."""
    avail = 0
    while avail < 3 and (avail + 2) ** 2 <= n_coeffs:
        avail += 1
    return max(0, min(int(sh_degree), avail)) if n_coeffs else 0


class RasterizerModule(torch.nn.Module):
    """What every rasterizer module shares: its settings, and markVisible (view z > NEAR_Z) in PyTorch."""

    def __init__(self, raster_settings):
        super().__init__()
        self.raster_settings = raster_settings

    def markVisible(self, positions):
        """bool [P]: True where the point is in front of the near plane."""
        with torch.no_grad():
            view = self.raster_settings.viewmatrix.to(positions.device, positions.dtype)
            return (torch.cat([positions, torch.ones_like(positions[:, :1])], 1) @ view)[:, 2] > NEAR_Z
