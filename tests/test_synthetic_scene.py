"""The synthetic scene generator: COLMAP conventions (checked against the rendered pixels), determinism, CLI."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from scene import colmap_loader as cl  # noqa: E402
from scripts import make_synthetic_scene as gen  # noqa: E402
from utils.errors import UserError  # noqa: E402

cv2 = pytest.importorskip("cv2")


SMALL = dict(num_views=6, width=96, height=72, num_points=800)


@pytest.fixture(scope="module", params=["PINHOLE", "SIMPLE_PINHOLE"])
def scene(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "scene"
    gen.make_synthetic_scene(out, seed=1, camera_model=request.param, **SMALL)
    return out, cl.read_model(str(out / "sparse" / "0"))


def _intrinsics(cam):
    if cam.model == "PINHOLE":
        return tuple(cam.params)
    f, cx, cy = cam.params
    return f, f, cx, cy


def _project(img, pts_xyz, W, H, fx, fy, cx, cy):
    R = cl.qvec2rotmat(img.qvec)
    Xc = pts_xyz @ R.T + img.tvec
    return fx * Xc[:, 0] / Xc[:, 2] + cx, fy * Xc[:, 1] / Xc[:, 2] + cy, Xc[:, 2]


def _load_rgb(path):
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return bgr[:, :, ::-1].astype(np.float64)


def test_layout_and_cameras(scene):
    out, (cameras, images, points) = scene
    assert len(cameras) == 1 and len(images) == SMALL["num_views"] and len(points) == SMALL["num_points"]
    cam = cameras[1]
    assert (cam.width, cam.height) == (SMALL["width"], SMALL["height"])
    fx, fy, cx, cy = _intrinsics(cam)
    assert fx == fy and cx == cam.width / 2 and cy == cam.height / 2
    names = sorted(im.name for im in images.values())
    assert names == [f"view_{k:03d}.png" for k in range(SMALL["num_views"])]
    assert sorted(os.listdir(out / "images")) == names
    for im in images.values():
        assert im.camera_id == 1 and np.isclose(np.linalg.norm(im.qvec), 1.0)
        assert _load_rgb(out / "images" / im.name).shape == (cam.height, cam.width, 3)
        # the camera looks at the scene centre: it is in front and near the image centre
        u, v, z = _project(im, np.array([[0.0, 0.0, 0.55]]), cam.width, cam.height, fx, fy, cx, cy)
        assert z[0] > 0 and abs(u[0] - cx) < 0.15 * cam.width and abs(v[0] - cy) < 0.15 * cam.height
        # "up" in the world (+z) points up in the image (y down): a point above the centre has a smaller v
        u2, v2, _ = _project(im, np.array([[0.0, 0.0, 1.55]]), cam.width, cam.height, fx, fy, cx, cy)
        assert v2[0] < v[0]


def test_points_project_into_images_with_matching_colours(scene):
    out, (cameras, images, points) = scene
    cam = cameras[1]
    fx, fy, cx, cy = _intrinsics(cam)
    assert all(len(p.image_ids) >= 1 for p in points.values())  # each point is seen by some view
    diffs, flipped = [], []
    for im in images.values():
        rgb = _load_rgb(out / "images" / im.name)
        assert len(im.xys) > 0
        xyz = np.stack([points[int(p)].xyz for p in im.point3D_ids])
        col = np.stack([points[int(p)].rgb for p in im.point3D_ids]).astype(np.float64)
        u, v, z = _project(im, xyz, cam.width, cam.height, fx, fy, cx, cy)
        assert np.all(z > 0)
        inside = (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        assert inside.mean() > 0.99
        # stored observations agree with the projection (up to the points' small position jitter)
        assert np.median(np.hypot(u - im.xys[:, 0], v - im.xys[:, 1])) < 0.5
        # each track entry refers back to this observation
        for j in range(0, len(im.point3D_ids), 50):
            p = points[int(im.point3D_ids[j])]
            assert j in p.point2D_idxs[p.image_ids == im.id]
        col_i = np.floor(u).astype(int)
        row_i = np.floor(v).astype(int)
        # pixel containing the projection (index floor(u) under COLMAP's pixel-centre-at-+0.5 convention),
        # and the best match in its 3x3 neighbourhood (texture and occlusion edges blur single pixels)
        centre = np.abs(rgb[np.clip(row_i, 0, cam.height - 1), np.clip(col_i, 0, cam.width - 1)] - col).mean(1)
        best = centre.copy()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r = np.clip(row_i + dr, 0, cam.height - 1)
                c = np.clip(col_i + dc, 0, cam.width - 1)
                best = np.minimum(best, np.abs(rgb[r, c] - col).mean(axis=1))
        diffs.append((centre, best))
        r = np.clip(cam.height - 1 - row_i, 0, cam.height - 1)  # a camera with the wrong y convention
        flipped.append(np.abs(rgb[r, np.clip(col_i, 0, cam.width - 1)] - col).mean(axis=1))
    d = np.concatenate([a for a, _ in diffs])
    dbest = np.concatenate([b for _, b in diffs])
    dflip = np.concatenate(flipped)
    assert np.median(d) < 6.0, np.median(d)
    assert (d < 25).mean() > 0.7, (d < 25).mean()
    assert (dbest < 25).mean() > 0.9, (dbest < 25).mean()
    assert np.median(dflip) > 4 * max(np.median(d), 3.0)  # the check would catch a flipped camera


def test_texture_not_noise(scene):
    """Images have real structure: neighbouring pixels are mostly similar, but the image has many colours."""
    out, (cameras, images, _) = scene
    rgb = _load_rgb(out / "images" / images[1].name)
    dx = np.abs(np.diff(rgb, axis=1)).mean(axis=2)
    assert np.median(dx) < 3.0
    assert rgb.reshape(-1, 3).std(axis=0).mean() > 25.0
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200


def test_deterministic_for_seed(tmp_path):
    kw = dict(num_views=3, width=40, height=30, num_points=200)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        gen.make_synthetic_scene(tmp_path / name, seed=seed, **kw)

    def files(d):
        return {os.path.relpath(os.path.join(r, f), d): open(os.path.join(r, f), "rb").read()
                for r, _, fs in os.walk(d) for f in fs}

    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_cli_and_format_switch(tmp_path):
    out = tmp_path / "s"
    assert gen.main(["-o", str(out), "--num_views", "4", "--width", "32", "--height", "24", "--num_points",
                     "100", "--format", "bin"]) == 0
    assert cl.detect_model_ext(out / "sparse" / "0") == ".bin"
    # rewriting in text (and with fewer views) leaves no stale binary model or extra images behind
    gen.main(["-o", str(out), "--num_views", "2", "--width", "32", "--height", "24", "--num_points", "50",
              "--format", "txt", "--camera", "SIMPLE_PINHOLE"])
    assert sorted(os.listdir(out / "sparse" / "0")) == ["cameras.txt", "images.txt", "points3D.txt"]
    assert sorted(os.listdir(out / "images")) == ["view_000.png", "view_001.png"]
    cams, ims, pts = cl.read_model(str(out / "sparse" / "0"))
    assert cams[1].model == "SIMPLE_PINHOLE" and len(ims) == 2 and len(pts) == 50


@pytest.mark.parametrize("kw", [dict(num_views=0), dict(width=4), dict(fmt="ply"), dict(camera_model="OPENCV"),
                                dict(num_points=-1)])
def test_bad_arguments_raise_user_error(tmp_path, kw):
    with pytest.raises(UserError):
        gen.make_synthetic_scene(tmp_path / "x", **kw)
