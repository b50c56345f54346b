"""render.py (file layout, iteration/model choice, video, errors) and utils/camera_path.py (ellipse / spiral)."""
import json
import math
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from plyfile import PlyData
import torch

import metrics
import render
import train
from scene.cameras import Camera
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.cli_helpers import cli_error
from utils import camera_path as cp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H = 64, 48


# ----------------------------------------------------------------------------------------------------------------
# camera_path unit tests on synthetic poses (no rendering)

def _cam(pos, target, up, uid=0, fovx=1.0, fovy=0.8, w=40, h=30):
    """A Camera at ``pos`` looking at ``target`` (rotation built here, independently of camera_path)."""
    pos, target, up = (np.asarray(v, float) for v in (pos, target, up))
    f = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(f, up)
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    R = np.stack([right, down, f], axis=1)  # camera-to-world
    return Camera(uid, R, -R.T @ pos, fovx, fovy, w, h, f"cam{uid:03d}")


def _random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _ring(centre, up_rot, radii=(3.0, 3.0), heights=(1.0,), n=16, phase=0.3):
    """Cameras on an (elliptic) ring around ``centre`` at the given heights, looking at the centre;
    the world is rotated by ``up_rot`` (so 'up' is up_rot @ z)."""
    centre = np.asarray(centre, float)
    cams = []
    for i in range(n):
        t = phase + 2 * math.pi * i / n
        local = np.array([radii[0] * math.cos(t), radii[1] * math.sin(t), heights[i % len(heights)]])
        cams.append(_cam(centre + up_rot @ local, centre, up_rot @ np.array([0, 0, 1.0]), uid=i))
    return cams


def _pose(cam):
    c, f, u = cp.camera_poses([cam])
    return c[0], f[0], u[0]


def _check_looks_at(cam, target, up):
    """``target`` projects to the image centre in front of ``cam`` (through Camera's own matrices), and the
    image is upright."""
    p = np.append(target, 1.0) @ cam.full_proj_transform.numpy().astype(np.float64)
    view_z = (np.append(target, 1.0) @ cam.world_view_transform.numpy().astype(np.float64))[2]
    assert view_z > 0
    assert abs(p[0] / p[3]) < 1e-4 and abs(p[1] / p[3]) < 1e-4
    R = cam.R
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-9) and np.linalg.det(R) > 0
    _, _, cam_up = _pose(cam)
    assert cam_up @ up > 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_ring_gives_circle_at_mean_height_looking_at_centre(seed):
    rot = _random_rotation(seed)
    centre = np.array([1.0, -2.0, 0.5])
    up = rot @ np.array([0, 0, 1.0])
    train_cams = _ring(centre, rot, radii=(3.0, 3.0), heights=(0.6, 1.4), n=16)
    assert cp.is_360(train_cams)
    target, cond = cp.focus_point(*cp.camera_poses(train_cams)[:2])
    assert np.allclose(target, centre, atol=1e-6) and cond > 0.01
    path = cp.camera_path(train_cams, 36)
    assert len(path) == 36
    for cam in path:
        c, _, _ = _pose(cam)
        rel = c - centre
        assert rel @ up == pytest.approx(1.0, abs=1e-6)  # the mean height of 0.6 and 1.4
        assert np.linalg.norm(rel - (rel @ up) * up) == pytest.approx(3.0, rel=1e-3)
        _check_looks_at(cam, centre, up)
        assert (cam.FoVx, cam.FoVy, cam.image_width, cam.image_height) == (1.0, 0.8, 40, 30)
    # evenly spaced, one full loop, starting next to the first training camera
    c0 = _pose(path[0])[0]
    assert np.linalg.norm(c0 - _pose(train_cams[0])[0]) < 0.41
    steps = [np.linalg.norm(_pose(a)[0] - _pose(b)[0]) for a, b in zip(path, path[1:] + path[:1])]
    assert max(steps) - min(steps) < 1e-6


def test_elliptic_ring_gives_matching_ellipse():
    rot = _random_rotation(3)
    centre = np.zeros(3)
    train_cams = _ring(centre, rot, radii=(4.0, 2.0), heights=(0.5,), n=24)
    path = cp.camera_path(train_cams, 20, kind="auto")
    a_axis, b_axis = rot[:, 0], rot[:, 1]
    for cam in path:
        c, _, _ = _pose(cam)
        assert (c @ a_axis / 4.0) ** 2 + (c @ b_axis / 2.0) ** 2 == pytest.approx(1.0, abs=1e-3)
        _check_looks_at(cam, centre, rot[:, 2])


