"""Camera: intrinsics, world-to-camera pose and the image (kept on the CPU until a step needs it)."""
import math

import numpy as np
import torch

from utils.general_utils import to_staging
from utils.graphics_utils import projection_matrix, world_to_view


def unit_image(image):
    """A uint8 image as float in [0, 1]: one kernel (the conversion happens in the division), the values those of
    ``image.float() / 255`` (the step's graph and the eager step share it)."""
    return torch.div(image, 255.0)


class Camera:
    """A training or test view.

    R is camera-to-world rotation (the transpose of COLMAP's world-to-camera), T the world-to-camera
    translation, as graphdeco. ``image`` is uint8 [3, H, W] (or None for pose-only cameras) on
    ``data_device``; ``alpha`` an optional uint8 [1, H, W] mask.
    """

    def __init__(self, uid, R, T, FoVx, FoVy, width, height, image_name, image=None,
                 data_device="cpu", znear=0.01, zfar=100.0, depth=None, depth_reliable=False):
        self.uid = uid
        self.R, self.T = np.asarray(R, dtype=np.float64), np.asarray(T, dtype=np.float64)
        self.FoVx, self.FoVy = float(FoVx), float(FoVy)
        self.image_width, self.image_height = int(width), int(height)
        self.image_name = image_name
        self.image = to_staging(image, data_device) if image is not None else None
        self.depth = to_staging(depth, data_device) if depth is not None else None  # [1, H, W] inverse depth
        self.depth_reliable = depth_reliable
        self.znear, self.zfar = znear, zfar
        self.world_view_transform = torch.tensor(world_to_view(self.R, self.T)).transpose(0, 1)
        self.projection_matrix = projection_matrix(znear, zfar, self.FoVx, self.FoVy).transpose(0, 1)
        self.full_proj_transform = self.world_view_transform @ self.projection_matrix
        self.camera_center = self.world_view_transform.inverse()[3, :3]
        self.tanfovx = math.tan(self.FoVx * 0.5)
        self.tanfovy = math.tan(self.FoVy * 0.5)

    def original_image(self, device):
        """The ground-truth image as float [3, H, W] in [0, 1] on ``device``."""
        return unit_image(self.image.to(device, non_blocking=True))

    def matrices(self, device):
        """(viewmatrix, projmatrix, campos) on ``device``, cached per device; the first upload of each goes
        through pinned memory, so it does not make the host wait for the GPU. They are views of
        packed_matrices(device)."""
        return self._on(device)[1]

    def packed_matrices(self, device):
        """matrices(device) as one flat float [35] tensor: one copy moves a pose into a CUDA graph's buffers."""
        return self._on(device)[0]

    def _on(self, device):
        cache = self.__dict__.setdefault("_mats", {})
        key = str(device)
        if key not in cache:
            flat = torch.cat([m.reshape(-1) for m in (self.world_view_transform, self.full_proj_transform,
                                                      self.camera_center)])
            packed = to_staging(flat, "cpu").to(device, non_blocking=True)
            cache[key] = packed, unpack_matrices(packed)
        return cache[key]


def unpack_matrices(packed):
    """(viewmatrix [4, 4], projmatrix [4, 4], campos [3]): views of a Camera's packed_matrices."""
    return packed[:16].view(4, 4), packed[16:32].view(4, 4), packed[32:35]
