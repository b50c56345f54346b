#!/usr/bin/env python
"""Make a small synthetic COLMAP scene with exact cameras and an SfM-like point cloud (no downloads).

A numpy ray caster renders a room (checkerboard floor, striped walls, gradient ceiling) holding textured spheres
and axis-aligned boxes, lit by a fixed directional light with ambient term and cast shadows (all view-independent,
so a surface point has the same colour from every view). Cameras sit on a ring around the objects at two
heights, looking at the scene centre. Points are sampled on visible surfaces with their true (shaded) colours,
then observed in every view that sees them, as COLMAP would store them.

Output::

    <out>/images/view_000.png ...                          RGB, all views the same size
    <out>/sparse/0/{cameras,images,points3D}.{bin|txt}     COLMAP model (world-to-camera qvec/tvec, +z forward,
                                                            x right, y down, fx == fy, principal point at centre)

Usage: python scripts/make_synthetic_scene.py -o data/synthetic [--num_views 24] [--width 160] [--height 120]
       [--num_points 4000] [--seed 0] [--format bin|txt] [--camera SIMPLE_PINHOLE|PINHOLE]
"""
import argparse
import os
import struct
import sys
import zlib

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from scene.colmap_loader import Camera, Image, Point3D, rotmat2qvec, write_model  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.graphics_utils import look_at  # noqa: E402
from utils.system_utils import write_file  # noqa: E402

_EPS = 1e-7
_LIGHT = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])  # towards the light
_AMBIENT = 0.38
_ROOM_LO = np.array([-7.0, -7.0, 0.0])
_ROOM_HI = np.array([7.0, 7.0, 5.0])
_TARGET = np.array([0.0, 0.0, 0.55])  # cameras look here
_HFOV_DEG = 60.0
_SUPERSAMPLE = 2  # 2x2 rays per pixel


# ----------------------------------------------------------------------------------------------------------------
# procedural textures: albedo [M,3] in [0,1] from surface points p [M,3] and normals n [M,3]


def _mix(a, b, w):
    w = np.asarray(w, dtype=np.float64)[..., None]
    return np.asarray(a) * (1.0 - w) + np.asarray(b) * w


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _tex_room(p, n):
    out = np.empty_like(p)
    floor = n[:, 2] > 0.5
    ceil = n[:, 2] < -0.5
    wall = ~(floor | ceil)
    # floor: 0.5-unit checkerboard, beige / brown, slightly darker far from the centre
    q = p[floor]
    chk = (np.floor(q[:, 0] / 0.5) + np.floor(q[:, 1] / 0.5)) % 2
    fade = 1.0 - 0.25 * np.clip(np.hypot(q[:, 0], q[:, 1]) / 7.0, 0, 1)
    out[floor] = _mix([0.86, 0.78, 0.62], [0.42, 0.27, 0.17], chk) * fade[:, None]
    # ceiling: soft sky gradient
    q = p[ceil]
    out[ceil] = _mix([0.72, 0.83, 0.95], [0.95, 0.93, 0.85], _smoothstep((q[:, 0] + 7) / 14))
    # walls: a hue per wall, vertical stripes along the wall, brighter towards the top
    q, m = p[wall], n[wall]
    along = np.where(np.abs(m[:, 0]) > 0.5, q[:, 1], q[:, 0])
    base = np.empty_like(q)
    base[:] = [0.7, 0.6, 0.3]
    base[m[:, 0] > 0.5] = [0.35, 0.55, 0.78]
    base[m[:, 0] < -0.5] = [0.78, 0.45, 0.35]
    base[m[:, 1] > 0.5] = [0.45, 0.72, 0.42]
    stripe = (np.floor(along / 0.7) % 2)[:, None]
    height = np.clip(q[:, 2] / 5.0, 0, 1)[:, None]
    band = (np.abs(q[:, 2] - 1.2) < 0.12)[:, None]  # a dark horizontal band at 1.2 units
    col = base * (0.75 + 0.25 * stripe) * (0.8 + 0.35 * height)
    out[wall] = np.where(band, col * 0.35, col)
    return np.clip(out, 0, 1)


