"""Camera matrices in the graphdeco convention (matrices are stored transposed: p_row @ M)."""
import math

import numpy as np
import torch


def world_to_view(R, t, translate=np.zeros(3), scale=1.0):
    """4x4 world-to-camera from R (camera-to-world rotation, i.e. the transpose of COLMAP's) and t."""
    Rt = np.zeros((4, 4))
    Rt[:3, :3] = R.transpose()
    Rt[:3, 3] = t
    Rt[3, 3] = 1.0
    C2W = np.linalg.inv(Rt)
    C2W[:3, 3] = (C2W[:3, 3] + translate) * scale
    return np.float32(np.linalg.inv(C2W))


def projection_matrix(znear, zfar, fovX, fovY):
    """OpenGL-like perspective with z mapped so that depth is positive in front of the camera."""
    tan_y, tan_x = math.tan(fovY / 2), math.tan(fovX / 2)
    top, right = tan_y * znear, tan_x * znear
    P = torch.zeros(4, 4)
    P[0, 0] = znear / right
    P[1, 1] = znear / top
    P[3, 2] = 1.0
    P[2, 2] = zfar / (zfar - znear)
    P[2, 3] = -(zfar * znear) / (zfar - znear)
    return P


def look_at(position, target, up):
    """World-to-camera rotation [3, 3] (COLMAP's: rows right, down, forward in world coordinates) of a camera at
    ``position`` looking at ``target`` with ``up`` pointing up on screen (as nearly as it can)."""
    def unit(v):
        return v / max(np.linalg.norm(v), 1e-12)

    f = unit(np.asarray(target, np.float64) - np.asarray(position, np.float64))
    right = np.cross(f, unit(np.asarray(up, np.float64)))
    if np.linalg.norm(right) < 1e-6:  # looking straight along up: pick any perpendicular
        right = np.cross(np.eye(3)[int(np.argmin(np.abs(f)))], f)
    right = unit(right)
    return np.stack([right, np.cross(f, right), f])


def focal2fov(focal, pixels):
    return 2 * math.atan(pixels / (2 * focal))


def quaternion_to_matrix(q):
    """q: [P, 4] (w, x, y, z), any norm; a zero quaternion maps to the identity. Returns [P, 3, 3]."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def matrix_to_quaternion(R):
    """Rotation matrices [P, 3, 3] -> unit quaternions [P, 4] (w, x, y, z), w >= 0."""
    m = R.reshape(-1, 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # four candidate solutions; pick the numerically best (largest denominator) per matrix
    qa = torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1)
    qb = torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1)
    qc = torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1)
    qd = torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1)
    cand = torch.stack([qa, qb, qc, qd], 1)  # [P, 4, 4]
    diag = torch.stack([qa[:, 0], qb[:, 1], qc[:, 2], qd[:, 3]], 1)
    best = diag.argmax(1)
    q = cand[torch.arange(R.shape[0], device=R.device), best]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[:, :1] < 0, -q, q)
