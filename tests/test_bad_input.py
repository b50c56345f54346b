"""Bad input to every CLI (train.py, render.py, metrics.py, convert.py, utils/make_depth_scale.py), table-driven.

Each case builds a broken scene, model folder or command line in a temporary folder (from a tiny valid synthetic
scene), runs the CLI's main(argv) in-process through run_cli (as ``python <cli>.py`` does) and checks: a non-zero
exit, exactly one line on stderr (progress bars aside) that starts with ``error:`` and names the file or flag, no
traceback, and nothing half-written: the watched output folders are unchanged (or, for a run that stops while
training, hold no temporary file, no empty iteration folder and no PLY).
"""
import json
import math
import os
import re
import shutil
import tempfile
from collections import namedtuple

import cv2
import numpy as np
import pytest
import torch

import convert
import metrics
import render
import train
from scene import colmap_loader as cl
from scene.gaussian_model import GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from utils import make_depth_scale as mds
from utils.errors import run_cli

W, H = 32, 24
MAINS = dict(train=train.main, render=render.main, metrics=metrics.main, convert=convert.main,
             depth=mds.main)
NO_GPU = not torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------------------------
# the valid inputs every case starts from

def _make_blender(dst, colmap_scene):
    """A NeRF-synthetic scene (transforms_*.json, OpenGL camera axes) with the views of a COLMAP scene."""
    cams, imgs, _ = cl.read_model(os.path.join(colmap_scene, "sparse", "0"))
    cam = cams[1]
    os.makedirs(os.path.join(dst, "train"))
    frames = []
    for k, im in enumerate(sorted(imgs.values(), key=lambda i: i.name)):
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = cl.qvec2rotmat(im.qvec), im.tvec
        c2w = np.linalg.inv(w2c)
        c2w[:3, 1:3] *= -1  # COLMAP (y down, z forward) -> OpenGL (y up, z back)
        shutil.copy(os.path.join(colmap_scene, "images", im.name), os.path.join(dst, "train", f"r_{k}.png"))
        frames.append({"file_path": f"./train/r_{k}", "transform_matrix": c2w.tolist()})
    fov = 2 * math.atan(cam.width / (2 * cam.params[0]))
    for name, part in (("transforms_train.json", frames[:6]), ("transforms_test.json", frames[6:])):
        with open(os.path.join(dst, name), "w") as f:
            json.dump({"camera_angle_x": fov, "frames": part}, f)
    return dst


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    b = dict(root=str(root))
    b["bin"] = make_synthetic_scene(str(root / "bin"), num_views=8, width=W, height=H, num_points=200, seed=4)
    b["txt"] = str(root / "txt")
    shutil.copytree(b["bin"], b["txt"])
    sparse = os.path.join(b["txt"], "sparse", "0")
    cl.write_model(*cl.read_model(sparse), sparse, ext=".txt")
    for f in cl.MODEL_FILES:
        os.remove(os.path.join(sparse, f + ".bin"))
    b["blender"] = _make_blender(str(root / "blender"), b["bin"])
    # a trained model with a checkpoint, and its renders (for render.py and metrics.py)
    b["model"] = str(root / "model")
    train.main(["-s", b["bin"], "-m", b["model"], "--iterations", "4", "--views_per_step", "1", "--sh_degree", "1",
                "--checkpoint_iterations", "2", "--test_iterations", "4", "--eval", "--quiet"])
    render.main(["-m", b["model"], "--quiet"])
    b["ckpt"] = os.path.join(b["model"], "chkpnt2.pth")
    b["ply"] = os.path.join(b["model"], "point_cloud", "iteration_4", "point_cloud.ply")
    # monocular depth maps for make_depth_scale.py (their content does not matter here)
    b["depths"] = str(root / "depths")
    os.makedirs(b["depths"])
    for name in os.listdir(os.path.join(b["bin"], "images")):
        mds.write_inverse_depth(os.path.join(b["depths"], name), np.full((H, W), 0.5))
    return b


# ----------------------------------------------------------------------------------------------------------------
# helpers to build broken inputs

def copy_scene(b, tmp, kind="bin"):
    dst = str(tmp / f"scene_{kind}")
    shutil.copytree(b[kind], dst)
    return dst


def edit_model(scene, cameras=None, images=None, points=None):
    """Rewrite sparse/0 (in its own format) after fn(dict) edits of its cameras / images / points3D."""
    sparse = os.path.join(scene, "sparse", "0")
    ext = cl.detect_model_ext(sparse)
    model = list(cl.read_model(sparse))
    for i, fn in enumerate((cameras, images, points)):
        if fn is not None:
            res = fn(model[i])
            model[i] = model[i] if res is None else res
    cl.write_model(*model, sparse, ext=ext)
    return scene