def _forward_facing(seed=0, n=12, target=(0.3, -0.2, 6.0)):
    """LLFF-like: cameras on a small patch near the plane z=0, all looking at one point ahead (+z);
    world up is -y (an OpenCV-style world)."""
    rng = np.random.default_rng(seed)
    target = np.asarray(target, float)
    up = np.array([0.0, -1.0, 0.0])  # the usual OpenCV-world forward-facing setup: y down on screen
    cams = []
    for i in range(n):
        pos = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3), rng.uniform(-0.05, 0.05)])
        cams.append(_cam(pos, target, up, uid=i))
    return cams, target, up


def test_forward_facing_gives_spiral_around_mean_pose():
    train_cams, target, up = _forward_facing()
    assert not cp.is_360(train_cams)
    n = 40
    path = cp.camera_path(train_cams, n)
    centres = cp.camera_poses(train_cams)[0]
    mean_c = centres.mean(axis=0)
    offsets = []
    for cam in path:
        c, f, _ = _pose(cam)
        assert np.linalg.norm(c - mean_c) < 1.0  # stays near the capture positions
        _check_looks_at(cam, target, up)  # all frames look at where the training cameras look
        offsets.append(c - mean_c)
    # spiral: the offset turns around the viewing axis (two full turns) at a non-zero radius
    ang = np.unwrap([math.atan2(o[1], o[0]) for o in offsets])
    assert abs(ang[-1] - ang[0]) > 2 * math.pi * 1.5
    radial = [math.hypot(o[0], o[1]) for o in offsets]
    assert min(radial) > 0.05
    depth = [o[2] for o in offsets]  # and moves in and out along the view direction
    assert max(depth) > 0.01 and min(depth) < -0.01


def test_forward_facing_parallel_axes_use_points_for_focus():
    # parallel optical axes never meet: the focus comes from the scene points
    train_cams = [_cam([x, y, 0.0], [x, y, 5.0], [0, -1.0, 0], uid=i)
                  for i, (x, y) in enumerate([(-0.4, -0.2), (0.4, -0.2), (-0.4, 0.2), (0.4, 0.2), (0, 0)])]
    pts = np.random.default_rng(0).normal([0, 0, 4.0], 0.1, (200, 3))
    path = cp.camera_path(train_cams, 10, points=pts)
    for cam in path:
        _check_looks_at(cam, np.array([0, 0, np.median(pts[:, 2])]), np.array([0, -1.0, 0]))
    assert len(cp.camera_path(train_cams, 3)) == 3  # no points: still a path


def test_single_camera_and_bad_arguments():
    cam = _cam([0, 0, 0], [0, 0, 3], [0, -1, 0])
    path = cp.camera_path([cam], 5)
    assert len(path) == 5 and len({tuple(np.round(_pose(c)[0], 6)) for c in path}) > 1
    with pytest.raises(cp.UserError):
        cp.camera_path([cam], 0)
    with pytest.raises(cp.UserError):
        cp.camera_path([], 5)
    with pytest.raises(cp.UserError):
        cp.camera_path([cam], 5, kind="zigzag")


# ----------------------------------------------------------------------------------------------------------------
# render.py on a tiny trained model

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("render")
    scene = make_synthetic_scene(str(root / "scene"), num_views=8, width=W, height=H, num_points=500)
    model = str(root / "model")
    train.main(["-s", scene, "-m", model, "--iterations", "20", "--views_per_step", "1", "--test_iterations",
                "20", "--save_iterations", "10", "--densify_from_iter", "1000", "--eval", "--quiet"])
    return scene, model


def _read_rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img[:, :, ::-1].astype(np.float64) / 255.0


def _psnr(a, b):
    return 10 * math.log10(1.0 / max(((a - b) ** 2).mean(), 1e-20))


def _pngs(folder):
    return sorted(os.listdir(folder))


def test_render_layout_latest_iteration_and_quality(trained):
    scene, model = trained
    out = render.main(["-m", model, "--quiet"])  # source path, --eval etc. come from cfg_args.json
    assert out["iteration"] == 20  # iteration_10 and iteration_20 are saved: -1 picks the latest
    counts = {"train": 7, "test": 1}  # 8 views, every 8th held out
    for split, n in counts.items():
        base = os.path.join(model, split, "ours_20")
        names = [f"{i:05d}.png" for i in range(n)]
        assert _pngs(os.path.join(base, "renders")) == names
        assert _pngs(os.path.join(base, "gt")) == names
        for name in names:
            r = _read_rgb(os.path.join(base, "renders", name))
            g = _read_rgb(os.path.join(base, "gt", name))
            assert r.shape == g.shape == (H, W, 3)
            assert r.std() > 0.02  # not a blank image
            assert _psnr(r, g) > 12.0  # resembles its ground truth ...
            assert _psnr(r, g) > _psnr(np.zeros_like(g), g) + 3  # ... much more than a black image does
    assert not os.path.exists(os.path.join(model, "train", "ours_10"))
    # gt files are the source images, in camera order (sorted names; view_000 is the held-out test view)
    src = sorted(os.listdir(os.path.join(scene, "images")))
    assert np.array_equal(_read_rgb(os.path.join(model, "test", "ours_20", "gt", "00000.png")),
                          _read_rgb(os.path.join(scene, "images", src[0])))
    for i, name in enumerate(src[1:]):
        assert np.array_equal(_read_rgb(os.path.join(model, "train", "ours_20", "gt", f"{i:05d}.png")),
                              _read_rgb(os.path.join(scene, "images", name)))
    # no temporary files left behind
    for root, _, files in os.walk(os.path.join(model, "train")):
        assert not [f for f in files if f.endswith(".tmp")]


