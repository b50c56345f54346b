"""Monocular inverse-depth maps on disk: 16-bit PNGs (larger = nearer), read by training and by make_depth_scale."""
import cv2
import numpy as np

from utils.errors import UserError
from utils.image_io import read_image_file


def read_inverse_depth(path):
    """16-bit (or 8-bit) PNG -> float32 [H, W] in [0, 1]; the first channel of a colour image."""
    raw = read_image_file(path, "depth map")
    if raw.ndim == 3:
        raw = raw[..., 0]
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / 65535.0
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    return raw.astype(np.float32)


def write_inverse_depth(path, inv):
    """float [H, W] in [0, 1] -> 16-bit PNG (the inverse of read_inverse_depth)."""
    q = np.clip(np.round(np.asarray(inv, dtype=np.float64) * 65535.0), 0, 65535).astype(np.uint16)
    if not cv2.imwrite(path, q):
        raise UserError(f"cannot write {path}")