def first_key(d):
    return sorted(d)[0]


def replace_first(d, **kw):
    k = first_key(d)
    d[k] = d[k]._replace(**kw)


def point_xyz(value):
    def fn(points):
        k = first_key(points)
        points[k] = points[k]._replace(xyz=np.array([value, 0.0, 1.0]))
    return fn


def edit_transforms(scene, fn, name="transforms_train.json"):
    path = os.path.join(scene, name)
    with open(path) as f:
        meta = json.load(f)
    fn(meta)
    with open(path, "w") as f:
        json.dump(meta, f)
    return scene


def write_ply_with(path, src, column, value):
    """A copy of the PLY ``src`` with one value of one attribute replaced."""
    from plyfile import PlyData
    with open(src, "rb") as f:  # read into memory: ``path`` may be ``src``
        ply = PlyData.read(f, mmap=False)
    ply["vertex"][column][3] = value
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ply.write(path)
    return path


def copy_model(b, tmp):
    dst = str(tmp / "model")
    shutil.copytree(b["model"], dst)
    return dst


def teacher_folder(b, tmp, iteration, sh_degree=1, nan=False):
    """A -m folder holding model 0 (G_perb) at ``iteration``, for --start 1."""
    out = str(tmp / "distill")
    ply = os.path.join(out, "point_cloud_0", f"iteration_{iteration}", "point_cloud.ply")
    if sh_degree == 1 and not nan:
        os.makedirs(os.path.dirname(ply))
        shutil.copy(b["ply"], ply)
    elif nan:
        write_ply_with(ply, b["ply"], "opacity", float("nan"))
    else:
        m = GaussianModel(sh_degree)
        m.create_from_points(np.random.default_rng(0).random((20, 3)), np.full((20, 3), 0.5))
        m.save_ply(ply)
    return out


def photos(tmp, n=3, sizes=None):
    """A convert.py scene: ``n`` random photos in <scene>/input."""
    scene = tmp / "photos"
    os.makedirs(scene / "input")
    rng = np.random.default_rng(0)
    for k in range(n):
        h, w = (sizes or {}).get(k, (H, W))
        cv2.imwrite(str(scene / "input" / f"p{k}.png"), (rng.random((h, w, 3)) * 255).astype(np.uint8))
    return str(scene)


def renders(b, tmp):
    """A model folder holding only render.py's test/ours_4 (renders/ and gt/), for metrics.py."""
    dst = tmp / "rendered"
    shutil.copytree(os.path.join(b["model"], "test"), dst / "test")
    return str(dst)


def T(b, tmp, *flags, s="bin"):
    """train.py on a copy-free base scene into a fresh -m."""
    return ["-s", b[s], "-m", str(tmp / "out"), *flags]


# ----------------------------------------------------------------------------------------------------------------
# the table: (id, cli, build(b, tmp) -> (argv, watched paths), fragments the error line must hold, options)

Case = namedtuple("Case", ["id", "cli", "build", "expect", "opts"])
CASES = []


def case(id, cli, expect, **opts):
    def deco(fn):
        CASES.append(Case(id, cli, fn, expect, opts))
        return fn
    return deco


def add(id, cli, build, expect, **opts):
    CASES.append(Case(id, cli, build, expect, opts))


def out(tmp):
    return [str(tmp / "out")]


# --- train.py: COLMAP scenes
def _colmap(kind, cameras=None, images=None, points=None, extra=(), prepare=None):
    def build(b, tmp):
        scene = copy_scene(b, tmp, kind)
        if prepare:
            prepare(scene)
        edit_model(scene, cameras, images, points)
        return ["-s", scene, "-m", str(tmp / "out"), *extra], out(tmp)
    return build


add("points3D NaN (bin)", "train", _colmap("bin", points=point_xyz(float("nan"))), ["points3D.bin", "NaN"])
add("points3D Inf (txt)", "train", _colmap("txt", points=point_xyz(float("inf"))), ["points3D.txt", "infinite"])
add("points3D -Inf (bin)", "train", _colmap("bin", points=point_xyz(-float("inf"))), ["points3D.bin"])
add("NaN quaternion (images.txt)", "train",
    _colmap("txt", images=lambda d: replace_first(d, qvec=np.array([np.nan, 0, 0, 1.0]))), ["images.txt", "view_000"])
