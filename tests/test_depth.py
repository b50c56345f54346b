"""utils/make_depth_scale.py recovers known scales/offsets; the -d depth term lowers the depth error of training.

Scenes come from scripts/make_synthetic_scene.py; the true inverse depth of every pixel is ray-cast with the same
scene description (its _build_scene/_cast/_pixel_rays), and a "monocular" map is made from it as
a * true_inverse_depth + b (+ noise and outliers), so the fit must return scale 1/a and offset -b/a.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scene import colmap_loader as cl
from scripts import make_synthetic_scene as mss
from utils import make_depth_scale as mds
from utils.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def true_inverse_depth(image, cam, width=None, height=None):
    """Ray-cast 1/z [H, W] of a synthetic scene's view at (width, height) (default: the camera's size)."""
    width, height = width or cam.width, height or cam.height
    f, cx, cy = cam.params[0], cam.params[-2], cam.params[-1]
    R = cl.qvec2rotmat(image.qvec)
    C = -R.T @ np.asarray(image.tvec)
    sx, sy = cam.width / width, cam.height / height
    U, V = np.meshgrid((np.arange(width) + 0.5) * sx, (np.arange(height) + 0.5) * sy)
    d = mss._pixel_rays(R, f, cx, cy, U.ravel(), V.ravel())
    objects, room = mss._build_scene()
    t, _ = mss._cast(objects, room, C, d)
    z = t * (d @ R[2])  # distance along the unit ray -> depth along the optical axis
    return (1.0 / z).reshape(height, width)


def write_mono_depths(scene, depths_dir, rng, noise=0.002, outliers=0.05, sizes=None):
    """Write mono = a * inv_depth + b per image (a, b differ per image); returns {stem: (scale, offset)}."""
    sparse = os.path.join(scene, "sparse", "0")
    cams, images = cl.read_cameras(os.path.join(sparse, "cameras.bin")), cl.read_images(os.path.join(sparse,
                                                                                                    "images.bin"))
    os.makedirs(depths_dir, exist_ok=True)
    expected = {}
    for k, im in enumerate(sorted(images.values(), key=lambda i: i.name)):
        cam = cams[im.camera_id]
        w, h = (sizes or {}).get(im.name, (cam.width, cam.height))
        inv = true_inverse_depth(im, cam, w, h)
        a = 0.8 / inv.max() * (0.6 + 0.1 * k)  # different per image, mono stays inside [0, 1]
        b = 0.04 + 0.03 * (k % 3)
        mono = a * inv + b + rng.normal(0, noise, inv.shape)
        bad = rng.random(inv.shape) < outliers
        mono[bad] = rng.random(int(bad.sum()))
        mds.write_inverse_depth(os.path.join(depths_dir, os.path.splitext(im.name)[0] + ".png"), mono)
        expected[os.path.splitext(im.name)[0]] = (1.0 / a, -b / a)
    return expected


def strip_observations(src_scene, dst_scene):
    """Copy a scene's sparse/0 with the 2D observations (Image.xys) and tracks removed."""
    cams, images, points = cl.read_model(os.path.join(src_scene, "sparse", "0"))
    images = {k: im._replace(xys=np.zeros((0, 2)), point3D_ids=np.zeros(0, np.int64)) for k, im in images.items()}
    points = {k: p._replace(image_ids=np.zeros(0, np.int64), point2D_idxs=np.zeros(0, np.int64))
              for k, p in points.items()}
    cl.write_model(cams, images, points, os.path.join(dst_scene, "sparse", "0"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("depth_scene"))
    mss.make_synthetic_scene(root, num_views=4, width=96, height=72, num_points=1500, seed=3)
    return root


def _check(fits, expected, tol_scale, tol_offset):
    for stem, (s, o) in expected.items():
        got = fits[stem]
        assert abs(got["scale"] / s - 1) < tol_scale, (stem, got, s, o)
        # offset error relative to the spread of inverse depths the map covers (scale * 1)
        assert abs(got["offset"] - o) < tol_offset * s, (stem, got, s, o)


def test_recovers_scale_and_offset_with_observations(scene, tmp_path):
    rng = np.random.default_rng(0)
    depths = str(tmp_path / "depths")
    # one map at a larger and one at a smaller resolution than its image: positions must be rescaled
    expected = write_mono_depths(scene, depths, rng, sizes={"view_001.png": (144, 108), "view_002.png": (48, 36)})
    fits = mds.make_depth_scale(scene, depths, quiet=True)
    assert {f["source"] for f in fits.values()} == {"observations"}
    _check(fits, expected, 0.01, 0.005)
    with open(os.path.join(scene, "sparse", "0", "depth_params.json")) as f:
        saved = json.load(f)
    assert set(saved) == set(expected) and all(set(v) == {"scale", "offset"} for v in saved.values())
    assert not [n for n in os.listdir(os.path.join(scene, "sparse", "0")) if n.endswith(".tmp")]


def test_recovers_scale_and_offset_without_observations(scene, tmp_path):
    stripped = str(tmp_path / "stripped")
    strip_observations(scene, stripped)
    rng = np.random.default_rng(1)
    depths = str(tmp_path / "depths")
    expected = write_mono_depths(scene, depths, rng)
    fits = mds.make_depth_scale(stripped, depths, quiet=True)
    assert {f["source"] for f in fits.values()} == {"projection"}
    _check(fits, expected, 0.01, 0.005)
    # a fixed cell of 4 px works here too
    _check(mds.make_depth_scale(stripped, depths, zbuffer_cell=4, quiet=True), expected, 0.01, 0.005)


def test_zbuffer_keeps_nearest_point_per_cell():
    R, t = np.eye(3), np.zeros(3)
    xyz = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0],  # same pixel: keep z=1; behind camera
                    [5.0, 0.0, 1.0], [1.0, 0.4, 4.0]])  # outside the frame; another pixel
    uv, z = mds.zbuffer_points(xyz, R, t, 10.0, 10.0, 5.0, 5.0, 10, 10, cell=1)
    assert sorted(z.tolist()) == [1.0, 4.0]


