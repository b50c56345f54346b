"""The student's extra views between the training views: their poses and their loss."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from arguments import DistillParams, PipelineParams, scale_steps
from distill.novel_views import interpolated_cameras
from distill.roles import StudentRole
from gaussian_renderer import render
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from utils.camera_path import camera_poses
from utils.graphics_utils import look_at
from utils.loss_utils import photometric_loss


def _ring(n=6, radius=4.0):
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n
        centre = np.array([radius * np.cos(a), radius * np.sin(a), 0.5])
        R = look_at(centre, np.zeros(3), np.array([0.0, 0.0, 1.0])).T  # camera-to-world, as Camera takes it
        cams.append(Camera(i, R, -R.T @ centre, 0.8, 0.6, 32, 24, f"v{i}"))
    return cams


def _segment_distance(p, a, b):
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return np.linalg.norm(p - (a + t * (b - a)))


def test_poses_lie_between_a_camera_and_a_neighbour():
    cams = _ring()
    novel = interpolated_cameras(cams, 3)
    assert len(novel) == 18 and sorted(c.uid for c in novel) == list(range(-18, 0))
    centres, _, _ = camera_poses(cams)
    new_centres, forward, _ = camera_poses(novel)
    for k, cam in enumerate(novel):
        i = k // 3  # made for camera i, towards one of its 4 nearest
        near = np.argsort(np.linalg.norm(centres - centres[i], axis=1))[1:5]
        d = min(_segment_distance(new_centres[k], centres[i], centres[j]) for j in near)
        assert d < 1e-9
        assert min(np.linalg.norm(new_centres[k] - c) for c in centres) > 0.1  # never on a training pose
        R = cam.R
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-9) and np.linalg.det(R) == pytest.approx(1.0)
        assert (cam.FoVx, cam.image_width, cam.image.__class__) == (cams[i].FoVx, 32, type(None))
        # the rotation lies on the geodesic from camera i's to a neighbour's (slerp), strictly inside it
        ang = lambda A, B: Rotation.from_matrix(A.T @ B).magnitude()  # noqa: E731
        gap = min(abs(ang(cams[i].R, R) + ang(R, cams[j].R) - ang(cams[i].R, cams[j].R)) for j in near)
        assert gap < 1e-9 and ang(cams[i].R, R) > 1e-3
        to_centre = -new_centres[k] / np.linalg.norm(new_centres[k])
        assert np.dot(forward[k], to_centre) > 0.95  # still roughly at the scene the ring looks at
    again = interpolated_cameras(cams, 3)  # its own generator: the same poses whatever the global RNG
    np.random.seed(123)
    assert all(np.array_equal(a.R, b.R) and np.array_equal(a.T, b.T) for a, b in zip(novel, again))


def test_a_scale_shrinks_the_images_and_keeps_the_poses_and_fields_of_view():
    cams = _ring()
    full, half = interpolated_cameras(cams, 2), interpolated_cameras(cams, 2, scale=0.5)
    assert {(c.image_width, c.image_height) for c in half} == {(16, 12)}
    for a, b in zip(full, half):
        assert np.array_equal(a.R, b.R) and np.array_equal(a.T, b.T) and (a.FoVx, a.FoVy) == (b.FoVx, b.FoVy)
    assert {(c.image_width, c.image_height) for c in interpolated_cameras(cams, 1, scale=0.01)} == {(1, 1)}


def test_the_scale_must_be_a_fraction():
    from arguments.fields import check_group  # noqa: PLC0415
    from utils.errors import UserError  # noqa: PLC0415
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(UserError, match=r"--novel_view_scale .* must be above 0 and at most 1"):
            check_group(DistillParams.defaults(novel_view_scale=bad))
    check_group(DistillParams.defaults(novel_view_scale=0.5))


def test_nothing_to_interpolate():
    assert interpolated_cameras(_ring(), 0) == [] and interpolated_cameras(_ring(1), 2) == []


def _student(prob, lam=2.0, structure=False, start=0):
    cams = _ring(4)
    novel = interpolated_cameras(cams, 1)
    dp = DistillParams.defaults(novel_views=1, novel_view_prob=prob, lambda_novel=lam,
                                lambda_structure=1.0 if structure else 0.0, novel_view_start=start)
    opt = type("Opt", (), {"lambda_dssim": 0.2})()
    means = {c.uid: torch.rand(3, 24, 32).half() for c in cams + novel}
    g = torch.Generator().manual_seed(0)
    model = GaussianModel(0)
    model.create_from_points(torch.randn(200, 3, generator=g) * 0.5, torch.rand(200, 3, generator=g), 1.0)
    role = StudentRole(dp, opt, PipelineParams.defaults(backend="torch"), torch.zeros(3), means,
                       model.get_xyz.detach().clone(), cams, novel)
    return role, model, novel, means


def test_step_loss_is_the_novel_views_loss(monkeypatch):
    import random
    role, model, novel, means = _student(prob=1.0)
    random.seed(5)
    loss = role.step_loss(1, model)
    random.seed(5)
    random.random()
    cam = novel[random.randrange(len(novel))]
    image = render(cam, model, PipelineParams.defaults(backend="torch"), torch.zeros(3))["render"]
    want = 2.0 * photometric_loss(image, means[cam.uid].float(), 0.2)
    assert loss is not None and torch.allclose(loss, want)
    loss.backward()
    assert model.params["xyz"].grad is not None and model.params["xyz"].grad.abs().sum() > 0
    role = _student(prob=1.0, start=None)[0]  # by default from the second prune (16000) on
    assert role.step_loss(15999, model) is None and role.step_loss(16000, model) is not None


def test_step_loss_off():
    role, model, _, _ = _student(prob=0.0)
    assert role.step_loss(1, model) is None
    role, model, _, _ = _student(prob=1.0, lam=0.0)
    assert role.step_loss(1, model) is None


def test_distill_start_gates_the_training_views_distillation_term():
    role, _, _, means = _student(prob=0.0)
    cam = role.cameras[1]
    target, weight = role.view_target(1, cam, "cpu")  # by default from the first iteration (the reference)
    assert torch.equal(target, means[cam.uid].float()) and weight == role.dp.lambda_distill
    role.dp = DistillParams.defaults(distill_start=4000)
    assert role.view_target(3999, cam, "cpu") is None  # the photos alone before it
    assert torch.equal(role.view_target(4000, cam, "cpu")[0], means[cam.uid].float())
    # an iteration count like the others: --steps_scale (and --student_steps_scale) rescale it
    assert scale_steps(DistillParams.defaults(distill_start=16000), 0.25).distill_start == 4000
    assert scale_steps(DistillParams.defaults(), 0.25).distill_start is None
