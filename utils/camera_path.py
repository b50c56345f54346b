"""Smooth fly-through camera paths built from the training cameras (for ``render.py --video``).

Two kinds of capture, told apart by the spread of the cameras' viewing directions:

* **360 degrees** (the cameras surround the scene, e.g. Mip-NeRF 360, NeRF-synthetic): an ellipse
  around the scene in the plane perpendicular to the up direction, at the cameras' mean height,
  every frame looking at the scene centre (the point closest to all optical axes, least squares).
* **forward-facing** (LLFF-like, all cameras look roughly the same way): a spiral around the mean
  pose, every frame looking at a focus point in front of it.

Conventions are those of :class:`scene.cameras.Camera` (COLMAP): camera x right, y down, z forward;
``R`` is the camera-to-world rotation (columns = camera axes in world space), ``T = -R^T C`` the
world-to-camera translation of a camera centred at ``C``. The path cameras carry the first training
camera's intrinsics (FoV, image size) and no image.
"""
import math

import numpy as np

from scene.cameras import Camera
from utils.errors import UserError
from utils.graphics_utils import look_at

# resultant length of the cameras' horizontal viewing directions below which they "surround" the scene:
# a uniform arc of width w gives sin(w/2)/(w/2), so 0.7 ~ an arc wider than ~160 degrees; LLFF gives ~0.99
SURROUND_RESULTANT = 0.7


# ----------------------------------------------------------------------------------------------------------------
# pose helpers

def _normalize(v, eps=1e-12):
    v = np.asarray(v, dtype=np.float64)
    return v / max(np.linalg.norm(v), eps)


def camera_poses(cameras):
    """(centres [N, 3], forward [N, 3], up [N, 3]) in world space, float64."""
    if not cameras:
        raise UserError("a camera path needs at least one training camera")
    R = np.stack([np.asarray(c.R, dtype=np.float64) for c in cameras])  # [N, 3, 3] camera-to-world
    T = np.stack([np.asarray(c.T, dtype=np.float64) for c in cameras])  # [N, 3]
    centres = -np.einsum("nij,nj->ni", R, T)  # C = -R T
    forward = R[:, :, 2]  # camera +z in world space
    up = -R[:, :, 1]  # camera -y in world space
    return centres, forward, up


def make_camera(uid, R, position, ref, name, scale=1.0):
    """A pose-only Camera at ``position`` with rotation ``R`` (camera-to-world) and ``ref``'s intrinsics (its image
    size times ``scale``, at least one pixel a side: the same field of view)."""
    R = np.asarray(R, np.float64)
    T = -R.T @ np.asarray(position, np.float64)
    width, height = (max(1, round(ref.image_width * scale)), max(1, round(ref.image_height * scale)))
    return Camera(uid, R, T, ref.FoVx, ref.FoVy, width, height, name,
                  znear=getattr(ref, "znear", 0.01), zfar=getattr(ref, "zfar", 100.0))


# ----------------------------------------------------------------------------------------------------------------
# scene analysis