add("zero quaternion (images.bin)", "train",
    _colmap("bin", images=lambda d: replace_first(d, qvec=np.zeros(4))), ["images.bin", "zero pose"])
add("Inf translation (images.txt)", "train",
    _colmap("txt", images=lambda d: replace_first(d, tvec=np.array([0, np.inf, 0.0]))), ["images.txt", "view_000"])
add("camera of width 0 (txt)", "train", _colmap("txt", cameras=lambda d: replace_first(d, width=0)),
    ["cameras.txt", "0x24"])
add("camera of negative height (txt)", "train", _colmap("txt", cameras=lambda d: replace_first(d, height=-24)),
    ["cameras.txt", "32x-24"])
add("negative focal length (txt)", "train",
    _colmap("txt", cameras=lambda d: replace_first(d, params=d[1].params * np.array([-1, 1, 1, 1]))),
    ["cameras.txt", "focal length"])
add("zero focal length (bin)", "train",
    _colmap("bin", cameras=lambda d: replace_first(d, params=d[1].params * np.array([1, 0, 1, 1]))),
    ["cameras.bin", "focal length"])
add("NaN principal point (txt)", "train",
    _colmap("txt", cameras=lambda d: replace_first(d, params=np.array([*d[1].params[:2], np.nan, 12.0]))),
    ["cameras.txt", "NaN"])
add("distorted camera model", "train",
    _colmap("bin", cameras=lambda d: replace_first(d, model="OPENCV", params=np.r_[d[1].params, np.zeros(4)])),
    ["OPENCV", "convert.py"])
add("image refers to an unknown camera", "train", _colmap("bin", images=lambda d: replace_first(d, camera_id=7)),
    ["view_000", "camera 7"])
add("no images in the model", "train", _colmap("txt", images=lambda d: {}), ["images.txt", "no images"])
add("no 3D points", "train", _colmap("bin", points=lambda d: {}), ["sparse", "no 3D points"])


def _image_edit(fn):
    def build(b, tmp):
        scene = copy_scene(b, tmp)
        fn(os.path.join(scene, "images"))
        return ["-s", scene, "-m", str(tmp / "out")], out(tmp)
    return build


add("image of another aspect ratio than its camera", "train",
    _image_edit(lambda d: cv2.imwrite(os.path.join(d, "view_003.png"), np.zeros((H, W + 9, 3), np.uint8))),
    ["view_003.png", "another aspect ratio"])
add("unreadable image", "train",
    _image_edit(lambda d: open(os.path.join(d, "view_002.png"), "wb").write(b"not a png")), ["view_002.png"])
add("image listed but missing", "train", _image_edit(lambda d: os.remove(os.path.join(d, "view_005.png"))),
    ["view_005.png", "missing"])
add("images folder missing", "train", _image_edit(shutil.rmtree), ["images", "does not exist"])


def _sparse_file(name, data):
    def build(b, tmp):
        scene = copy_scene(b, tmp)
        p = os.path.join(scene, "sparse", "0", name)
        with open(p, "rb") as f:
            raw = f.read()
        with open(p, "wb") as f:
            f.write(data(raw))
        return ["-s", scene, "-m", str(tmp / "out")], out(tmp)
    return build


add("empty cameras.bin", "train", _sparse_file("cameras.bin", lambda r: b""), ["cameras.bin", "empty"])
add("truncated images.bin", "train", _sparse_file("images.bin", lambda r: r[:100]), ["images.bin"])


@case("malformed points3D.txt line", "train", ["points3D.txt", "malformed"])
def _(b, tmp):
    scene = copy_scene(b, tmp, "txt")
    with open(os.path.join(scene, "sparse", "0", "points3D.txt"), "a") as f:
        f.write("999 1.0 2.0\n")
    return ["-s", scene, "-m", str(tmp / "out")], out(tmp)


@case("sparse/0 without points3D", "train", ["sparse", "points3D"])
def _(b, tmp):
    scene = copy_scene(b, tmp)
    os.remove(os.path.join(scene, "sparse", "0", "points3D.bin"))
    return ["-s", scene, "-m", str(tmp / "out")], out(tmp)


# --- train.py: NeRF-synthetic scenes
def _blender(fn, name="transforms_train.json", extra=()):
    def build(b, tmp):
        scene = copy_scene(b, tmp, "blender")
        edit_transforms(scene, fn, name)
        return ["-s", scene, "-m", str(tmp / "out"), *extra], out(tmp)
    return build


