"""Image losses: L1 and SSIM (11x11 Gaussian window, sigma 1.5, zero padding 'same')."""
import functools

import torch
import torch.nn.functional as F

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def l1_loss(a, b):
    return (a - b).abs().mean()


@functools.lru_cache(maxsize=8)
def _window(size, sigma, channels, device, dtype):
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    w = (g[:, None] @ g[None, :]).to(device=device, dtype=dtype)
    return w.expand(channels, 1, size, size).contiguous()


def ssim_map(img1, img2, window_size=11, sigma=1.5):
    """Per-pixel SSIM of [C, H, W] or [B, C, H, W] images in [0, 1]."""
    squeeze = img1.dim() == 3
    if squeeze:
        img1, img2 = img1[None], img2[None]
    C = img1.shape[1]
    w = _window(window_size, sigma, C, img1.device, img1.dtype)
    pad = window_size // 2
    # one grouped conv over the five moments instead of five separate convolutions
    stack = torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2], dim=1)
    mom = F.conv2d(stack, w.repeat(5, 1, 1, 1), padding=pad, groups=5 * C)
    mu1, mu2, e11, e22, e12 = mom.split(C, dim=1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    m = ((2 * mu12 + C1) * (2 * s12 + C2)) / ((mu1_sq + mu2_sq + C1) * (s1 + s2 + C2))
    return m[0] if squeeze else m


def ssim(img1, img2, window_size=11, sigma=1.5):
    return ssim_map(img1, img2, window_size, sigma).mean()


def photometric_loss(render, target, lambda_dssim=0.2):
    """(1 - lambda) L1 + lambda (1 - SSIM): the 3DGS image loss, also used for distillation."""
    return (1.0 - lambda_dssim) * l1_loss(render, target) + lambda_dssim * (1.0 - ssim(render, target))