def _tex_sphere_checker(p, n):
    lon = np.arctan2(n[:, 1], n[:, 0])
    lat = np.arcsin(np.clip(n[:, 2], -1, 1))
    chk = (np.floor(lon / (np.pi / 5)) + np.floor(lat / (np.pi / 8))) % 2
    return _mix([0.85, 0.12, 0.1], [0.96, 0.94, 0.9], chk)


def _tex_sphere_stripes(p, n):
    t = p[:, 2] / 0.16
    stripe = np.floor(t) % 2
    grad = _smoothstep((n[:, 0] + 1) / 2)
    a = _mix([0.1, 0.25, 0.85], [0.1, 0.65, 0.75], grad)
    return _mix(a, [0.98, 0.85, 0.15], stripe)


def _tex_sphere_rainbow(p, n):
    return np.clip(0.5 + 0.45 * n[:, [0, 1, 2]] * np.array([1.0, -1.0, 1.0]), 0, 1)


def _tex_box_checker3d(p, n):
    c = (np.floor(p[:, 0] / 0.2 + 1e-6) + np.floor(p[:, 1] / 0.2 + 1e-6) + np.floor(p[:, 2] / 0.2 + 1e-6)) % 2
    return _mix([0.12, 0.55, 0.22], [0.92, 0.95, 0.88], c)


def _tex_box_gradient(p, n):
    g = _smoothstep(p[:, 2] / 1.5)
    col = _mix([0.98, 0.55, 0.1], [0.45, 0.15, 0.6], g)
    diag = (np.floor((p[:, 0] + p[:, 1] + p[:, 2]) / 0.25) % 2)[:, None]
    return col * (0.7 + 0.3 * diag)


# ----------------------------------------------------------------------------------------------------------------
# geometry: each intersect returns t [N] (inf = miss), normal(p, idx) returns unit normals


def _safe_dirs(d):
    return np.where(np.abs(d) < 1e-12, np.where(d < 0, -1e-12, 1e-12), d)


class _Sphere:
    def __init__(self, center, radius, tex):
        self.c, self.r, self.tex = np.asarray(center, dtype=np.float64), float(radius), tex

    def intersect(self, o, d):
        oc = o - self.c
        b = np.einsum("ij,ij->i", np.broadcast_to(oc, d.shape), d)
        cc = np.einsum("ij,ij->i", np.broadcast_to(oc, d.shape), np.broadcast_to(oc, d.shape)) - self.r ** 2
        disc = b * b - cc
        sq = np.sqrt(np.maximum(disc, 0.0))
        t0, t1 = -b - sq, -b + sq
        t = np.where(t0 > _EPS, t0, np.where(t1 > _EPS, t1, np.inf))
        return np.where(disc >= 0, t, np.inf)

    def normal(self, p):
        return (p - self.c) / self.r


class _Box:
    """Axis-aligned box seen from outside."""

    def __init__(self, lo, hi, tex):
        self.lo, self.hi, self.tex = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), tex

    def intersect(self, o, d):
        inv = 1.0 / _safe_dirs(d)
        t1, t2 = (self.lo - o) * inv, (self.hi - o) * inv
        tn = np.minimum(t1, t2).max(axis=1)
        tf = np.maximum(t1, t2).min(axis=1)
        return np.where((tn <= tf) & (tn > _EPS), tn, np.inf)

    def normal(self, p):
        # the face whose plane is closest to the point
        dist = np.concatenate([np.abs(p - self.lo), np.abs(p - self.hi)], axis=1)  # [M, 6]
        k = dist.argmin(axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), k % 3] = np.where(k < 3, -1.0, 1.0)
        return n


class _Room:
    """Axis-aligned box seen from inside (floor, walls, ceiling); every ray from inside hits it."""

    def __init__(self, lo, hi, tex):
        self.lo, self.hi, self.tex = lo, hi, tex

    def intersect(self, o, d):
        inv = 1.0 / _safe_dirs(d)
        t1, t2 = (self.lo - o) * inv, (self.hi - o) * inv
        return np.maximum(t1, t2).min(axis=1)

    def normal(self, p):
        dist = np.concatenate([np.abs(p - self.lo), np.abs(p - self.hi)], axis=1)
        k = dist.argmin(axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), k % 3] = np.where(k < 3, 1.0, -1.0)
        return n