def _frame0(**kw):
    def fn(meta):
        fr = meta["frames"][0]
        for k, v in kw.items():
            if v is None:
                fr.pop(k)
            else:
                fr[k] = v
    return fn


add("frame without transform_matrix", "train", _blender(_frame0(transform_matrix=None)),
    ["transforms_train.json", "frame 0", "transform_matrix"])
add("frame without file_path", "train", _blender(_frame0(file_path=None)),
    ["transforms_train.json", "frame 0", "file_path"])
add("2x2 transform_matrix", "train", _blender(_frame0(transform_matrix=[[1, 0], [0, 1]])),
    ["transforms_train.json", "frame 0", "(2, 2)"])
add("singular transform_matrix", "train",
    _blender(_frame0(transform_matrix=[[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]])),
    ["transforms_train.json", "singular"])
add("NaN in transform_matrix", "train",
    _blender(_frame0(transform_matrix=[[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]])),
    ["transforms_train.json", "NaN"])
add("transform_matrix of text", "train", _blender(_frame0(transform_matrix="identity")),
    ["transforms_train.json", "transform_matrix"])
add("test split frame without transform_matrix", "train",
    _blender(_frame0(transform_matrix=None), "transforms_test.json"), ["transforms_test.json", "frame 0"])
add("camera_angle_x of 0", "train", _blender(lambda m: m.update(camera_angle_x=0)), ["camera_angle_x"])
add("frames not a list", "train", _blender(lambda m: m.update(frames={"a": 1})), ["transforms_train.json", "frames"])
add("no training frames", "train", _blender(lambda m: m.update(frames=[]), extra=("--eval",)),
    ["transforms_train.json", "no frames"])
add("-d with a NeRF-synthetic scene", "train", _blender(lambda m: None, extra=("-d", "depths")), ["-d/--depths"])
add("--num_random_points 0", "train", _blender(lambda m: None, extra=("--num_random_points", "0")),
    ["--num_random_points 0"])


@case("transforms_test.json missing", "train", ["transforms_test.json"])
def _(b, tmp):
    scene = copy_scene(b, tmp, "blender")
    os.remove(os.path.join(scene, "transforms_test.json"))
    return ["-s", scene, "-m", str(tmp / "out")], out(tmp)


@case("transforms_train.json not JSON", "train", ["transforms_train.json"])
def _(b, tmp):
    scene = copy_scene(b, tmp, "blender")
    with open(os.path.join(scene, "transforms_train.json"), "w") as f:
        f.write("{ not json")
    return ["-s", scene, "-m", str(tmp / "out")], out(tmp)


# --- train.py: flags
for flag, value in (("--scaling_lr", "nan"), ("--lambda_dssim", "inf"), ("--position_lr_init", "-inf"),
                    ("--steps_scale", "nan"), ("--percent_dense", "nan"), ("--lambda_distill", "inf")):
    add(f"{flag} {value}", "train", lambda b, tmp, f=flag, v=value: (T(b, tmp, f"{f}={v}"), out(tmp)),
        [flag, "finite"])
# the error names the flag and the bad value ("--steps_scale 0" in "--steps_scale 0.0 must be positive")
for flag, value in (("--iterations", "0"), ("--iterations", "-5"), ("--steps_scale", "0"), ("--sh_degree", "4"),
                    ("--views_per_step", "0"), ("--resolution", "3"), ("--num_models", "2"), ("--start", "2"),
                    ("--imp_metric", "attic"), ("--optimizer_type", "sgd"), ("--student_max_ratio", "1.5"),
                    ("--novel_views", "-1"), ("--novel_view_prob", "1.5"), ("--lambda_novel", "-0.5"),
                    ("--novel_view_start", "-1"), ("--student_tail", "-0.5"),
                    ("--backend", "vulkan"), ("--data_device", "tpu")):
    add(f"{flag} {value}", "train", lambda b, tmp, f=flag, v=value: (T(b, tmp, f, v), out(tmp)), [f"{flag} {value}"])
add("--data_device cuda without a GPU", "train",
    lambda b, tmp: (T(b, tmp, "--data_device", "cuda"), out(tmp)), ["--data_device cuda", "no CUDA"],
    skip=None if NO_GPU else "a GPU is present")
add("-s missing", "train", lambda b, tmp: (["-s", str(tmp / "nope"), "-m", str(tmp / "out")], out(tmp)),
    ["nope", "does not exist"])
add("-s not given", "train", lambda b, tmp: (["-m", str(tmp / "out")], out(tmp)), ["-s/--source_path"])


