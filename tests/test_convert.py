"""convert.py: SfM on a synthetic capture recovers the poses; undistortion matches ideal pinhole images; errors.

The capture is ray-cast here: a room and three boxes (axis-aligned), every face covered with its own multi-scale
random texture, so SIFT finds plenty of distinct features (the repetitive checkerboards of
scripts/make_synthetic_scene.py are too ambiguous for matching). Distorted photos are ray-cast with rays through
the distorted pixel positions (cv2.undistortPoints), so the ideal undistorted images are exact renderings.
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import convert
from scene import colmap_loader as cl
from utils.errors import UserError
from utils.graphics_utils import look_at

pycolmap = pytest.importorskip("pycolmap")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W, H = 320, 240
F = 0.5 * W / np.tan(np.deg2rad(30.0))  # 60 degree horizontal field of view
K_TRUE = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])
BOXES = [((-6, -6, -1), (6, 6, 5)),  # the room, seen from inside
         ((-1.0, -0.8, -1), (0.6, 0.9, 0.6)), ((1.2, -1.8, -1), (2.0, -0.9, 1.4)), ((-2.2, 1.0, -1), (-1.4, 2.0, 0.2))]
THREADS = "2"


# ----------------------------------------------------------------------------------------------------------------
# a tiny ray caster


def _noise_texture(rng, size=384):
    tex = np.zeros((size, size, 3), np.float32)
    for cells, amp in ((3, 0.6), (12, 0.4), (48, 0.3), (128, 0.2)):
        tex += amp * cv2.resize(rng.random((cells, cells, 3)).astype(np.float32), (size, size),
                                interpolation=cv2.INTER_CUBIC)
    tex -= tex.min()
    return tex / tex.max()


def _bilinear(tex, x, y):
    x0 = np.minimum(np.floor(x).astype(int), tex.shape[1] - 2)
    y0 = np.minimum(np.floor(y).astype(int), tex.shape[0] - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return ((tex[y0, x0] * (1 - fx) + tex[y0, x0 + 1] * fx) * (1 - fy)
            + (tex[y0 + 1, x0] * (1 - fx) + tex[y0 + 1, x0 + 1] * fx) * fy)


def _textures(seed=0):
    rng = np.random.default_rng(seed)
    return [[_noise_texture(rng) for _ in range(6)] for _ in BOXES]


def _cast(textures, R, t, rays):
    """Colours [N, 3] and z-depths [N] of camera rays [N, 3] (z = 1) for world-to-camera R, t."""
    C = -R.T @ t
    dw = rays @ R  # world directions, parametrised so that the ray parameter is the z-depth
    inv = 1.0 / np.where(np.abs(dw) < 1e-12, 1e-12, dw)
    best = np.full(len(dw), np.inf)
    face = np.full(len(dw), -1)
    rows = np.arange(len(dw))
    for bi, (lo, hi) in enumerate(BOXES):
        t1, t2 = (np.asarray(lo) - C) * inv, (np.asarray(hi) - C) * inv
        if bi == 0:  # from inside: the exit point
            tt = np.maximum(t1, t2)
            s, ax = tt.min(1), tt.argmin(1)
            ok, side = s > 0, dw[rows, ax] > 0
        else:  # from outside: the entry point
            tt = np.minimum(t1, t2)
            s, ax = tt.max(1), tt.argmax(1)
            ok, side = (s <= np.maximum(t1, t2).min(1)) & (s > 1e-6), dw[rows, ax] < 0
        m = ok & (s < best)
        best[m] = s[m]
        face[m] = bi * 6 + ax[m] * 2 + side[m]
    P = C + best[:, None] * dw
    col = np.zeros((len(dw), 3), np.float32)
    for fid in np.unique(face):
        bi, ax, side = fid // 6, (fid % 6) // 2, fid % 2
        lo, hi = np.asarray(BOXES[bi][0], float), np.asarray(BOXES[bi][1], float)
        a, b = [i for i in range(3) if i != ax]
        m = face == fid
        tex = textures[bi][ax * 2 + side]
        S = tex.shape[0] - 1
        ca = np.clip((P[m, a] - lo[a]) / (hi[a] - lo[a]), 0, 1)
        cb = np.clip((P[m, b] - lo[b]) / (hi[b] - lo[b]), 0, 1)
        col[m] = _bilinear(tex, ca * S, cb * S)
    return col, best


def render(textures, R, t, K, width, height, dist=None, ss=2):
    """uint8 RGB [H, W, 3]; with ``dist`` (OpenCV k1, k2, p1, p2) a distorted photo of camera K."""
    sub = (np.arange(ss) + 0.5) / ss
    u = (np.arange(width)[:, None] + sub).reshape(-1)
    v = (np.arange(height)[:, None] + sub).reshape(-1)
    U, V = np.meshgrid(u, v)
    pix = np.stack([U.ravel(), V.ravel()], 1)
    if dist is None:
        xy = (pix - K[:2, 2]) / np.diag(K)[:2]
    else:  # the ideal (undistorted) normalised coordinates of each distorted pixel position
        xy = cv2.undistortPoints(pix[:, None].astype(np.float64), K, np.asarray(dist, float),
                                 criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12))[:, 0]
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    col, _ = _cast(textures, R, t, rays)
    img = col.reshape(height, ss, width, ss, 3).mean((1, 3))
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def ring_poses(n, seed=1, radius=4.2):
    rng = np.random.default_rng(seed)
    poses = []
    for k in range(n):
        az = 2 * np.pi * k / n
        C = np.array([radius * np.cos(az), radius * np.sin(az), 1.0 + 0.6 * (k % 2)])
        R = look_at(C, rng.uniform(-0.2, 0.2, 3), (0.0, 0.0, 1.0))
        poses.append((R, -R @ C))
    return poses


def _save(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1]))


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def umeyama(src, dst):
    """Similarity (s, R, t) minimising |dst - (s R src + t)|^2 over corresponding rows."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    s = np.trace(np.diag(D) @ S) / xs.var(0).sum()
    return s, R, mu_d - s * R @ mu_s