def test_too_few_points_give_scale_zero(scene, tmp_path, capsys):
    depths = str(tmp_path / "depths")
    write_mono_depths(scene, depths, np.random.default_rng(2))
    fits = mds.make_depth_scale(scene, depths, min_points=10 ** 6)
    assert all(f["scale"] == 0 for f in fits.values())
    assert "fewer than" in capsys.readouterr().out


def test_errors(scene, tmp_path):
    depths = str(tmp_path / "depths")
    with pytest.raises(UserError, match="--depths_dir"):
        mds.make_depth_scale(scene, depths, quiet=True)
    write_mono_depths(scene, depths, np.random.default_rng(3))
    os.remove(os.path.join(depths, "view_002.png"))
    with pytest.raises(UserError, match="view_002.png"):
        mds.make_depth_scale(scene, depths, quiet=True)
    distorted = str(tmp_path / "distorted_scene")
    cams, images, points = cl.read_model(os.path.join(scene, "sparse", "0"))
    cams = {k: c._replace(model="SIMPLE_RADIAL", params=np.append(c.params[[0, 2, 3]], 0.01)) for k, c in cams.items()}
    cl.write_model(cams, images, points, os.path.join(distorted, "sparse", "0"))
    with pytest.raises(UserError, match="PINHOLE"):
        mds.make_depth_scale(distorted, depths, quiet=True)


def test_cli_as_script_and_module(scene, tmp_path):
    depths = str(tmp_path / "depths")
    write_mono_depths(scene, depths, np.random.default_rng(4))
    r = subprocess.run([sys.executable, os.path.join(REPO, "utils", "make_depth_scale.py"), "--base_dir", scene,
                        "--depths_dir", depths], capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4/4 images fitted" in r.stdout
    r = subprocess.run([sys.executable, "-m", "utils.make_depth_scale", "--base_dir", scene, "--depths_dir",
                        str(tmp_path / "missing")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: --depths_dir") and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------------------------
# the depth term in training


def _depth_error(scene, model_dir, iteration):
    """Mean |rendered inverse depth - true inverse depth| over the scene's views."""
    import torch

    from arguments import PipelineParams
    from gaussian_renderer import render
    from scene.dataset_readers import read_colmap_scene
    from scene.gaussian_model import GaussianModel

    info = read_colmap_scene(scene, resolution=1, load_images=False)
    model = GaussianModel(0).load_ply(os.path.join(model_dir, "point_cloud", f"iteration_{iteration}",
                                                   "point_cloud.ply"))
    pipe = PipelineParams.defaults()
    cams, images = (cl.read_cameras(os.path.join(scene, "sparse", "0", "cameras.bin")),
                    cl.read_images(os.path.join(scene, "sparse", "0", "images.bin")))
    by_stem = {os.path.splitext(im.name)[0]: im for im in images.values()}
    errs = []
    with torch.no_grad():
        for cam in info.train_cameras:
            im = by_stem[cam.image_name]
            true = torch.from_numpy(true_inverse_depth(im, cams[im.camera_id])).float()
            out = render(cam, model, pipe, torch.zeros(3))["depth"][0]
            errs.append(float((out - true).abs().mean()))
    return float(np.mean(errs))


def test_depth_term_lowers_depth_error(tmp_path):
    import train

    scene = str(tmp_path / "scene")
    mss.make_synthetic_scene(scene, num_views=8, width=64, height=48, num_points=800, seed=5, jitter=0.03)
    depths = str(tmp_path / "depths")
    write_mono_depths(scene, depths, np.random.default_rng(6), noise=0.001, outliers=0.0)
    mds.make_depth_scale(scene, depths, quiet=True)
    its = 80
    common = ["-s", scene, "-r", "1", "--iterations", str(its), "--views_per_step", "1", "--sh_degree", "0",
              "--test_iterations", str(its), "--save_iterations", str(its), "--quiet"]
    train.main(common + ["-m", str(tmp_path / "plain")])
    train.main(common + ["-m", str(tmp_path / "depth"), "-d", depths])
    e_plain = _depth_error(scene, str(tmp_path / "plain"), its)
    e_depth = _depth_error(scene, str(tmp_path / "depth"), its)
    print(f"mean inverse-depth error after {its} iterations: {e_plain:.4f} without -d, {e_depth:.4f} with -d")
    assert e_depth < 0.75 * e_plain, (e_plain, e_depth)