@case("-s a folder of neither scene type", "train", ["could not recognise"])
def _(b, tmp):
    os.makedirs(tmp / "empty_scene")
    return ["-s", str(tmp / "empty_scene"), "-m", str(tmp / "out")], out(tmp)


# --- train.py: the output folder
@case("-m under a regular file", "train", ["-m/--model_path", "a_file", "is a file"])
def _(b, tmp):
    (tmp / "a_file").write_text("x")
    return T(b, tmp)[:2] + ["-m", str(tmp / "a_file" / "out")], [str(tmp)]


@case("-m is a regular file", "train", ["-m/--model_path", "a_file", "is a file"])
def _(b, tmp):
    (tmp / "a_file").write_text("x")
    return T(b, tmp)[:2] + ["-m", str(tmp / "a_file")], [str(tmp)]


@case("-m in a folder where no file can be created (/sys)", "train", ["-m/--model_path", "not writable"])
def _(b, tmp):
    target = "/sys/distilled3dgs_bad_input_test"
    try:  # sysfs refuses new files even to root
        with tempfile.NamedTemporaryFile(dir="/sys"):
            pytest.skip("/sys accepts new files here")
    except OSError:
        pass
    return T(b, tmp)[:2] + ["-m", target], [target]


@case("-m on a read-only folder", "train", ["-m/--model_path", "not writable"])
def _(b, tmp):
    if os.geteuid() == 0:
        pytest.skip("root may write into a read-only folder (no error to give); the /sys case covers the check")
    ro = tmp / "ro"
    os.makedirs(ro)
    os.chmod(ro, 0o555)
    return T(b, tmp)[:2] + ["-m", str(ro / "out")], [str(ro)]


@case("-m holds an earlier run", "train", ["already holds a run", "--overwrite"])
def _(b, tmp):
    m = copy_model(b, tmp)
    return T(b, tmp)[:2] + ["-m", m], [m]


@case("--overwrite with --start 1", "train", ["--overwrite", "--start 1"])
def _(b, tmp):
    m = copy_model(b, tmp)
    return T(b, tmp)[:2] + ["-m", m, "--num_models", "4", "--start", "1", "--overwrite"], [m]


@case("--overwrite would delete --start_checkpoint", "train", ["--overwrite", "chkpnt2.pth"])
def _(b, tmp):
    m = copy_model(b, tmp)
    return T(b, tmp)[:2] + ["-m", m, "--sh_degree", "1", "--iterations", "10", "--overwrite", "--start_checkpoint",
                            os.path.join(m, "chkpnt2.pth")], [m]


# --- train.py: checkpoints
add("--start_checkpoint given a PLY", "train",
    lambda b, tmp: (T(b, tmp, "--start_checkpoint", b["ply"]), out(tmp) + [b["model"]]),
    ["--start_checkpoint", "point_cloud.ply", "not a checkpoint"])


@case("--start_checkpoint given a text file", "train", ["--start_checkpoint", "notes.txt", "not a checkpoint"])
def _(b, tmp):
    (tmp / "notes.txt").write_text("hello\n")
    return T(b, tmp, "--start_checkpoint", str(tmp / "notes.txt")), out(tmp)


@case("--start_checkpoint a torch file without a model", "train", ["--start_checkpoint", "other.pth"])
def _(b, tmp):
    torch.save({"weights": torch.zeros(3)}, str(tmp / "other.pth"))
    return T(b, tmp, "--start_checkpoint", str(tmp / "other.pth")), out(tmp)


add("--start_checkpoint missing", "train",
    lambda b, tmp: (T(b, tmp, "--start_checkpoint", str(tmp / "chkpnt9.pth")), out(tmp)),
    ["--start_checkpoint", "chkpnt9.pth", "does not exist"])
add("checkpoint resumed under another --sh_degree", "train",
    lambda b, tmp: (T(b, tmp, "--start_checkpoint", b["ckpt"], "--sh_degree", "3"), out(tmp) + [b["model"]]),
    ["chkpnt2.pth", "SH degree 1", "--sh_degree 3"])
add("checkpoint resumed with --iterations below its own", "train",
    lambda b, tmp: (T(b, tmp, "--start_checkpoint", b["ckpt"], "--sh_degree", "1", "--iterations", "1"),
                    out(tmp) + [b["model"]]),
    ["chkpnt2.pth", "iteration 2", "--iterations"])
