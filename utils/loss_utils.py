"""Image losses: L1 and SSIM (11x11 Gaussian window, sigma 1.5, zero padding 'same')."""
import functools

import torch
import torch.nn.functional as F

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def backward_weighted(loss, weight):
    """``(weight * loss).backward()``; a weight of 1 without the multiplication, whose forward and backward are two
    kernels (a small model's step is bound by its launches). Not ``loss.backward(constant)``: a given gradient makes
    the first backward of a process import what takes it ~3 s (seen on an H200 with torch 2.11)."""
    (loss if weight == 1.0 else weight * loss).backward()


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
    """Per-pixel SSIM of [C, H, W] or [B, C, H, W] images in [0, 1]. ``img2`` may also hold K
    targets for one ``img1`` ([K, C, H, W] against [C, H, W]): then the K maps come from one
    convolution that computes img1's moments once."""
    squeeze = img1.dim() == 3 and img2.dim() == 3
    if img1.dim() == 3:
        img1 = img1[None]
    if img2.dim() == 3:
        img2 = img2[None]
    B, C = img1.shape[:2]
    K = img2.shape[0] // B
    w = _window(window_size, sigma, C, img1.device, img1.dtype)
    # one grouped conv over all moments: img1's two (shared by the K targets), then three per target
    y = img2.reshape(B, K * C, *img2.shape[2:])
    x_rep = img1 if K == 1 else img1.repeat(1, K, 1, 1)
    stack = torch.cat([img1, img1 * img1, y, y * y, x_rep * y], dim=1)
    mom = F.conv2d(stack, w.repeat(2 + 3 * K, 1, 1, 1), padding=window_size // 2, groups=(2 + 3 * K) * C)
    mu1, e11, mu2, e22, e12 = mom.split([C, C, K * C, K * C, K * C], dim=1)
    if K > 1:
        mu1, e11 = mu1.repeat(1, K, 1, 1), e11.repeat(1, K, 1, 1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    m = ((2 * mu12 + C1) * (2 * s12 + C2)) / ((mu1_sq + mu2_sq + C1) * (s1 + s2 + C2))
    m = m.reshape(B * K, C, *m.shape[2:])
    return m[0] if squeeze else m


def ssim(img1, img2, window_size=11, sigma=1.5):
    return ssim_map(img1, img2, window_size, sigma).mean()


def _fused_loss_module(render, target, lambda_dssim, extra):
    """Our CUDA extension when it can compute photometric_loss for these arguments (a float32 [3, H, W]
    CUDA render, constant targets of its shape and device, plain-number weights), else None."""
    if not (render.is_cuda and render.dim() == 3 and render.shape[0] == 3 and render.dtype == torch.float32):
        return None
    images = [target] if extra is None else [target, extra[0]]
    if any(not isinstance(t, torch.Tensor) or t.shape != render.shape or t.device != render.device
           or t.dtype not in (torch.float32, torch.float16) or t.requires_grad for t in images):
        return None
    if not isinstance(lambda_dssim, (int, float)) or (extra is not None and not isinstance(extra[1], (int, float))):
        return None
    from gaussian_renderer import cuda_extension  # noqa: PLC0415 (only when a CUDA render comes)
    mod = cuda_extension()
    return mod if mod and getattr(mod, "HAS_FUSED_LOSS", False) else None


def photometric_loss(render, target, lambda_dssim=0.2, extra=None):
    """(1 - lambda) L1 + lambda (1 - SSIM): the 3DGS image loss. ``extra`` = (image, weight) adds
    weight x the same loss against a second target (the student's mean teacher render), with both
    SSIMs from one convolution. A CUDA render goes through the fused kernels of our extension
    (diff_gaussian_rasterization.fused_photometric_loss); the code below is their specification. A target may be
    half precision (the student's stored teacher renders): it counts as its float32 values."""
    targets = [(target, 1.0)] if extra is None else [(target, 1.0), extra]
    mod = _fused_loss_module(render, target, lambda_dssim, extra)
    if mod:
        return mod.fused_photometric_loss(render, [t for t, _ in targets], [w for _, w in targets], lambda_dssim)
    targets = [(t.to(render.dtype), w) for t, w in targets]
    stacked = targets[0][0][None] if len(targets) == 1 else torch.stack([t for t, _ in targets])  # a view when alone
    s = ssim_map(render, stacked).mean(dim=(1, 2, 3))
    return sum(w * ((1.0 - lambda_dssim) * l1_loss(render, t) + lambda_dssim * (1.0 - s[k]))
               for k, (t, w) in enumerate(targets))