def test_explicit_iteration_and_skip_train(trained):
    _, model = trained
    out = render.main(["-m", model, "--iteration", "10", "--skip_train", "--quiet"])
    assert out["iteration"] == 10 and set(out["outputs"]) == {"test"}
    assert _pngs(os.path.join(model, "test", "ours_10", "renders")) == ["00000.png"]
    assert not os.path.exists(os.path.join(model, "train", "ours_10"))


def test_an_earlier_longer_runs_iteration_is_not_the_one_rendered(trained, tmp_path):
    """A newer-numbered PLY an earlier, longer run left behind: the run in cfg_args.json ends at 20, so iteration 20
    is rendered, into ours_20."""
    scene, model = trained
    run = str(tmp_path / "run")
    shutil.copytree(model, run, ignore=shutil.ignore_patterns("test", "train"))
    shutil.copytree(os.path.join(run, "point_cloud", "iteration_10"), os.path.join(run, "point_cloud", "iteration_40"))
    out = render.main(["-m", run, "-s", scene, "--skip_train", "--quiet"])
    assert out["iteration"] == 20 and out["ply"].endswith(os.path.join("iteration_20", "point_cloud.ply"))
    assert os.listdir(os.path.join(run, "test")) == ["ours_20"]


@pytest.fixture(scope="module")
def distilled(trained, tmp_path_factory):
    """A fake --num_models 4 layout: point_cloud_<i>/iteration_<5+i>; point_cloud_1's Gaussians are invisible."""
    scene, model = trained
    d = str(tmp_path_factory.mktemp("distilled") / "model")
    os.makedirs(d)
    shutil.copy(os.path.join(model, "cfg_args.json"), d)
    src = os.path.join(model, "point_cloud", "iteration_20", "point_cloud.ply")
    for i in range(4):
        dst = os.path.join(d, f"point_cloud_{i}", f"iteration_{5 + i}", "point_cloud.ply")
        os.makedirs(os.path.dirname(dst))
        if i == 1:
            ply = PlyData.read(src)
            ply["vertex"]["opacity"][:] = -30.0
            ply.write(dst)
        else:
            shutil.copy(src, dst)
    return scene, d


def test_itrain_picks_point_cloud_folder(distilled):
    scene, d = distilled
    out = render.main(["-m", d, "-s", scene, "--skip_train", "--quiet"])
    assert out["iteration"] == 8 and out["ply"].startswith(os.path.join(d, "point_cloud_3"))  # the student
    student = _read_rgb(os.path.join(d, "test", "ours_8", "renders", "00000.png"))
    assert student.std() > 0.02
    out = render.main(["-m", d, "--itrain", "1", "--skip_train", "--quiet"])
    assert out["iteration"] == 6 and "point_cloud_1" in out["ply"]
    dropped = _read_rgb(os.path.join(d, "test", "ours_6_G_drop", "renders", "00000.png"))
    assert dropped.max() < 0.02  # point_cloud_1 (transparent Gaussians) was really the one rendered
    out = render.main(["-m", d, "--itrain", "0", "--iteration", "5", "--skip_train", "--skip_test", "--quiet"])
    assert out["iteration"] == 5 and "point_cloud_0" in out["ply"] and out["outputs"] == {}


