"""COLMAP model I/O: binary/text agreement, round trips, rotations, and clean errors for broken files."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from scene import colmap_loader as cl  # noqa: E402
from scripts import make_synthetic_scene as mss  # noqa: E402
from utils.errors import UserError  # noqa: E402


EXPECTED_MODELS = {
    "SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5), "OPENCV": (4, 8),
    "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12), "FOV": (7, 5), "SIMPLE_RADIAL_FISHEYE": (8, 4),
    "RADIAL_FISHEYE": (9, 5), "THIN_PRISM_FISHEYE": (10, 12),
}


def _random_model(seed=0):
    """A model that uses every classic camera model, images with and without 2D points, tracks of all lengths."""
    rng = np.random.default_rng(seed)
    cameras = {}
    for i, (name, (_, n)) in enumerate(EXPECTED_MODELS.items()):
        cid = i + 1
        cameras[cid] = cl.Camera(cid, name, int(rng.integers(10, 4000)), int(rng.integers(10, 4000)),
                                 rng.normal(size=n) * 100)
    images = {}
    num_points = 50
    for iid in (1, 2, 5, 17):
        k = 0 if iid == 2 else int(rng.integers(1, 30))
        q = rng.normal(size=4)
        ids = rng.integers(1, num_points + 1, size=k).astype(np.int64)
        ids[::3] = -1  # unmatched observations
        images[iid] = cl.Image(iid, q / np.linalg.norm(q), rng.normal(size=3), int(rng.integers(1, 12)),
                               f"img_{iid:04d}.jpg", rng.uniform(0, 1000, size=(k, 2)), ids)
    points = {}
    for pid in range(1, num_points + 1):
        tl = int(rng.integers(0, 5))
        points[pid] = cl.Point3D(pid, rng.normal(size=3) * 10, rng.integers(0, 256, size=3).astype(np.uint8),
                                 float(rng.random()), rng.integers(1, 20, size=tl), rng.integers(0, 30, size=tl))
    return cameras, images, points


def _assert_same(a, b):
    """Two (cameras, images, points3D) triples hold exactly the same data."""
    for da, db in zip(a, b):
        assert list(da.keys()) == list(db.keys())
        for k in da:
            assert da[k]._fields == db[k]._fields
            for fa, fb in zip(da[k], db[k]):
                if isinstance(fa, np.ndarray) or isinstance(fb, np.ndarray):
                    fa, fb = np.asarray(fa), np.asarray(fb)
                    assert fa.shape == fb.shape
                    assert np.array_equal(fa, fb), (k, fa, fb)
                else:
                    assert fa == fb, (k, fa, fb)


def _check_types(model):
    cameras, images, points = model
    for c in cameras.values():
        assert isinstance(c.model, str) and c.params.dtype == np.float64
    for im in images.values():
        assert im.qvec.shape == (4,) and im.tvec.shape == (3,)
        assert im.xys.dtype == np.float64 and im.xys.ndim == 2 and im.xys.shape[1] == 2
        assert im.point3D_ids.dtype == np.int64 and len(im.point3D_ids) == len(im.xys)
    for p in points.values():
        assert p.xyz.dtype == np.float64 and p.rgb.dtype == np.uint8
        assert len(p.image_ids) == len(p.point2D_idxs)


def test_camera_model_table():
    for name, (mid, n) in EXPECTED_MODELS.items():
        assert cl.CAMERA_MODEL_NAMES[name] == (mid, name, n)
        assert cl.CAMERA_MODEL_IDS[mid].model_name == name


@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_write_read_round_trip(tmp_path, ext):
    model = _random_model()
    cl.write_model(*model, tmp_path / "sparse", ext=ext)
    assert sorted(os.listdir(tmp_path / "sparse")) == sorted(f + ext for f in cl.MODEL_FILES)  # no temp files
    back = cl.read_model(str(tmp_path / "sparse"))
    _check_types(back)
    _assert_same(model, back)


def test_binary_and_text_identical(tmp_path):
    model = _random_model(1)
    cl.write_model(*model, tmp_path / "b", ext=".bin")
    cl.write_model(*model, tmp_path / "t", ext=".txt")
    _assert_same(cl.read_model(str(tmp_path / "b")), cl.read_model(str(tmp_path / "t")))
    for stem in cl.MODEL_FILES[2:]:
        for i in range(3):
            assert np.array_equal(cl.read_points3D_arrays(str(tmp_path / "b" / (stem + ".bin")))[i],
                                  cl.read_points3D_arrays(str(tmp_path / "t" / (stem + ".txt")))[i])


def test_synthetic_scene_binary_and_text_identical(tmp_path):
    kw = dict(num_views=4, width=48, height=36, num_points=300, seed=3)
    mss.make_synthetic_scene(tmp_path / "b", fmt="bin", **kw)
    mss.make_synthetic_scene(tmp_path / "t", fmt="txt", **kw)
    assert cl.detect_model_ext(tmp_path / "b" / "sparse" / "0") == ".bin"
    assert cl.detect_model_ext(tmp_path / "t" / "sparse" / "0") == ".txt"
    b = cl.read_model(str(tmp_path / "b" / "sparse" / "0"))
    t = cl.read_model(str(tmp_path / "t" / "sparse" / "0"))
    _check_types(b)
    _assert_same(b, t)
    assert sum(len(im.xys) for im in b[1].values()) > 0  # real observations were written and read


def test_points_arrays_match_dicts(tmp_path):
    model = _random_model(2)
    for ext in (".bin", ".txt"):
        cl.write_model(*model, tmp_path / ext[1:], ext=ext)
        xyz, rgb, err = cl.read_points3D_arrays(str(tmp_path / ext[1:] / ("points3D" + ext)))
        pts = list(model[2].values())
        assert xyz.dtype == np.float64 and rgb.dtype == np.uint8 and err.dtype == np.float64
        assert np.array_equal(xyz, np.stack([p.xyz for p in pts]))
        assert np.array_equal(rgb, np.stack([p.rgb for p in pts]))
        assert np.array_equal(err, np.array([p.error for p in pts]))


@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_write_points3D_arrays(tmp_path, ext):
    rng = np.random.default_rng(0)
    xyz, rgb = rng.normal(size=(100, 3)), rng.integers(0, 256, size=(100, 3)).astype(np.uint8)
    path = str(tmp_path / ("points3D" + ext))
    cl.write_points3D_arrays(path, xyz, rgb)
    x2, c2, e2 = cl.read_points3D_arrays(path)
    assert np.array_equal(x2, xyz) and np.array_equal(c2, rgb) and np.array_equal(e2, np.zeros(100))
    pts = cl.read_points3D(path)
    assert list(pts) == list(range(1, 101)) and all(len(p.image_ids) == 0 for p in pts.values())
    cl.write_points3D_arrays(path, xyz[:0], rgb[:0])  # an empty cloud is valid
    assert cl.read_points3D_arrays(path)[0].shape == (0, 3)


def test_qvec_rotmat_round_trip():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    q = np.concatenate([q, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]])
    R = cl.qvec2rotmat(q)
    assert R.shape == (len(q), 3, 3)
    assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(R), 1.0)
    assert np.allclose(cl.qvec2rotmat(-q), R)  # q and -q are the same rotation
    q2 = cl.rotmat2qvec(R)
    assert np.allclose(q2, q, atol=1e-10)
    for i in range(0, len(q), 37):  # single (unbatched) calls agree
        assert np.allclose(cl.rotmat2qvec(cl.qvec2rotmat(q[i])), q[i], atol=1e-10)
    # a known rotation: 90 degrees about z maps x to y
    qz = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    assert np.allclose(cl.qvec2rotmat(qz) @ [1, 0, 0], [0, 1, 0])


def test_read_model_prefers_bin_and_reports_missing(tmp_path):
    model = _random_model()
    d = tmp_path / "sparse" / "0"
    cl.write_model(*model, d, ext=".txt")
    cl.write_model(*model, d, ext=".bin")
    assert cl.detect_model_ext(d) == ".bin"
    os.remove(d / "images.bin")
    assert cl.detect_model_ext(d) == ".txt"  # falls back to the complete text trio
    os.remove(d / "points3D.txt")
    with pytest.raises(UserError) as e:
        cl.read_model(str(d))
    msg = str(e.value)
    assert str(d) in msg and ("images.bin" in msg or "points3D.txt" in msg) and "\n" not in msg
    with pytest.raises(UserError, match="does not exist"):
        cl.read_model(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="cameras.bin"):
        cl.read_cameras(str(tmp_path / "nowhere" / "cameras.bin"))


def test_empty_cameras_bin(tmp_path):
    path = tmp_path / "cameras.bin"
    path.write_bytes(b"")
    with pytest.raises(UserError) as e:
        cl.read_cameras(str(path))
    assert "cameras.bin" in str(e.value) and "COLMAP" in str(e.value)


@pytest.mark.parametrize("stem", ["cameras", "images", "points3D"])
def test_truncated_bin_files(tmp_path, stem):
    model = _random_model()
    cl.write_model(*model, tmp_path / "full", ext=".bin")
    data = (tmp_path / "full" / (stem + ".bin")).read_bytes()
    reader = {"cameras": cl.read_cameras, "images": cl.read_images, "points3D": cl.read_points3D}[stem]
    cuts = sorted(set(list(range(0, 40)) + list(range(40, len(data), 7)) + [len(data) - 1]))
    for cut in cuts:
        path = tmp_path / f"{stem}.bin"
        path.write_bytes(data[:cut])
        with pytest.raises(UserError) as e:
            reader(str(path))
        msg = str(e.value)
        assert f"{stem}.bin" in msg and "\n" not in msg, msg
        if stem == "points3D":
            with pytest.raises(UserError, match="points3D.bin"):
                cl.read_points3D_arrays(str(path))


def test_corrupt_bin_values(tmp_path):
    path = tmp_path / "cameras.bin"
    import struct
    path.write_bytes(struct.pack("<QIiQQ", 1, 1, 99, 10, 10) + b"\0" * 64)  # unknown model id
    with pytest.raises(UserError, match="cameras.bin.*model id 99"):
        cl.read_cameras(str(path))
    path.write_bytes(struct.pack("<Q", 10 ** 15))  # absurd count, no data
    with pytest.raises(UserError, match="cameras.bin"):
        cl.read_cameras(str(path))
    path = tmp_path / "images.bin"
    path.write_bytes(struct.pack("<QI4d3dI", 1, 1, 1, 0, 0, 0, 0, 0, 0, 1) + b"no_terminator" * 3)
    with pytest.raises(UserError, match="images.bin"):
        cl.read_images(str(path))


MALFORMED = [
    ("cameras.txt", "1 PINHOLE 640 480 500 500 320\n", "parameters"),  # wrong parameter count
    ("cameras.txt", "1 PINHOLE six 480 500 500 320 240\n", ":1"),
    ("cameras.txt", "# comment\n1 NOT_A_MODEL 640 480 1 2 3\n", "NOT_A_MODEL"),
    ("cameras.txt", "1 PINHOLE\n", ":1"),
    ("images.txt", "1 1 0 0 0 0 0 0 1 a.png\n\n2 1 0 zero 0 0 0 0 1 b.png\n\n", ":3"),
    ("images.txt", "1 1 0 0 0 0 0 0\n\n", ":1"),
    ("images.txt", "1 1 0 0 0 0 0 0 1 a.png\n10.0 20.0\n", ":2"),
    ("images.txt", "1 1 0 0 0 0 0 0 1 a.png\n10.0 20.0 x\n", ":2"),
    ("points3D.txt", "1 0 0 0 255 255 255 0.5\n2 0 0 0 255 255\n", ":2"),
    ("points3D.txt", "1 0 0 0 255 300 255 0.5\n", ":1"),
    ("points3D.txt", "1 0 0 0 255 255 255 0.5 1\n", ":1"),
    ("points3D.txt", "1 0 0 nan? 255 255 255 0.5\n", ":1"),
]


@pytest.mark.parametrize("name,text,needle", MALFORMED)
def test_malformed_text_lines(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    reader = {"cameras.txt": cl.read_cameras, "images.txt": cl.read_images, "points3D.txt": cl.read_points3D}[name]
    readers = [reader] + ([cl.read_points3D_arrays] if name == "points3D.txt" else [])
    for r in readers:
        with pytest.raises(UserError) as e:
            r(str(path))
        msg = str(e.value)
        assert name in msg and needle in msg and "\n" not in msg, msg


def test_text_quirks(tmp_path):
    """Comment lines, an empty POINTS2D line, a missing last POINTS2D line and extra blank lines are fine."""
    (tmp_path / "images.txt").write_text(
        "# header\n\n1 1 0 0 0 1 2 3 1 a.png\n\n2 0.5 0.5 0.5 0.5 0 0 0 1 b c.png\n1.5 2.5 -1 3 4 7\n"
        "3 1 0 0 0 0 0 0 2 last.png\n")
    ims = cl.read_images(str(tmp_path / "images.txt"))
    assert list(ims) == [1, 2, 3]
    assert ims[1].xys.shape == (0, 2) and ims[1].point3D_ids.shape == (0,)
    assert ims[2].name == "b c.png"
    assert np.array_equal(ims[2].xys, [[1.5, 2.5], [3, 4]]) and list(ims[2].point3D_ids) == [-1, 7]
    assert ims[3].xys.shape == (0, 2) and ims[3].camera_id == 2


def test_cross_check_with_pycolmap(tmp_path):
    """Our files read in pycolmap, and pycolmap's files read back here, give the same model."""
    pycolmap = pytest.importorskip("pycolmap")
    cameras, images, points = _random_model()
    images = {k: im._replace(camera_id=1 + k % 3) for k, im in images.items()}
    # pycolmap checks consistency: tracks must point at existing observations
    points = {k: p._replace(image_ids=np.zeros(0, np.int64), point2D_idxs=np.zeros(0, np.int64))
              for k, p in points.items()}
    for iid, im in images.items():
        ids = im.point3D_ids.copy()
        ids[:] = -1
        images[iid] = im._replace(point3D_ids=ids)
    for j, (iid, im) in enumerate(list(images.items())[:2]):
        if len(im.xys):
            pid = 1 + j
            im.point3D_ids[0] = pid
            points[pid] = points[pid]._replace(image_ids=np.array([iid]), point2D_idxs=np.array([0]))
    cameras = {k: c for k, c in cameras.items() if k <= 3}
    model = (cameras, images, points)
    cl.write_model(*model, tmp_path / "ours", ext=".bin")
    rec = pycolmap.Reconstruction(str(tmp_path / "ours"))
    assert rec.num_cameras() == 3 and rec.num_images() == len(images) and rec.num_points3D() == len(points)
    for ext, writer in ((".txt", rec.write_text), (".bin", rec.write_binary)):
        d = tmp_path / ("theirs" + ext)
        d.mkdir()
        writer(str(d))
        back = cl.read_model(str(d))
        for da, db in zip(model, back):
            assert set(da) == set(db)
        for k, c in cameras.items():
            assert back[0][k].model == c.model and np.allclose(back[0][k].params, c.params, rtol=1e-15)
        for k, im in images.items():
            b = back[1][k]
            assert b.name == im.name and b.camera_id == im.camera_id
            assert np.allclose(b.qvec, im.qvec, atol=1e-12) and np.allclose(b.tvec, im.tvec, atol=1e-12)
            assert np.array_equal(b.xys, im.xys) and np.array_equal(b.point3D_ids, im.point3D_ids)
        for k, p in points.items():
            b = back[2][k]
            assert np.array_equal(b.xyz, p.xyz) and np.array_equal(b.rgb, p.rgb)
            assert np.array_equal(b.image_ids, p.image_ids) and np.array_equal(b.point2D_idxs, p.point2D_idxs)