def _build_scene():
    objects = [
        _Sphere([0.95, 0.35, 0.62], 0.62, _tex_sphere_checker),
        _Sphere([-1.05, -0.55, 0.45], 0.45, _tex_sphere_stripes),
        _Box([-0.45, -1.75, 0.0], [0.35, -0.95, 0.8], _tex_box_checker3d),
        _Sphere([-0.05, -1.35, 1.05], 0.25, _tex_sphere_rainbow),
        _Box([-1.6, 0.55, 0.0], [-0.95, 1.3, 1.5], _tex_box_gradient),
    ]
    return objects, _Room(_ROOM_LO, _ROOM_HI, _tex_room)


def _cast(objects, room, o, d):
    """Nearest hit of rays o + t d. Returns t [N], object index [N] (len(objects) = room)."""
    ts = np.stack([obj.intersect(o, d) for obj in objects] + [room.intersect(o, d)], axis=0)  # [K+1, N]
    idx = ts.argmin(axis=0)
    return ts[idx, np.arange(d.shape[0])], idx


def _shade(objects, room, p, idx):
    """Shaded colour [M,3] in [0,1] of surface points p [M,3] lying on object idx [M]."""
    allobj = objects + [room]
    col = np.zeros_like(p)
    nrm = np.zeros_like(p)
    for k, obj in enumerate(allobj):
        m = idx == k
        if np.any(m):
            nrm[m] = obj.normal(p[m])
            col[m] = obj.tex(p[m], nrm[m])
    lam = np.clip(nrm @ _LIGHT, 0.0, None)
    lit = lam > 0
    if np.any(lit):  # shadow rays towards the light, blocked by objects (the room never shadows)
        o = p[lit] + 1e-5 * nrm[lit]
        d = np.broadcast_to(_LIGHT, o.shape)
        blocked = np.min(np.stack([obj.intersect(o, d) for obj in objects]), axis=0) < np.inf
        lam[np.flatnonzero(lit)[blocked]] *= 0.0
    return np.clip(col * (_AMBIENT + (1 - _AMBIENT) * lam)[:, None], 0, 1)


# ----------------------------------------------------------------------------------------------------------------
# cameras


def _make_cameras(num_views, rng):
    phase = rng.uniform(0, 2 * np.pi)
    poses = []
    for k in range(num_views):
        az = phase + 2 * np.pi * k / num_views
        radius = 4.0 + rng.uniform(-0.3, 0.3)
        height = (1.3 if k % 2 == 0 else 2.6) + rng.uniform(-0.15, 0.15)
        C = np.array([radius * np.cos(az), radius * np.sin(az), height])
        target = _TARGET + rng.uniform(-0.1, 0.1, size=3)
        R = look_at(C, target, (0.0, 0.0, 1.0))
        poses.append((R, -R @ C, C))
    return poses


