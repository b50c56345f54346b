"""3DGS PLY files -> what a splat viewer draws: centres, 3x3 covariances, RGB and opacity (numpy only).

The conversion follows the parameterisation train.py saves (scene/gaussian_model.py):

* centre = (x, y, z)
* covariance = R S S^T R^T with S = diag(exp(scale_0..2)) and R the rotation of the quaternion
  (rot_0..3 = w, x, y, z) normalised to unit length (a zero quaternion is the identity)
* colour = clamp(0.5 + C0 * f_dc, 0, 1): the view-independent (degree-0) part of the spherical harmonics
* opacity = sigmoid(opacity)

Viewers that store covariances as float16 (viser does) lose small Gaussians to underflow (a standard
deviation of 1e-3 has a variance of 1e-6, below float16's normal range), so :func:`to_splats` can express
everything in a ``unit`` of length (the median largest standard deviation): centres / unit and covariances
/ unit^2, to be drawn by a scene node scaled by ``unit``.
"""
import os

import numpy as np
from plyfile import PlyData, PlyElementParseError, PlyHeaderParseError

from utils.errors import UserError
from utils.general_utils import nonfinite_rows
from utils.sh_utils import C0

FIELDS = dict(xyz=("x", "y", "z"), f_dc=("f_dc_0", "f_dc_1", "f_dc_2"), opacity=("opacity",),
              scale=("scale_0", "scale_1", "scale_2"), rot=("rot_0", "rot_1", "rot_2", "rot_3"))
MAX_LOG_SCALE = 20.0  # exp(20) = 5e8: far beyond any real Gaussian; keeps exp() and its square finite
FLOAT16_MAX_VARIANCE = 6.0e4  # in units^2, below float16's largest value (65504)


def ply_vertex_count(path):
    """Number of Gaussians (vertices) from a PLY header alone; UserError when it is not a PLY file."""
    try:
        with open(path, "rb") as f:
            if f.readline().strip() != b"ply":
                raise UserError(f"{path} is not a PLY file")
            for _ in range(10000):
                line = f.readline()
                if not line or line.strip() == b"end_header":
                    break
                parts = line.split()
                if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"vertex":
                    return int(parts[2])
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the PLY header of {path} ({exc.__class__.__name__}: {exc})")
    raise UserError(f"{path} has no 'element vertex' in its PLY header: is it a 3DGS point_cloud.ply?")


def read_gaussians(path):
    """The raw parameters of a 3DGS PLY as float32 arrays: xyz [N, 3], f_dc [N, 3], opacity [N],
    scale [N, 3] (log), rot [N, 4] (w, x, y, z, any norm). Missing properties, unreadable files and
    non-finite values are UserErrors naming the file."""
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist")
    try:
        vertex = PlyData.read(path)["vertex"]  # binary files are memory-mapped: only these columns are read
        names = {p.name for p in vertex.properties}
        missing = [n for cols in FIELDS.values() for n in cols if n not in names]
        if missing:
            raise UserError(f"{path} lacks the 3DGS properties {', '.join(missing)}: is it a 3DGS point_cloud.ply?")
        raw = {k: np.stack([np.asarray(vertex[c], dtype=np.float32) for c in cols], axis=1)
               for k, cols in FIELDS.items()}
    except (OSError, ValueError, KeyError, IndexError, PlyHeaderParseError, PlyElementParseError) as exc:
        raise UserError(f"cannot read Gaussians from {path} ({exc.__class__.__name__}: {exc}); "
                        f"is it a 3DGS point_cloud.ply?")
    raw["opacity"] = raw["opacity"][:, 0]
    any_bad, names = nonfinite_rows(raw)
    if any_bad.any():
        which = ", ".join(names)
        raise UserError(f"{path}: {int(any_bad.sum())} of {len(any_bad)} Gaussians have non-finite {which} values "
                        f"(NaN or infinity; first at index {int(np.argmax(any_bad))}): the model diverged or the "
                        f"file is damaged")
    if len(raw["xyz"]) == 0:
        raise UserError(f"{path} holds no Gaussians")
    return raw


def quaternions_to_matrices(q):
    """[N, 4] quaternions (w, x, y, z), any norm -> rotation matrices [N, 3, 3]; zero maps to the identity."""
    q = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), np.array([1.0, 0.0, 0.0, 0.0]))
    w, x, y, z = q.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=1).reshape(-1, 3, 3)


def covariances(log_scales, quaternions):
    """Sigma = R diag(exp(s))^2 R^T, [N, 3, 3] float64."""
    s = np.exp(np.clip(np.asarray(log_scales, dtype=np.float64), -MAX_LOG_SCALE, MAX_LOG_SCALE))
    M = quaternions_to_matrices(quaternions) * s[:, None, :]  # R S: column j of R times s_j
    return M @ M.transpose(0, 2, 1)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def dc_to_rgb(f_dc):
    return np.clip(0.5 + C0 * np.asarray(f_dc, dtype=np.float64), 0.0, 1.0)


def length_unit(log_scales):
    """Median largest standard deviation: the length unit that keeps covariances inside float16's range."""
    return float(np.exp(np.median(np.clip(np.asarray(log_scales, np.float64), -MAX_LOG_SCALE,
                                          MAX_LOG_SCALE).max(axis=1))))


def visibility_order(raw):
    """Indices of the Gaussians, most visible first (opacity x projected area ~ exp(s0 + s1 + s2)^(2/3));
    keeping a prefix keeps the Gaussians that cover the most of the image."""
    log_area = (2.0 / 3.0) * np.clip(raw["scale"].astype(np.float64), -MAX_LOG_SCALE, MAX_LOG_SCALE).sum(axis=1)
    score = np.log(np.maximum(sigmoid(raw["opacity"]), 1e-30)) + log_area
    return np.argsort(-score, kind="stable")


def to_splats(raw, indices=None, unit=1.0):
    """Viewer arrays of the Gaussians ``indices`` (default: all) in a length ``unit``: dict of float32
    centers [K, 3] (/ unit), covariances [K, 3, 3] (/ unit^2, the largest standard deviations capped so every
    entry fits float16), rgbs [K, 3] in [0, 1], opacities [K, 1] in [0, 1]."""
    sel = (lambda a: a) if indices is None else (lambda a: a[indices])
    log_s = np.clip(sel(raw["scale"]).astype(np.float64) - np.log(unit), -MAX_LOG_SCALE,
                    0.5 * np.log(FLOAT16_MAX_VARIANCE))
    return dict(centers=(sel(raw["xyz"]).astype(np.float64) / unit).astype(np.float32),
                covariances=covariances(log_s, sel(raw["rot"])).astype(np.float32),
                rgbs=dc_to_rgb(sel(raw["f_dc"])).astype(np.float32),
                opacities=sigmoid(sel(raw["opacity"]))[:, None].astype(np.float32))