def test_teacher_and_student_of_one_iteration_keep_their_renders(distilled, tmp_path):
    """A teacher that ended at the student's iteration (--student_steps_scale 1) renders into ours_<it>_<role>:
    rendering both leaves both, and metrics.py scores both."""
    scene, d = distilled
    run = str(tmp_path / "run")
    shutil.copytree(d, run, ignore=shutil.ignore_patterns("test", "train"))  # only the models
    shutil.copytree(os.path.join(run, "point_cloud_1", "iteration_6"),
                    os.path.join(run, "point_cloud_1", "iteration_8"))
    for extra in ([], ["--itrain", "1"]):
        render.main(["-m", run, "-s", scene, "--skip_train", "--quiet", "--iteration", "8", *extra])
    student = _read_rgb(os.path.join(run, "test", "ours_8", "renders", "00000.png"))
    teacher = _read_rgb(os.path.join(run, "test", "ours_8_G_drop", "renders", "00000.png"))
    assert student.std() > 0.02 and teacher.max() < 0.02
    metrics.main(["-m", run, "--skip_lpips"])
    with open(os.path.join(run, "results.json")) as f:
        results = json.load(f)
    assert set(results) == {"ours_8", "ours_8_G_drop"} and results["ours_8"]["PSNR"] != results["ours_8_G_drop"]["PSNR"]


def test_errors_exit_2_with_one_line(distilled, tmp_path, capsys):
    scene, d = distilled
    err = cli_error(render.main, ["-m", str(tmp_path / "missing")], capsys)
    assert "missing" in err and "does not exist" in err
    err = cli_error(render.main, ["-m", d, "--itrain", "7"], capsys)
    assert "point_cloud_7" in err and "point_cloud_0, point_cloud_1, point_cloud_2, point_cloud_3" in err
    err = cli_error(render.main, ["-m", d, "--itrain", "2", "--iteration", "99"], capsys)
    assert "iteration_99" in err and "saved iterations: 7" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = cli_error(render.main, ["-m", str(empty), "-s", scene], capsys)
    assert "no trained model" in err


def test_cli_missing_model_folder_subprocess(tmp_path):
    res = subprocess.run([sys.executable, os.path.join(REPO, "render.py"), "-m", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "nope" in res.stderr and "Traceback" not in res.stderr


def _frames(path):
    cap = cv2.VideoCapture(path)
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def test_video_frame_count_and_avi_fallback(trained, monkeypatch):
    _, model = trained
    out = render.main(["-m", model, "--video", "--video_frames", "5", "--fps", "10", "--skip_train",
                       "--skip_test", "--quiet"])
    video = os.path.join(model, "video", "ours_20.mp4")
    assert out["outputs"] == {"video": video} and os.path.getsize(video) > 0
    frames = _frames(video)
    assert len(frames) == 5 and frames[0].shape == (H, W, 3)
    assert max(f.std() for f in frames) > 5  # the scene is visible along the path
    assert not [f for f in os.listdir(os.path.dirname(video)) if f.startswith(".")]

    real_open = render._open_writer
    monkeypatch.setattr(render, "_open_writer",
                        lambda path, fourcc, fps, size: None if fourcc == "mp4v" else real_open(path, fourcc, fps,
                                                                                                   size))
    out = render.main(["-m", model, "--video", "--video_frames", "3", "--iteration", "10", "--skip_train",
                       "--skip_test", "--quiet"])
    assert out["outputs"]["video"].endswith("ours_10.avi")
    assert len(_frames(out["outputs"]["video"])) == 3


def test_camera_matrices_are_views_of_one_packed_tensor():
    """Camera.matrices: the view and projection matrices and the centre as computed, contiguous views of
    packed_matrices (one copy moves a pose into a CUDA graph's buffers: training/graph_step.py StaticView)."""
    import torch  # noqa: PLC0415
    from scene.cameras import Camera  # noqa: PLC0415
    rot = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)))[0].double().numpy()
    cam = Camera(0, rot, [0.3, -0.2, 2.0], 0.9, 0.7, 40, 30, "c")
    view, proj, centre = cam.matrices("cpu")
    want = (cam.world_view_transform, cam.full_proj_transform, cam.camera_center)
    for got, w in zip((view, proj, centre), want):
        assert got.is_contiguous() and torch.equal(got, w)
    packed = cam.packed_matrices("cpu")
    assert packed.shape == (35,) and all(m.data_ptr() == packed.data_ptr() + 4 * off
                                         for m, off in zip((view, proj, centre), (0, 16, 32)))
    packed.mul_(2.0)  # (views: a change of the packed tensor is theirs)
    assert torch.equal(view, 2 * want[0]) and cam.matrices("cpu")[0] is view


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_a_photo_in_unit_range_is_its_bytes_over_255(device):
    """unit_image (the step's ground truth, graphed and eager): one division, the values of image.float() / 255
    for every byte value, float32."""
    from scene.cameras import unit_image  # noqa: PLC0415
    image = torch.arange(256, dtype=torch.uint8).repeat(3, 2, 1).to(device)  # [3, 2, 256]
    got = unit_image(image)
    assert got.dtype == torch.float32 and torch.equal(got, image.float() / 255.0)
    assert float(got.min()) == 0.0 and float(got.max()) == 1.0