add("a vanilla checkpoint resumed as G_perb", "train",
    lambda b, tmp: (T(b, tmp, "--start_checkpoint", b["ckpt"], "--sh_degree", "1", "--num_models", "4"),
                    out(tmp) + [b["model"]]),
    ["chkpnt2.pth", "another model", "G_perb"])


# --- train.py: --start K
def _start1(iteration, **kw):
    def build(b, tmp):
        m = teacher_folder(b, tmp, iteration, **kw)
        return (["-s", b["bin"], "-m", m, "--num_models", "4", "--start", "1", "--iterations", "60",
                 "--sh_degree", "1"], [m])
    return build


add("--start 1 without the teacher", "train",
    lambda b, tmp: (T(b, tmp, "--num_models", "4", "--start", "1"), out(tmp)), ["G_perb", "has no saved iteration"])
add("--start 1 with the teacher of a shorter run", "train", _start1(4),
    ["G_perb", "point_cloud_0", "iteration_60", "holds iteration(s) 4"])
add("--start 1 with a NaN teacher", "train", _start1(60, nan=True), ["point_cloud_0", "NaN"])
add("--start 1 with a teacher of another SH degree", "train", _start1(60, sh_degree=3),
    ["point_cloud_0", "SH degree 3", "--sh_degree 1"])


# --- train.py: depths
def _depth_case(prepare, d):
    def build(b, tmp):
        scene = copy_scene(b, tmp)
        prepare(b, scene)
        return ["-s", scene, "-m", str(tmp / "out"), "-d", d], out(tmp)
    return build


def _depths_in_scene(b, scene, drop=None, params=True):
    shutil.copytree(b["depths"], os.path.join(scene, "depths"))
    if params:
        mds.make_depth_scale(scene, os.path.join(scene, "depths"), quiet=True)
    if drop:
        os.remove(os.path.join(scene, "depths", drop))


add("-d folder missing", "train", _depth_case(lambda b, s: None, "no_such_depths"),
    ["-d/--depths no_such_depths", "not a folder"])
add("-d without depth_params.json", "train", _depth_case(lambda b, s: _depths_in_scene(b, s, params=False), "depths"),
    ["depth_params.json"])
add("-d with a depth map missing", "train",
    _depth_case(lambda b, s: _depths_in_scene(b, s, drop="view_004.png"), "depths"), ["view_004", "depth map"])


# --- train.py: a run that diverges (the NaN guard)
for flag, value in (("--scaling_lr", "100"), ("--lambda_dssim", "1e300")):
    add(f"diverging {flag} {value}", "train",
        lambda b, tmp, f=flag, v=value: (T(b, tmp, f, v, "--iterations", "12", "--views_per_step", "1", "--quiet"),
                                         out(tmp)),
        ["model:", "NaN or infinite", "iteration 12", "no good checkpoint"], started=True)
add("diverging run names its last good checkpoint", "train",
    lambda b, tmp: (T(b, tmp, "--scaling_lr", "100", "--iterations", "12", "--views_per_step", "1",
                      "--checkpoint_iterations", "1", "--quiet"), out(tmp)),
    ["last good checkpoint", "chkpnt1.pth", "--start_checkpoint"], started=True)


# --- render.py
def _render_model(edit=None):
    def build(b, tmp):
        m = copy_model(b, tmp)
        if edit:
            edit(m)
        return ["-m", m], [m]
    return build


def _nan_ply(value, column="scale_0"):
    def edit(m):
        p = os.path.join(m, "point_cloud", "iteration_4", "point_cloud.ply")
        write_ply_with(p, p, column, value)
    return edit


add("render: PLY with NaN Gaussians", "render", _render_model(_nan_ply(float("nan"))),
    ["iteration_4", "point_cloud.ply", "NaN"])
add("render: PLY with an infinite opacity", "render", _render_model(_nan_ply(float("inf"), "opacity")),
    ["point_cloud.ply", "infinite", "opacity"])
add("render: PLY that is no PLY", "render",
    _render_model(lambda m: open(os.path.join(m, "point_cloud", "iteration_4", "point_cloud.ply"), "w").write("x")),
    ["point_cloud.ply"])
add("render: cfg_args.json not JSON", "render",
    _render_model(lambda m: open(os.path.join(m, "cfg_args.json"), "w").write("{")), ["cfg_args.json"])
add("render: -m missing", "render", lambda b, tmp: (["-m", str(tmp / "nope")], [str(tmp / "nope")]),
    ["nope", "does not exist"])
add("render: --itrain 7", "render", lambda b, tmp: (["-m", b["model"], "--itrain", "7"], [b["model"]]),
    ["point_cloud_7"])