def _pixel_rays(R, f, cx, cy, u, v):
    """World-space unit ray directions [N,3] through image points (u, v) (pixel-centre convention: +0.5)."""
    dc = np.stack([(u - cx) / f, (v - cy) / f, np.ones_like(u)], axis=-1)
    dw = dc @ R  # R^T applied to each row
    return dw / np.linalg.norm(dw, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------------------------
# PNG output


def _encode_png(rgb):
    """uint8 [H,W,3] -> PNG bytes (OpenCV when present, else numpy + zlib)."""
    try:
        import cv2

        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
        if ok:
            return buf.tobytes()
    except ImportError:
        pass
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------------------------
# main entry


def _check_options(fmt, camera_model, num_views, width, height, num_points):
    """The format (bin or txt) once every option is valid, else a UserError naming the option."""
    fmt = str(fmt).lstrip(".").lower()
    if fmt not in ("bin", "txt"):
        raise UserError(f"--format {fmt!r} is not supported; use --format bin or --format txt")
    if camera_model not in ("PINHOLE", "SIMPLE_PINHOLE"):
        raise UserError(f"--camera {camera_model!r} is not supported; use --camera PINHOLE or SIMPLE_PINHOLE")
    if int(num_views) < 1:
        raise UserError(f"--num_views {num_views} must be at least 1")
    if not (8 <= int(width) <= 4096 and 8 <= int(height) <= 4096):
        raise UserError(f"--width {width} --height {height}: each must be between 8 and 4096 pixels")
    if int(num_points) < 0:
        raise UserError(f"--num_points {num_points} must be 0 or more")
    return fmt


def _render_views(objects, room, poses, f, W, H, img_dir):
    """Write view_<k>.png for every pose (SxS supersampled), removing views of an earlier, larger run; returns
    the image names."""
    cx, cy = W / 2.0, H / 2.0
    S = _SUPERSAMPLE
    sub = (np.arange(S) + 0.5) / S
    uu = (np.arange(W)[:, None] + sub[None, :]).reshape(-1)  # [W*S]
    vv = (np.arange(H)[:, None] + sub[None, :]).reshape(-1)  # [H*S]
    U, V = np.meshgrid(uu, vv)  # [H*S, W*S]
    names = []
    for k, (R, t, C) in enumerate(poses):
        d = _pixel_rays(R, f, cx, cy, U.reshape(-1), V.reshape(-1))
        tt, idx = _cast(objects, room, C, d)
        col = _shade(objects, room, C + tt[:, None] * d, idx)
        img = col.reshape(H, S, W, S, 3).mean(axis=(1, 3))
        img8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        name = f"view_{k:03d}.png"
        write_file(os.path.join(img_dir, name), _encode_png(img8))
        names.append(name)
    keep = set(names)
    for old in os.listdir(img_dir):  # views left from an earlier, larger run
        if old.startswith("view_") and old.endswith(".png") and old not in keep:
            os.remove(os.path.join(img_dir, old))
    return names


def _sample_points(objects, room, poses, f, W, H, num_points, rng):
    """Surface points where random rays of random views land (visible surfaces) and their true colours."""
    cx, cy = W / 2.0, H / 2.0
    num_views = len(poses)
    view_of = rng.integers(0, num_views, size=num_points)
    us, vs = rng.uniform(0, W, size=num_points), rng.uniform(0, H, size=num_points)
    P = np.zeros((num_points, 3))
    obj_of = np.zeros(num_points, dtype=np.int64)
    for k, (R, t, C) in enumerate(poses):
        m = view_of == k
        if np.any(m):
            d = _pixel_rays(R, f, cx, cy, us[m], vs[m])
            tt, idx = _cast(objects, room, C, d)
            P[m] = C + tt[:, None] * d
            obj_of[m] = idx
    colours = _shade(objects, room, P, obj_of)
    rgb = np.clip(np.round(colours * 255.0), 0, 255).astype(np.uint8)
    return P, rgb


def _observations(objects, room, poses, P, f, W, H):
    """Every view where a true surface point is in the image and not occluded: per point its (view, xy) and
    (image id, point2D index) lists, per image its (xys, point indices)."""
    cx, cy = W / 2.0, H / 2.0
    num_points = len(P)
    obs_xy = [[] for _ in range(num_points)]
    obs_img = [[] for _ in range(num_points)]
    per_image = []
    for k, (R, t, C) in enumerate(poses):
        Xc = P @ R.T + t
        z = Xc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = f * Xc[:, 0] / z + cx
            v = f * Xc[:, 1] / z + cy
        cand = np.flatnonzero((z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H))
        vis = cand
        if len(cand):
            ray = P[cand] - C
            dist = np.linalg.norm(ray, axis=1)
            th, _ = _cast(objects, room, C, ray / dist[:, None])
            vis = cand[th >= dist * (1 - 1e-6) - 1e-6]
        xys = np.stack([u[vis], v[vis]], axis=1) if len(vis) else np.zeros((0, 2))
        per_image.append((xys, vis.astype(np.int64)))
        for j, pidx in enumerate(vis):
            obs_img[pidx].append((k + 1, j))
            obs_xy[pidx].append((k, xys[j]))
    return obs_xy, obs_img, per_image


def _reprojection_errors(poses, xyz, obs_xy, f, cx, cy):
    """Mean reprojection error of each (jittered) point against its observations (0 for unobserved points)."""
    num_points = len(xyz)
    errors = np.zeros(num_points)
    for i in range(num_points):
        if obs_xy[i]:
            e = []
            for k, xy in obs_xy[i]:
                R, t, _ = poses[k]
                Xc = R @ xyz[i] + t
                e.append(np.hypot(f * Xc[0] / Xc[2] + cx - xy[0], f * Xc[1] / Xc[2] + cy - xy[1]))
            errors[i] = float(np.mean(e))
    return errors


def make_synthetic_scene(out_dir, num_views=24, width=160, height=120, num_points=4000, seed=0, fmt="bin",
                         camera_model="PINHOLE", jitter=0.004):
    """Render the scene and write images/ and sparse/0/ under ``out_dir``; returns ``out_dir``.

    ``jitter`` is the std (world units) of Gaussian noise added to the point positions (SfM-like error).
    """
    fmt = _check_options(fmt, camera_model, num_views, width, height, num_points)
    num_views, W, H, num_points = int(num_views), int(width), int(height), int(num_points)

    rng = np.random.default_rng(seed)
    objects, room = _build_scene()
    poses = _make_cameras(num_views, rng)
    f = 0.5 * W / np.tan(np.deg2rad(_HFOV_DEG) / 2)
    cx, cy = W / 2.0, H / 2.0

    out_dir = os.fspath(out_dir)
    img_dir = os.path.join(out_dir, "images")
    sparse_dir = os.path.join(out_dir, "sparse", "0")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(sparse_dir, exist_ok=True)

    names = _render_views(objects, room, poses, f, W, H, img_dir)

    P, rgb = _sample_points(objects, room, poses, f, W, H, num_points, rng)
    xyz = P + rng.normal(scale=jitter, size=P.shape) if jitter > 0 else P.copy()

    obs_xy, obs_img, per_image = _observations(objects, room, poses, P, f, W, H)

    errors = _reprojection_errors(poses, xyz, obs_xy, f, cx, cy)

    if camera_model == "PINHOLE":
        params = np.array([f, f, cx, cy])
    else:
        params = np.array([f, cx, cy])
    cameras = {1: Camera(id=1, model=camera_model, width=W, height=H, params=params)}
    images = {}
    for k, ((R, t, C), name) in enumerate(zip(poses, names)):
        xys, pidx = per_image[k]
        images[k + 1] = Image(id=k + 1, qvec=rotmat2qvec(R), tvec=t.copy(), camera_id=1, name=name,
                              xys=xys, point3D_ids=pidx + 1)
    points3D = {}
    for i in range(num_points):
        tr = np.array(obs_img[i], dtype=np.int64).reshape(-1, 2)
        points3D[i + 1] = Point3D(id=i + 1, xyz=xyz[i], rgb=rgb[i], error=errors[i],
                                  image_ids=tr[:, 0].copy(), point2D_idxs=tr[:, 1].copy())

    ext = "." + fmt
    other = ".txt" if ext == ".bin" else ".bin"
    for stem in ("cameras", "images", "points3D"):  # a model left in the other format would shadow this one
        stale = os.path.join(sparse_dir, stem + other)
        if os.path.exists(stale):
            os.remove(stale)
    write_model(cameras, images, points3D, sparse_dir, ext=ext)
    return out_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write a small synthetic COLMAP scene (ray-cast images, exact "
                                             "cameras, SfM-like points) for demos and tests.")
    ap.add_argument("-o", "--output", required=True, help="scene folder to write (images/ and sparse/0/ inside)")
    ap.add_argument("--num_views", type=int, default=24, help="number of cameras on the ring (default 24)")
    ap.add_argument("--width", type=int, default=160, help="image width in pixels (default 160)")
    ap.add_argument("--height", type=int, default=120, help="image height in pixels (default 120)")
    ap.add_argument("--num_points", type=int, default=4000, help="number of 3D points (default 4000)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (camera jitter, point sampling)")
    ap.add_argument("--format", choices=["bin", "txt"], default="bin", help="COLMAP model format (default bin)")
    ap.add_argument("--camera", choices=["PINHOLE", "SIMPLE_PINHOLE"], default="PINHOLE",
                    help="COLMAP camera model (default PINHOLE)")
    args = ap.parse_args(argv)
    out = make_synthetic_scene(args.output, num_views=args.num_views, width=args.width, height=args.height,
                               num_points=args.num_points, seed=args.seed, fmt=args.format,
                               camera_model=args.camera)
    print(f"wrote {args.num_views} views ({args.width}x{args.height}) and {args.num_points} points to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
