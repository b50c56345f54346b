"""Image metrics and conversions."""
import numpy as np
import torch


def psnr(img1, img2):
    """PSNR in dB of images in [0, 1]; over the whole image ([C, H, W] or [B, C, H, W] -> scalar/[B])."""
    dims = tuple(range(-3, 0))
    mse = ((img1 - img2) ** 2).mean(dim=dims)
    return 20 * torch.log10(1.0 / torch.sqrt(mse.clamp_min(1e-20)))


def to_uint8(img):
    """[3, H, W] float in [0, 1] -> [H, W, 3] uint8 (rounded, as saving a PNG does)."""
    return (img.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())


def from_uint8(arr):
    """[H, W, C] uint8 -> [C, H, W] float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