add("render: --itrain -1", "render", lambda b, tmp: (["-m", b["model"], "--itrain", "-1"], [b["model"]]),
    ["--itrain -1"])
add("render: --iteration 99", "render", lambda b, tmp: (["-m", b["model"], "--iteration", "99"], [b["model"]]),
    ["iteration_99", "saved iterations: 4"])
add("render: --video --fps 0", "render",
    lambda b, tmp: (["-m", b["model"], "--video", "--fps", "0"], [b["model"]]), ["--fps 0"])
add("render: --video --video_frames 0", "render",
    lambda b, tmp: (["-m", b["model"], "--video", "--video_frames", "0"], [b["model"]]), ["--video_frames 0"])
add("render: --backend vulkan", "render", lambda b, tmp: (["-m", b["model"], "--backend", "vulkan"], [b["model"]]),
    ["--backend vulkan"])
add("render: --data_device cuda without a GPU", "render",
    lambda b, tmp: (["-m", b["model"], "--data_device", "cuda"], [b["model"]]), ["--data_device cuda"],
    skip=None if NO_GPU else "a GPU is present")
add("render: -s missing", "render", lambda b, tmp: (["-m", b["model"], "-s", str(tmp / "nope")], [b["model"]]),
    ["nope", "does not exist"])


@case("render: a scene image of another aspect ratio", "render", ["view_001.png", "aspect ratio"])
def _(b, tmp):
    scene = copy_scene(b, tmp)
    cv2.imwrite(os.path.join(scene, "images", "view_001.png"), np.zeros((H + 5, W, 3), np.uint8))
    return ["-m", b["model"], "-s", scene], [b["model"]]


@case("render: no trained model in -m", "render", ["no trained model"])
def _(b, tmp):
    os.makedirs(tmp / "empty")
    return ["-m", str(tmp / "empty"), "-s", b["bin"]], [str(tmp / "empty")]


# --- metrics.py
def _metrics(edit=None, extra=()):
    def build(b, tmp):
        m = renders(b, tmp)
        if edit:
            edit(os.path.join(m, "test", "ours_4"))
        return ["-m", m, "--skip_lpips", *extra], [m]
    return build


add("metrics: -m missing", "metrics", lambda b, tmp: (["-m", str(tmp / "nope")], [str(tmp / "nope")]),
    ["nope", "does not exist"])
add("metrics: no renders", "metrics", _metrics(lambda d: shutil.rmtree(os.path.dirname(d))), ["no renders"])
add("metrics: renders and gt differ", "metrics", _metrics(lambda d: os.remove(os.path.join(d, "gt", "00000.png"))),
    ["ours_4", "only in renders/", "00000.png"])
add("metrics: image sizes differ", "metrics",
    _metrics(lambda d: cv2.imwrite(os.path.join(d, "gt", "00000.png"), np.zeros((5, 5, 3), np.uint8))),
    ["00000.png", "5x5"])
add("metrics: corrupt PNG", "metrics",
    _metrics(lambda d: open(os.path.join(d, "renders", "00000.png"), "wb").write(b"junk")), ["00000.png"])
add("metrics: gt folder missing", "metrics", _metrics(lambda d: shutil.rmtree(os.path.join(d, "gt"))), ["gt/"])
add("metrics: --batch_size 0", "metrics", _metrics(extra=("--batch_size", "0")), ["--batch_size"])
add("metrics: --device cuda without a GPU", "metrics", _metrics(extra=("--device", "cuda")), ["--device cuda"],
    skip=None if NO_GPU else "a GPU is present")


# --- convert.py
add("convert: -s missing", "convert", lambda b, tmp: (["-s", str(tmp / "nope")], [str(tmp / "nope")]),
    ["nope", "does not exist"])


@case("convert: no input folder", "convert", ["input", "does not exist"])
def _(b, tmp):
    os.makedirs(tmp / "scene")
    return ["-s", str(tmp / "scene")], [str(tmp / "scene")]


add("convert: too few photos", "convert", lambda b, tmp: (["-s", photos(tmp, n=2)], [str(tmp / "photos")]),
    ["only 2 photo(s)"])