def _run(argv):
    return convert.main(argv + ["--num_threads", THREADS])


# ----------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def textures():
    return _textures()


@pytest.fixture(scope="module")
def capture(tmp_path_factory, textures):
    """12 photos on a ring around the boxes plus one unrelated noise photo, in <root>/input."""
    root = tmp_path_factory.mktemp("capture")
    poses = ring_poses(12)
    for k, (R, t) in enumerate(poses):
        _save(str(root / "input" / f"view_{k:02d}.png"), render(textures, R, t, K_TRUE, W, H))
    rng = np.random.default_rng(5)
    noise = cv2.resize((rng.random((30, 40, 3)) * 255).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
    _save(str(root / "input" / "zz_noise.png"), noise)
    return root, poses


# ----------------------------------------------------------------------------------------------------------------
# structure from motion


def test_sfm_recovers_poses_up_to_similarity(capture, capsys):
    root, poses = capture
    summary = _run(["-s", str(root), "--resize"])
    out = capsys.readouterr().out
    assert summary["registered"] == 12 and summary["total"] == 13, summary
    assert summary["unregistered"] == ["zz_noise.png"]
    assert "Registered 12/13 photos" in out

    # layout like the 3DGS reference, nothing temporary left
    assert os.path.isfile(root / "distorted" / "database.db")
    cams_d, imgs_d, _ = cl.read_model(str(root / "distorted" / "sparse" / "0"))
    assert {c.model for c in cams_d.values()} == {"OPENCV"} and len(cams_d) == 1
    cams, imgs, _ = cl.read_model(str(root / "sparse" / "0"))
    assert {c.model for c in cams.values()} == {"PINHOLE"}
    assert sorted(os.listdir(root / "images")) == sorted(im.name for im in imgs.values())
    assert not [d for d in os.listdir(root) if d.startswith(convert.TMP_PREFIX)]
    cam = next(iter(cams.values()))
    for f in (2, 4, 8):
        small = cv2.imread(str(root / f"images_{f}" / "view_00.png"))
        assert small.shape[:2] == (round(cam.height / f), round(cam.width / f))

    # intrinsics close to the truth (OPENCV distortion estimated ~0)
    assert abs(cam.params[0] / F - 1) < 0.02 and abs(cam.params[1] / F - 1) < 0.02, cam.params

    # poses: align the camera centres with a similarity, then compare centres and rotations
    names = sorted(im.name for im in imgs.values())
    by_name = {im.name: im for im in imgs.values()}
    Rs_est = [cl.qvec2rotmat(by_name[n].qvec) for n in names]
    C_est = np.stack([-R.T @ by_name[n].tvec for R, n in zip(Rs_est, names)])
    gt = {f"view_{k:02d}.png": p for k, p in enumerate(poses)}
    C_gt = np.stack([-gt[n][0].T @ gt[n][1] for n in names])
    s, Ra, ta = umeyama(C_est, C_gt)
    C_al = (s * (Ra @ C_est.T)).T + ta
    extent = np.linalg.norm(C_gt - C_gt.mean(0), axis=1).max()
    trans_err = np.linalg.norm(C_al - C_gt, axis=1) / extent
    rot_err = []
    for R_e, n in zip(Rs_est, names):
        D = gt[n][0] @ Ra @ R_e.T  # identity when the aligned camera-to-world rotation matches
        rot_err.append(np.degrees(np.arccos(np.clip((np.trace(D) - 1) / 2, -1, 1))))
    print(f"pose error after similarity alignment: rotation max {max(rot_err):.3f} deg, "
          f"centre max {trans_err.max() * 100:.3f}% of the camera extent")
    assert max(rot_err) < 0.5, rot_err
    assert trans_err.max() < 0.01, trans_err


# ----------------------------------------------------------------------------------------------------------------
# undistortion


@pytest.mark.parametrize("model,ext", [("SIMPLE_RADIAL", ".txt"), ("OPENCV", ".bin")])
def test_skip_matching_undistorts_to_ideal_pinhole(tmp_path, textures, model, ext):
    poses = ring_poses(12)[:3]
    if model == "SIMPLE_RADIAL":
        params, K, dist = [F, W / 2, H / 2, -0.12], K_TRUE, [-0.12, 0, 0, 0]
    else:
        fx, fy, cx, cy = F * 1.02, F * 0.99, W / 2 + 3.5, H / 2 - 2.0
        params, K = [fx, fy, cx, cy, -0.1, 0.02, 0.002, -0.001], np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        dist = [-0.1, 0.02, 0.002, -0.001]
    images, distorted = {}, {}
    for k, (R, t) in enumerate(poses):
        name = f"d{k}.png"
        distorted[name] = render(textures, R, t, K, W, H, dist=dist)
        _save(str(tmp_path / "input" / name), distorted[name])
        images[k + 1] = cl.Image(k + 1, cl.rotmat2qvec(R), t, 1, name, np.zeros((0, 2)), np.zeros(0, np.int64))
    rng = np.random.default_rng(0)
    pts = {i + 1: cl.Point3D(i + 1, rng.uniform(-1, 1, 3), np.array([128, 128, 128]), 0.5, np.zeros(0, np.int64),
                             np.zeros(0, np.int64)) for i in range(50)}
    cams = {1: cl.Camera(1, model, W, H, np.asarray(params, float))}
    cl.write_model(cams, images, pts, str(tmp_path / "distorted" / "sparse" / "0"), ext=ext)
    os.makedirs(tmp_path / "images")  # an old images/ folder is replaced as a whole
    _save(str(tmp_path / "images" / "stale.png"), distorted["d0.png"])

    _run(["-s", str(tmp_path), "--skip_matching"])
    ucams, uimgs, _ = cl.read_model(str(tmp_path / "sparse" / "0"))
    assert len(ucams) == 1 and next(iter(ucams.values())).model == "PINHOLE"
    assert sorted(os.listdir(tmp_path / "images")) == sorted(distorted)
    uc = next(iter(ucams.values()))
    Ku = np.array([[uc.params[0], 0, uc.params[2]], [0, uc.params[1], uc.params[3]], [0, 0, 1]])
    for im in uimgs.values():
        got = cv2.imread(str(tmp_path / "images" / im.name))[:, :, ::-1]
        assert got.shape[:2] == (uc.height, uc.width)
        k = int(im.name[1])
        np.testing.assert_allclose(cl.qvec2rotmat(im.qvec), poses[k][0], atol=1e-9)
        ideal = render(textures, poses[k][0], poses[k][1], Ku, uc.width, uc.height)
        b = 3  # border pixels interpolate against the frame edge
        p_und = _psnr(got[b:-b, b:-b], ideal[b:-b, b:-b])
        p_raw = _psnr(distorted[im.name][b:-b, b:-b],
                      render(textures, poses[k][0], poses[k][1], K, W, H)[b:-b, b:-b])
        print(f"{model} {im.name}: undistorted vs ideal PSNR {p_und:.2f} dB (distorted vs pinhole {p_raw:.2f} dB)")
        assert p_und > 30.0 and p_und > p_raw + 8, (p_und, p_raw)


# ----------------------------------------------------------------------------------------------------------------
# errors


def test_errors_for_missing_or_bad_input(tmp_path):
    scene = tmp_path / "scene"
    with pytest.raises(UserError, match="does not exist"):
        _run(["-s", str(scene)])
    os.makedirs(scene)
    with pytest.raises(UserError, match="input"):
        _run(["-s", str(scene)])
    os.makedirs(scene / "input")
    (scene / "input" / "notes.txt").write_text("not a photo")
    with pytest.raises(UserError, match="no images in .*notes.txt"):
        _run(["-s", str(scene)])
    rng = np.random.default_rng(0)
    for k in range(3):
        _save(str(scene / "input" / f"p{k}.jpg"), (rng.random((48, 64, 3)) * 255).astype(np.uint8))
    (scene / "input" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        _run(["-s", str(scene)])
    os.remove(scene / "input" / "broken.jpg")
    _save(str(scene / "input" / "p_big.jpg"), (rng.random((96, 128, 3)) * 255).astype(np.uint8))
    with pytest.raises(UserError, match="--no_single_camera"):
        _run(["-s", str(scene), "--single_camera"])
    with pytest.raises(UserError, match="distorted/sparse/0"):
        _run(["-s", str(scene), "--skip_matching"])
    assert sorted(os.listdir(scene)) == ["input"]  # nothing written by any failed run


def test_unrelated_photos_fail_cleanly(tmp_path):
    rng = np.random.default_rng(1)
    for k in range(3):  # independent noise: nothing to match
        img = cv2.resize((rng.random((24, 32, 3)) * 255).astype(np.uint8), (W // 2, H // 2),
                         interpolation=cv2.INTER_NEAREST)
        _save(str(tmp_path / "input" / f"n{k}.png"), img)
    with pytest.raises(UserError, match="could be matched|registered"):
        _run(["-s", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["input"]


def test_too_few_registered_keeps_distorted_model(tmp_path, textures):
    poses = ring_poses(24)[:4]  # 4 neighbouring views register; 4 noise photos do not
    for k, (R, t) in enumerate(poses):
        _save(str(tmp_path / "input" / f"v{k}.png"), render(textures, R, t, K_TRUE, W, H))
    rng = np.random.default_rng(2)
    for k in range(4):
        img = cv2.resize((rng.random((30, 40, 3)) * 255).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
        _save(str(tmp_path / "input" / f"z{k}.png"), img)
    with pytest.raises(UserError, match=r"only 4 of 8 .*--skip_matching"):
        _run(["-s", str(tmp_path), "--min_registered_fraction", "0.75", "--camera", "SIMPLE_RADIAL"])
    assert sorted(os.listdir(tmp_path)) == ["distorted", "input"]
    cams, imgs, _ = cl.read_model(str(tmp_path / "distorted" / "sparse" / "0"))
    assert sorted(im.name for im in imgs.values()) == [f"v{k}.png" for k in range(4)]
    # the doubtful first solve (photos left out) triggered the second one; either way the model is SIMPLE_RADIAL
    cam = next(iter(cams.values()))
    assert cam.model == "SIMPLE_RADIAL" and abs(cam.params[0] / F - 1) < 0.02, cam
    db = pycolmap.Database.open(str(tmp_path / "distorted" / "database.db"))
    try:  # the second solve's temporary SIMPLE_PINHOLE cameras were put back
        assert {c.model_name for c in db.read_all_cameras()} == {"SIMPLE_RADIAL"}
    finally:
        db.close()
    _run(["-s", str(tmp_path), "--skip_matching"])  # accepting it
    assert sorted(os.listdir(tmp_path / "images")) == [f"v{k}.png" for k in range(4)]


def test_interrupted_run_leaves_scene_untouched(tmp_path, textures, monkeypatch):
    R, t = ring_poses(12)[0]
    for k in range(3):
        _save(str(tmp_path / "input" / f"v{k}.png"), render(textures, R, t, K_TRUE, W // 2, H // 2, ss=1))
    cams = {1: cl.Camera(1, "SIMPLE_RADIAL", W // 2, H // 2, np.array([F / 2, W / 4, H / 4, -0.05]))}
    imgs = {k + 1: cl.Image(k + 1, cl.rotmat2qvec(R), t, 1, f"v{k}.png", np.zeros((0, 2)), np.zeros(0, np.int64))
            for k in range(3)}
    pts = {1: cl.Point3D(1, np.zeros(3), np.array([1, 2, 3]), 0.0, np.zeros(0, np.int64), np.zeros(0, np.int64))}
    cl.write_model(cams, imgs, pts, str(tmp_path / "distorted" / "sparse" / "0"))
    os.makedirs(tmp_path / "sparse" / "0")
    (tmp_path / "sparse" / "0" / "old.txt").write_text("old model")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "write_resized", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(["-s", str(tmp_path), "--skip_matching", "--resize"])
    assert sorted(os.listdir(tmp_path)) == ["distorted", "input", "sparse"]
    assert os.listdir(tmp_path / "sparse" / "0") == ["old.txt"]


def test_cli_reports_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(REPO, "convert.py"), "-s", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: scene folder") and "Traceback" not in r.stderr
