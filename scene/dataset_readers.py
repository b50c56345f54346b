"""Readers for COLMAP and NeRF-synthetic (Blender) scenes -> SceneInfo with Camera lists and a point cloud."""
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from arguments.groups import MAX_WIDTH
from scene import colmap_loader as cl
from scene.cameras import Camera
from utils.depth_maps import read_inverse_depth
from utils.errors import UserError
from utils.graphics_utils import focal2fov
from utils.image_io import read_image_file

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class SceneInfo:
    train_cameras: list
    test_cameras: list
    points: np.ndarray  # [N, 3] float32
    colors: np.ndarray  # [N, 3] float32 in [0, 1]
    radius: float  # scene extent: 1.1 x max camera distance from the centroid
    random_points: bool = False  # the points are random (a scene without SfM points), not a reconstruction


def target_size(width, height, resolution):
    """Output (w, h) for a -r setting: a downscale factor, or None to cap the width at MAX_WIDTH px."""
    if resolution is None:
        f = max(1.0, width / MAX_WIDTH)
    else:
        f = float(resolution)
    return max(1, round(width / f)), max(1, round(height / f))


def load_image(path, size=None, background=None):
    """Read an image as uint8 [3, H, W]; RGBA is composited on ``background`` (RGB in [0, 1]).

    Resizes to ``size`` = (w, h) with area interpolation; ``size`` may also be a function of the image's
    own (w, h) returning the size. Unreadable files raise UserError.
    """
    arr = read_image_file(path)
    if arr.dtype == np.uint16:
        arr = (arr / 257.0).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 2:  # gray + alpha
        arr = arr[:, :, [0, 0, 0, 1]]
    if callable(size):
        size = size(arr.shape[1], arr.shape[0])
    if arr.shape[2] == 4:
        rgb = arr[:, :, [2, 1, 0]].astype(np.float32) / 255.0
        a = arr[:, :, 3:4].astype(np.float32) / 255.0
        bg = np.asarray(background if background is not None else (0, 0, 0), dtype=np.float32)
        arr = np.clip((rgb * a + bg * (1 - a)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    else:
        arr = arr[:, :, [2, 1, 0]]
    if size is not None and (arr.shape[1], arr.shape[0]) != tuple(size):
        arr = cv2.resize(arr, tuple(size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def decode_images(tasks, workers=None):
    """``load_image(*task)`` for every task, in order, decoded by a pool of threads (OpenCV's decode and resize
    release the GIL: a scene's hundreds of photos load several times faster on a many-core machine). An error is
    that of the first failing task in order."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers == 1 or len(tasks) < 2:
        return [load_image(*t) for t in tasks]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda t: load_image(*t), tasks))


def camera_extent(cameras):
    """1.1 x the largest distance of the camera centres from their centroid (the scene radius)."""
    centers = np.stack([c.camera_center.numpy() for c in cameras]).astype(np.float64)
    radius = float(np.linalg.norm(centers - centers.mean(axis=0), axis=1).max()) * 1.1
    return max(radius, 1e-6)


def split_eval(items, names, eval_mode, hold=8):
    """Every ``hold``-th image of the sorted names is a test view when eval_mode is on."""
    order = sorted(range(len(items)), key=lambda i: names[i])
    train, test = [], []
    for rank, i in enumerate(order):
        (test if eval_mode and rank % hold == 0 else train).append(items[i])
    return train, test


def _source_size(name, size, cam, cameras_path):
    """The size an image is trained from: its own when it is the camera's, or a scaled copy of it (same
    aspect ratio, e.g. -i images_4 with the full-size cameras, as graphdeco reads them); otherwise a
    UserError. Returns (w, h, whether it is a scaled copy)."""
    w0, h0 = size
    if (w0, h0) == (cam.width, cam.height):
        return w0, h0, False
    if abs(w0 * cam.height - h0 * cam.width) <= max(cam.width, cam.height):  # same aspect up to a pixel
        return w0, h0, True
    raise UserError(f"image {name} is {w0}x{h0} pixels but its camera {cam.id} in {cameras_path} is "
                    f"{cam.width}x{cam.height} (another aspect ratio): the image does not belong to this camera; "
                    f"replace the image or fix the camera (re-run convert.py)")


def read_colmap_scene(path, images_dir="images", eval_mode=False, resolution=None, data_device="cpu",
                      depths_dir="", load_images=True):
    sparse = os.path.join(path, "sparse", "0")
    if not os.path.isdir(sparse):
        raise UserError(f"no COLMAP model in {sparse}: expected cameras/images/points3D (.bin or .txt); "
                        f"run `python convert.py -s {path}` on photos in {path}/input")
    ext = cl.detect_model_ext(sparse)
    cameras = cl.read_cameras(os.path.join(sparse, "cameras" + ext))
    images = cl.read_images(os.path.join(sparse, "images" + ext))
    cl.check_model(cameras, images, os.path.join(sparse, "cameras" + ext), os.path.join(sparse, "images" + ext))
    img_root = os.path.join(path, images_dir)
    if not os.path.isdir(img_root):
        raise UserError(f"image folder {img_root} does not exist (set --images if it has another name)")
    for cam in cameras.values():
        if cam.model not in ("PINHOLE", "SIMPLE_PINHOLE"):
            raise UserError(f"camera {cam.id} in {sparse} uses the distorted model {cam.model}: only PINHOLE and "
                            f"SIMPLE_PINHOLE are supported; undistort it with `python convert.py -s {path} "
                            f"--skip_matching` (model in {path}/distorted/sparse/0)")
    missing = [im.name for im in images.values() if not os.path.isfile(os.path.join(img_root, im.name))]
    if missing:
        raise UserError(f"{len(missing)} image(s) listed in {sparse} are missing from {img_root} "
                        f"(first: {missing[0]}); restore them or re-run convert.py")
    depth_params = _read_depth_params(sparse, depths_dir)

    entries = []  # (uid, image, its camera) in name order
    for uid, im in enumerate(sorted(images.values(), key=lambda im: im.name)):
        cam = cameras.get(im.camera_id)
        if cam is None:
            raise UserError(f"image {im.name} refers to camera {im.camera_id}, which {sparse} does not define")
        entries.append((uid, im, cam))
    photos = [None] * len(entries)
    scaled = [None] * len(entries)  # (w, h) of an image read as a scaled copy of its camera's size
    if load_images:
        def size_for(k, im, cam):
            def size(w0, h0):
                w, h, copy = _source_size(im.name, (w0, h0), cam, os.path.join(sparse, "cameras" + ext))
                scaled[k] = (w, h) if copy else None  # (each task its own slot: the pool's threads never share one)
                return target_size(w, h, resolution)
            return size
        photos = decode_images([(os.path.join(img_root, im.name), size_for(k, im, cam))
                              for k, (_, im, cam) in enumerate(entries)])
    first = next((k for k, wh in enumerate(scaled) if wh is not None), None)
    if first is not None:
        (w0, h0), im, cam = scaled[first], entries[first][1], entries[first][2]
        print(f"note: images such as {im.name} are {w0}x{h0} but their camera {cam.id} in "
              f"{os.path.join(sparse, 'cameras' + ext)} is {cam.width}x{cam.height}: read as scaled copies (same "
              f"aspect ratio), trained from the image size")
    cams, names = [], []
    for (uid, im, cam), image in zip(entries, photos):
        fx = cam.params[0]
        fy = cam.params[0] if cam.model == "SIMPLE_PINHOLE" else cam.params[1]
        R = cl.qvec2rotmat(im.qvec).T
        if image is not None:
            h, w = image.shape[1:]
        else:
            w, h = target_size(cam.width, cam.height, resolution)
        depth, reliable = _load_depth(depths_dir, im.name, (w, h), depth_params) if depths_dir else (None, False)
        cams.append(Camera(uid, R, np.asarray(im.tvec), focal2fov(fx, cam.width), focal2fov(fy, cam.height),
                           w, h, os.path.splitext(im.name)[0], image, data_device, depth=depth,
                           depth_reliable=reliable))
        names.append(im.name)
    train, test = split_eval(cams, names, eval_mode)
    points_path = os.path.join(sparse, "points3D" + ext)
    xyz, rgb, _ = cl.read_points3D_arrays(points_path)
    if len(xyz) == 0:
        raise UserError(f"{sparse} has no 3D points to start from: re-run structure from motion (convert.py)")
    cl.check_points_finite(xyz, points_path)
    return SceneInfo(train, test, xyz.astype(np.float32), (rgb / 255.0).astype(np.float32),
                     camera_extent(train or cams))


def _read_json(path, missing, invalid):
    """The JSON in ``path``, else a UserError: ``missing`` when there is no such file, ``invalid(exc)`` when it
    cannot be read or parsed (each message names the file and how to fix it)."""
    if not os.path.isfile(path):
        raise UserError(missing)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(invalid(exc))


def _read_depth_params(sparse, depths_dir):
    """Per-image scale/offset for the monocular depths, with unreliable images flagged."""
    if not depths_dir:
        return None
    path = os.path.join(sparse, "depth_params.json")
    params = _read_json(path, f"-d/--depths is set but {path} is missing: run `python utils/make_depth_scale.py "
                              f"--base_dir <scene> --depths_dir {depths_dir}` first",
                        lambda exc: f"{path} is not valid JSON ({exc}); regenerate it with utils/make_depth_scale.py")
    try:
        scales = np.array([float(p["scale"]) for p in params.values() if float(p.get("scale", 0)) > 0])
    except (AttributeError, TypeError, KeyError, ValueError):
        raise UserError(f"{path} must map image names to {{\"scale\": s, \"offset\": o}}; regenerate it with "
                        f"utils/make_depth_scale.py")
    med = float(np.median(scales)) if len(scales) else 0.0
    return dict(params=params, median=med)


def _load_depth(depths_dir, image_name, size, depth_params):
    stem = os.path.splitext(image_name)[0]
    path = os.path.join(depths_dir, stem + ".png")
    if not os.path.isfile(path):
        raise UserError(f"depth map for image {image_name} is missing: expected {path}")
    inv = read_inverse_depth(path)
    p = depth_params["params"].get(stem) or depth_params["params"].get(image_name)
    if p is None:
        raise UserError(f"image {image_name} has no entry in depth_params.json: re-run utils/make_depth_scale.py")
    scale, offset = float(p["scale"]), float(p["offset"])
    med = depth_params["median"]
    reliable = scale > 0 and med > 0 and 0.2 * med < scale < 5 * med
    inv = inv * scale + offset
    if inv.shape[::-1] != tuple(size):
        inv = cv2.resize(inv, tuple(size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(inv)[None], reliable


def read_blender_scene(path, white_background=False, eval_mode=False, resolution=None, data_device="cpu",
                       num_random_points=100_000, seed=0, load_images=True):
    bg = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
    train = _blender_split(path, "transforms_train.json", bg, resolution, data_device, 0, load_images)
    test = _blender_split(path, "transforms_test.json", bg, resolution, data_device, len(train), load_images)
    if not eval_mode:
        train, test = train + test, []
    if not train:
        raise UserError(f"{os.path.join(path, 'transforms_train.json')} lists no frames: there is nothing to train on")
    rng = np.random.default_rng(seed)
    # NeRF-synthetic objects sit inside [-1.3, 1.3]^3: start from random points there
    xyz = rng.random((num_random_points, 3)) * 2.6 - 1.3
    rgb = rng.random((num_random_points, 3))
    return SceneInfo(train, test, xyz.astype(np.float32), rgb.astype(np.float32), camera_extent(train),
                     random_points=True)


def _blender_split(path, fname, bg, resolution, data_device, uid0, load_images):
    fpath = os.path.join(path, fname)

    def invalid(exc):
        return f"{fpath} is not a valid transforms file ({exc.__class__.__name__}: {exc})"

    meta = _read_json(fpath, f"{fpath} is missing: a NeRF-synthetic scene needs transforms_train.json and "
                             f"transforms_test.json", invalid)
    try:
        fovx = float(meta["camera_angle_x"])
        frames = meta["frames"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(invalid(exc))
    if not (math.isfinite(fovx) and 0 < fovx < math.pi):
        raise UserError(f"{fpath}: camera_angle_x {fovx} must be a horizontal field of view in radians, between 0 "
                        f"and pi")
    if not isinstance(frames, list):
        raise UserError(f"{fpath}: 'frames' must be a list of {{\"file_path\", \"transform_matrix\"}} entries")
    cams = []
    poses = []  # (R, T, file_path, image path) of every frame, checked before any image is decoded
    for i, fr in enumerate(frames):
        c2w, rel = _blender_frame(fpath, i, fr)
        img_path = os.path.join(path, rel)
        if not os.path.splitext(img_path)[1]:
            img_path += ".png"
        if not os.path.isfile(img_path):
            raise UserError(f"image {img_path} listed in {fpath} is missing")
        c2w[:3, 1:3] *= -1  # OpenGL/Blender (y up, z back) -> COLMAP (y down, z forward)
        w2c = np.linalg.inv(c2w)
        poses.append((w2c[:3, :3].T, w2c[:3, 3], rel, img_path))
    size = lambda W0, H0: target_size(W0, H0, resolution)  # noqa: E731 (from the image's own, decoded once)
    photos = decode_images([(p[3], size, bg) for p in poses]) if load_images else [None] * len(poses)
    for i, ((R, T, rel, _), image) in enumerate(zip(poses, photos)):
        w, h = (image.shape[2], image.shape[1]) if image is not None else target_size(800, 800, resolution)
        fovy = focal2fov(0.5 * w / math.tan(0.5 * fovx), h)
        cams.append(Camera(uid0 + i, R, T, fovx, fovy, w, h, os.path.splitext(os.path.basename(rel))[0],
                           image, data_device))
    return cams


def _blender_frame(fpath, i, fr):
    """(camera-to-world 4x4, file_path) of frame ``i`` of a transforms file, checked; else a UserError."""
    where = f"{fpath}: frame {i}"
    if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str) or not fr["file_path"]:
        raise UserError(f"{where} has no file_path (the image, relative to the scene folder); fix the frame")
    where += f" ({fr['file_path']})"
    if "transform_matrix" not in fr:
        raise UserError(f"{where} has no transform_matrix (its 4x4 camera-to-world pose); fix the frame")
    try:
        c2w = np.array(fr["transform_matrix"], dtype=np.float64)
    except (ValueError, TypeError):
        c2w = None
    if c2w is None or c2w.shape != (4, 4):
        shape = "not a matrix of numbers" if c2w is None else f"shape {tuple(c2w.shape)}"
        raise UserError(f"{where}: transform_matrix must be a 4x4 camera-to-world matrix, got {shape}")
    if not np.isfinite(c2w).all():
        raise UserError(f"{where}: transform_matrix holds NaN or infinite values")
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-6 or not np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6):
        raise UserError(f"{where}: transform_matrix is not a camera pose (its 3x3 rotation part is singular or its "
                        f"last row is not 0 0 0 1)")
    return c2w, fr["file_path"]


def check_data_device(data_device):
    """--data_device: cpu, or cuda where a CUDA device exists; else a UserError."""
    try:
        kind = torch.device(data_device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise UserError(f"--data_device {data_device} is unknown: use cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--data_device {data_device}: no CUDA device is available here; use --data_device cpu")


def resolve_depths(source_path, depths):
    """-d/--depths as graphdeco reads it: relative to the scene folder first, else to the working directory."""
    if not depths:
        return depths
    in_scene = os.path.join(source_path, depths)
    if os.path.isdir(in_scene):
        return in_scene
    if os.path.isdir(depths):
        return depths
    raise UserError(f"-d/--depths {depths} is not a folder: neither {in_scene} (in the scene) nor {depths} (from the "
                    f"working directory) exists")


def read_scene(source_path, images="images", eval_mode=False, resolution=None, white_background=False,
               data_device="cpu", depths="", num_random_points=100_000):
    check_data_device(data_device)
    if not os.path.isdir(source_path):
        raise UserError(f"scene folder {source_path} (-s/--source_path) does not exist")
    if os.path.isdir(os.path.join(source_path, "sparse")):
        return read_colmap_scene(source_path, images, eval_mode, resolution, data_device,
                                 resolve_depths(source_path, depths))
    if os.path.isfile(os.path.join(source_path, "transforms_train.json")):
        if depths:
            raise UserError(f"-d/--depths needs a COLMAP scene (sparse/0 with depth_params.json); {source_path} is "
                            f"NeRF-synthetic")
        return read_blender_scene(source_path, white_background, eval_mode, resolution, data_device,
                                  num_random_points)
    raise UserError(f"could not recognise the scene type of {source_path}: expected sparse/0 (COLMAP) or "
                    f"transforms_train.json (NeRF-synthetic)")