@case("convert: unreadable photo", "convert", ["broken.jpg"])
def _(b, tmp):
    scene = photos(tmp)
    with open(os.path.join(scene, "input", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    return ["-s", scene], [scene]


for flag, value in (("--num_threads", "0"), ("--min_registered_fraction", "2"), ("--min_registered_fraction", "nan"),
                    ("--sequential_overlap", "0")):
    add(f"convert: {flag} {value}", "convert",
        lambda b, tmp, f=flag, v=value: (["-s", photos(tmp), f, v], [str(tmp / "photos")]), [flag])
add("convert: --skip_matching without a distorted model", "convert",
    lambda b, tmp: (["-s", photos(tmp), "--skip_matching"], [str(tmp / "photos")]), ["distorted/sparse/0"])
add("convert: --single_camera with photos of two sizes", "convert",
    lambda b, tmp: (["-s", photos(tmp, sizes={1: (H * 2, W * 2)}), "--single_camera"], [str(tmp / "photos")]),
    ["--single_camera", "--no_single_camera"])


# --- utils/make_depth_scale.py
def _depth(edit=None, extra=(), depths=None):
    def build(b, tmp):
        scene = copy_scene(b, tmp)
        if edit:
            edit(b, scene)
        return ["--base_dir", scene, "--depths_dir", depths or b["depths"], "--quiet", *extra], [scene, b["depths"]]
    return build


add("depth: --base_dir missing", "depth",
    lambda b, tmp: (["--base_dir", str(tmp / "nope"), "--depths_dir", b["depths"]], [str(tmp / "nope")]),
    ["--base_dir", "nope"])
add("depth: --depths_dir missing", "depth", _depth(depths="/nonexistent/depths"), ["--depths_dir", "/nonexistent"])
add("depth: --min_points 1", "depth", _depth(extra=("--min_points", "1")), ["--min_points 1"])
add("depth: distorted camera", "depth",
    _depth(lambda b, s: edit_model(s, cameras=lambda d: replace_first(d, model="OPENCV",
                                                                         params=np.r_[d[1].params, np.zeros(4)]))),
    ["OPENCV"])
add("depth: zero quaternion", "depth",
    _depth(lambda b, s: edit_model(s, images=lambda d: replace_first(d, qvec=np.zeros(4)))), ["images.bin", "view_000"])
add("depth: NaN point", "depth", _depth(lambda b, s: edit_model(s, points=point_xyz(float("nan")))),
    ["points3D.bin", "NaN"])
add("depth: camera of width 0", "depth",
    _depth(lambda b, s: edit_model(s, cameras=lambda d: replace_first(d, width=0))), ["cameras.bin", "0x24"])
add("depth: no sparse model", "depth", _depth(lambda b, s: shutil.rmtree(os.path.join(s, "sparse"))), ["sparse"])


@case("depth: a depth map missing", "depth", ["view_006", "depth map"])
def _(b, tmp):
    d = str(tmp / "depths")
    shutil.copytree(b["depths"], d)
    os.remove(os.path.join(d, "view_006.png"))
    return _depth(depths=d)(b, tmp)


@case("depth: an unreadable depth map", "depth", ["view_007.png"])
def _(b, tmp):
    d = str(tmp / "depths")
    shutil.copytree(b["depths"], d)
    with open(os.path.join(d, "view_007.png"), "wb") as f:
        f.write(b"junk")
    return _depth(depths=d)(b, tmp)


# ----------------------------------------------------------------------------------------------------------------
# the runner

def snapshot(path):
    """{relative path: (size, mtime)} of everything under ``path`` (None if it does not exist)."""
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        st = os.stat(path)
        return {".": (st.st_size, st.st_mtime_ns)}
    snap = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            snap[os.path.relpath(p, path)] = (st.st_size if n in files else None, st.st_mtime_ns)
    return snap


_PROGRESS = re.compile(r"\d+%\||\|\s*\d+/\d+|\d+(\.\d+)?(it|img)/s")


def error_lines(err):
    """Non-empty stderr lines that are not progress bars (tqdm redraws with carriage returns)."""
    return [ln for ln in re.split(r"[\r\n]+", err) if ln.strip() and not _PROGRESS.search(ln)]


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.cli for c in CASES} == set(MAINS)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c, base, tmp_path, capsys):
    if c.opts.get("skip"):
        pytest.skip(c.opts["skip"])
    argv, watched = c.build(base, tmp_path)
    before = {p: snapshot(p) for p in watched}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(MAINS[c.cli], argv)
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for frag in c.expect:
        assert frag in lines[0], (frag, lines[0])
    if c.opts.get("started"):  # stopped while training: only complete files, no PLY
        for root, dirs, files in os.walk(watched[0]):
            assert not [f for f in files if f.endswith((".tmp", ".ply"))], (root, files)
            assert dirs or files or root == watched[0], root
    else:
        assert {p: snapshot(p) for p in watched} == before