def focus_point(centres, forward):
    """The point closest (least squares) to all optical axes, and the conditioning of that problem
    (smallest / largest eigenvalue of sum(I - d d^T); near 0 when the axes are nearly parallel)."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c, d in zip(centres, forward):
        P = np.eye(3) - np.outer(d, d)  # projects onto the plane perpendicular to the axis
        A += P
        b += P @ c
    eig = np.linalg.eigvalsh(A)
    cond = float(eig[0] / max(eig[-1], 1e-12))
    point = np.linalg.lstsq(A, b, rcond=None)[0]
    return point, cond


def mean_up(up):
    u = up.mean(axis=0)
    if np.linalg.norm(u) < 1e-6:
        raise UserError("cannot tell which way is up: the training cameras' up vectors cancel out")
    return _normalize(u)


def is_360(cameras):
    """True when the cameras surround the scene (their viewing directions, seen from above, point in
    all directions); False for forward-facing captures where they all look roughly the same way."""
    _, forward, up = camera_poses(cameras)
    if len(cameras) < 2:
        return False
    u = mean_up(up)
    horiz = forward - np.outer(forward @ u, u)  # viewing directions projected onto the ground plane
    lengths = np.linalg.norm(horiz, axis=1)
    if lengths.mean() < 0.2:  # all looking (nearly) straight up or down: one common direction
        return False
    unit = horiz[lengths > 1e-6] / lengths[lengths > 1e-6, None]
    return float(np.linalg.norm(unit.mean(axis=0))) < SURROUND_RESULTANT


def _ground_axes(up):
    """Two unit vectors spanning the plane perpendicular to ``up``."""
    a = np.cross(up, np.eye(3)[int(np.argmin(np.abs(up)))])
    a = _normalize(a)
    return a, np.cross(up, a)


# ----------------------------------------------------------------------------------------------------------------
# paths

def ellipse_path(cameras, n_frames):
    """Cameras on an ellipse around the scene centre at the training cameras' mean height.

    The up direction is the mean camera up, refined to the normal of the plane of the camera centres
    when they spread clearly in two directions. The ellipse's axes are the principal directions of
    the camera centres around the scene centre in that plane; its radii reproduce their spread (a
    circle of cameras gives that circle). Frames are evenly spaced in angle, starting next to the
    first training camera, and close the loop (frame n would equal frame 0).
    """
    centres, forward, up = camera_poses(cameras)
    u = mean_up(up)
    if len(centres) >= 3:
        _, s, vt = np.linalg.svd(centres - centres.mean(axis=0))
        normal = vt[2] if vt[2] @ u >= 0 else -vt[2]
        if s[1] > 2.0 * s[2] and normal @ u > math.cos(math.radians(45)):
            u = _normalize(normal)
    target, _ = focus_point(centres, forward)
    heights = centres @ u
    e1, e2 = _ground_axes(u)
    rel = centres - target  # offsets from the scene centre
    planar = np.stack([rel @ e1, rel @ e2], axis=1)  # [N, 2]
    cov = planar.T @ planar / len(planar)
    evals, evecs = np.linalg.eigh(cov)
    radii = np.sqrt(np.maximum(2.0 * evals, 0.0))  # uniform angles on an ellipse: E[x^2] = a^2 / 2
    if radii.max() < 1e-9:
        raise UserError("the training cameras all sit above the scene centre: cannot fit an orbit")
    radii = np.maximum(radii, 0.05 * radii.max())
    axis_a = evecs[0, 1] * e1 + evecs[1, 1] * e2  # major axis (largest eigenvalue) in world space
    axis_b = np.cross(u, axis_a)
    base = target - (target @ u) * u + heights.mean() * u  # ellipse centre at the cameras' mean height
    # start at the angle of the first training camera, go the way the training cameras go
    def angle(p):
        return math.atan2((p @ axis_b) / radii[0], (p @ axis_a) / radii[1])
    theta0 = angle(rel[0])
    direction = 1.0
    if len(rel) > 1:
        step = (angle(rel[1]) - theta0 + math.pi) % (2 * math.pi) - math.pi
        direction = -1.0 if step < 0 else 1.0
    path = []
    ref = cameras[0]
    for k in range(n_frames):
        t = theta0 + direction * 2 * math.pi * k / n_frames
        pos = base + radii[1] * math.cos(t) * axis_a + radii[0] * math.sin(t) * axis_b
        path.append(make_camera(k, look_at(pos, target, u).T, pos, ref, f"path_{k:05d}"))
    return path


def spiral_path(cameras, n_frames, points=None, rotations=2, zrate=0.5, percentile=90):
    """Cameras on a spiral around the mean pose, looking at a focus point in front of it.

    Mean pose: mean centre, mean forward and up (orthonormalised). Radii along the camera's right, up
    and forward axes are the ``percentile`` of the training cameras' absolute offsets from the mean
    centre. Focus: the point where the optical axes meet (least squares), when they are not nearly
    parallel and it lies in front; else the point on the mean axis at the median depth of ``points``
    [M, 3] in front of the mean camera; else at ten times the spread of the cameras.
    """
    centres, forward, up = camera_poses(cameras)
    c0 = centres.mean(axis=0)
    R0 = look_at(c0, c0 + _normalize(forward.mean(axis=0)), mean_up(up)).T  # the mean pose
    right, down, fwd = R0[:, 0], R0[:, 1], R0[:, 2]
    rel = centres - c0
    radii = np.percentile(np.abs(np.stack([rel @ right, rel @ down, rel @ fwd], axis=1)), percentile, axis=0)
    depth, target = None, None
    if len(centres) >= 2:
        p, cond = focus_point(centres, forward)
        d = (p - c0) @ fwd
        if cond > 1e-4 and d > 1e-6:
            depth, target = float(d), p
    if depth is None and points is not None and len(points):
        d = (np.asarray(points, np.float64) - c0) @ fwd
        d = d[d > 0]
        if len(d):
            depth = float(np.median(d))
    spread = float(np.linalg.norm(rel, axis=1).max()) if len(rel) > 1 else 0.0
    if depth is None:
        depth = 10.0 * spread if spread > 0 else 1.0
    if radii[:2].max() < 1e-9:  # a single camera (or all at one spot): a small wobble
        radii = np.array([0.05, 0.05, 0.02]) * depth
    if target is None:
        target = c0 + depth * fwd
    path = []
    ref = cameras[0]
    for k in range(n_frames):
        t = 2 * math.pi * rotations * k / n_frames
        pos = (c0 + radii[0] * math.cos(t) * right - radii[1] * math.sin(t) * down
               + radii[2] * math.sin(zrate * t) * fwd)
        path.append(make_camera(k, look_at(pos, target, -down).T, pos, ref, f"path_{k:05d}"))
    return path


def camera_path(cameras, n_frames=240, kind="auto", points=None):
    """A smooth path of ``n_frames`` Camera objects through the scene seen by ``cameras``.

    kind: "auto" (ellipse for 360-degree captures, spiral for forward-facing ones), "ellipse" or
    "spiral". points: optional [M, 3] scene points that help place the spiral's focus.
    """
    if n_frames < 1:
        raise UserError(f"--video_frames {n_frames} must be at least 1")
    cameras = list(cameras)
    if not cameras:
        raise UserError("a camera path needs at least one training camera")
    if kind == "auto":
        kind = "ellipse" if is_360(cameras) else "spiral"
    if kind == "ellipse":
        return ellipse_path(cameras, n_frames)
    if kind == "spiral":
        return spiral_path(cameras, n_frames, points=points)
    raise UserError(f"camera path kind {kind!r} is unknown: use auto, ellipse or spiral")
