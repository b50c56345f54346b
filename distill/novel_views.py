"""Views between the training views, labelled by the teachers: where an ensemble knows more than the photos.

The student learns the mean teacher render at the training views (the distillation term); these extra views
give it the teachers' answer at poses no photo covers, which is where a test view lies. Each is a pose on the
way from a training camera to one of its nearest neighbours (centre interpolated linearly, rotation by slerp),
with the first camera's intrinsics. The teachers render each once, when the student starts, as the training
targets are; a step then adds the loss of one such view with probability --novel_view_prob.
"""
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from utils.camera_path import camera_poses, make_camera

NEIGHBOURS = 4  # a new pose lies between a camera and one of its 4 nearest (by centre): close enough to look alike
SPAN = (0.25, 0.75)  # the interpolation weight: never on a training pose, never past the neighbour


def interpolated_cameras(cameras, per_view, seed=0, scale=1.0):
    """``per_view`` pose-only cameras for each training camera (uids -1, -2, ...), from a generator of its own
    (the same poses whatever the run's RNG state, so a resumed student sees the same set); ``scale``: their image
    size as a fraction of their training camera's (at least one pixel a side), the field of view the same."""
    if per_view <= 0 or len(cameras) < 2:
        return []
    rng = np.random.default_rng(seed)
    centres, _, _ = camera_poses(cameras)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)  # [N, N]
    np.fill_diagonal(dist, np.inf)
    near = np.argsort(dist, axis=1)[:, :min(NEIGHBOURS, len(cameras) - 1)]  # [N, k]
    out = []
    for i, cam in enumerate(cameras):
        for _ in range(per_view):
            j = int(near[i, rng.integers(near.shape[1])])
            t = float(rng.uniform(*SPAN))
            rots = Rotation.from_matrix(np.stack([cam.R, cameras[j].R]))
            R = Slerp([0.0, 1.0], rots)([t]).as_matrix()[0]
            centre = (1.0 - t) * centres[i] + t * centres[j]
            name = f"between_{cam.image_name}_{cameras[j].image_name}"
            out.append(make_camera(-(len(out) + 1), R, centre, cam, name, scale))
    return out
