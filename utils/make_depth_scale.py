#!/usr/bin/env python
"""Per-image scale and offset that map monocular inverse depth onto the COLMAP model's inverse depth.

    python utils/make_depth_scale.py --base_dir <scene> --depths_dir <depths>
    python -m utils.make_depth_scale --base_dir <scene> --depths_dir <depths>

<depths>/<image stem>.png holds a monocular inverse-depth map (16-bit PNG, larger = nearer; any resolution).
For every image of <scene>/sparse/0 the 3D points it sees give pairs (mono inverse depth at the point's pixel,
1 / z of the point in that camera); a robust line fit y = scale * x + offset (least squares with repeated
rejection of residuals beyond 3 robust sigmas, started from a median fit) gives the image's parameters.
They are written atomically to <scene>/sparse/0/depth_params.json as {stem: {"scale": s, "offset": o}};
images with fewer than --min_points points (or a fit that is not positive) get scale 0, which training ignores.

Which points an image sees: its 2D observations when the model has them (COLMAP's point2D -> point3D links);
for models whose observations were stripped, every 3D point is projected into the image, points behind the
camera or outside the frame are dropped, and a z-buffer keeps the nearest point in each --zbuffer_cell x
--zbuffer_cell pixel cell (by default sized so that about 4 points fall into a cell: a sparse cloud has gaps,
and a per-pixel z-buffer lets points on hidden surfaces through; on the tests' synthetic scene this biased the
scale by ~40%).
"""
import argparse
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from scene import colmap_loader as cl  # noqa: E402
from utils.depth_maps import read_inverse_depth, write_inverse_depth  # noqa: E402,F401 (tests write with it)
from utils.errors import UserError, run_cli  # noqa: E402
from utils.system_utils import write_json  # noqa: E402

DEPTH_EXT = ".png"


def intrinsics(cam):
    """(fx, fy, cx, cy) of a PINHOLE / SIMPLE_PINHOLE camera."""
    p = np.asarray(cam.params, dtype=np.float64)
    if cam.model == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2]
    if cam.model == "PINHOLE":
        return p[0], p[1], p[2], p[3]
    raise UserError(f"camera {cam.id} uses the distorted model {cam.model}; depth scales need the undistorted "
                    f"PINHOLE model that convert.py writes to sparse/0")


def observed_points(image, point_xyz):
    """(uv [M, 2] observed pixel positions, xyz [M, 3]) for the observations linked to 3D points."""
    ids = np.asarray(image.point3D_ids, dtype=np.int64).reshape(-1)
    xys = np.asarray(image.xys, dtype=np.float64).reshape(-1, 2)
    keep = [i for i, pid in enumerate(ids) if pid >= 0 and pid in point_xyz]
    if not keep:
        return np.zeros((0, 2)), np.zeros((0, 3))
    return xys[keep], np.stack([point_xyz[ids[i]] for i in keep])


def zbuffer_points(xyz, R, t, fx, fy, cx, cy, width, height, cell=0, per_cell=4.0):
    """Project all points; keep those in front and inside the frame, the nearest per cell x cell pixels.

    A sparse cloud does not hide what lies behind it pixel by pixel: with cell=0 the cell size is chosen so
    that about ``per_cell`` points fall into a cell on average, so a surface's points cover the cells behind
    which farther points hide. Returns (uv [M, 2], z [M]).
    """
    Xc = xyz @ R.T + t  # [N, 3] camera coordinates
    z = Xc[:, 2]
    front = z > 1e-9
    Xc, z = Xc[front], z[front]
    u = fx * Xc[:, 0] / z + cx
    v = fy * Xc[:, 1] / z + cy
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside], v[inside], z[inside]
    if len(z) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    if cell <= 0:
        cell = np.sqrt(per_cell * width * height / len(z))
    cell = int(np.clip(round(cell), 1, max(1, min(width, height) // 4)))
    gw = int(np.ceil(width / cell))
    key = (v // cell).astype(np.int64) * gw + (u // cell).astype(np.int64)
    order = np.lexsort((z, key))  # by cell, nearest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order[1:]] != key[order[:-1]]
    sel = order[first]
    return np.stack([u[sel], v[sel]], axis=1), z[sel]


def sample_bilinear(img, u, v):
    """img [H, W] at continuous pixel positions (pixel centres at +0.5, as COLMAP); NaN outside."""
    h, w = img.shape
    x, y = u - 0.5, v - 0.5
    ok = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    out = np.full(len(u), np.nan, dtype=np.float64)
    if not ok.any():
        return out
    x, y = x[ok], y[ok]
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    out[ok] = ((img[y0, x0] * (1 - fx) + img[y0, x1] * fx) * (1 - fy)
               + (img[y1, x0] * (1 - fx) + img[y1, x1] * fx) * fy)
    return out


def robust_fit(x, y, iters=5, k=3.0):
    """y ~ scale * x + offset: a median-based start, then least squares on the points within k robust sigmas.

    Returns (scale, offset, number of inliers).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    tx, ty = np.median(x), np.median(y)
    sx, sy = np.mean(np.abs(x - tx)), np.mean(np.abs(y - ty))
    scale = sy / sx if sx > 0 else 0.0
    offset = ty - scale * tx
    inl = np.ones(len(x), dtype=bool)
    for _ in range(iters):
        r = y - (scale * x + offset)
        sigma = 1.4826 * np.median(np.abs(r - np.median(r)))
        thr = k * max(sigma, 1e-9 * max(1.0, abs(ty)))
        new = np.abs(r) <= thr
        if new.sum() < 3:
            break
        A = np.stack([x[new], np.ones(new.sum())], axis=1)
        sol, *_ = np.linalg.lstsq(A, y[new], rcond=None)
        scale, offset = float(sol[0]), float(sol[1])
        if np.array_equal(new, inl):
            break
        inl = new
    return float(scale), float(offset), int(inl.sum())


def fit_image(image, cam, depth, point_xyz=None, all_xyz=None, min_points=10, zbuffer_cell=0):
    """Scale/offset of one image: dict(scale, offset, points, source)."""
    fx, fy, cx, cy = intrinsics(cam)
    R = cl.qvec2rotmat(image.qvec)
    t = np.asarray(image.tvec, dtype=np.float64)
    has_obs = point_xyz is not None and len(image.xys) > 0 and np.any(np.asarray(image.point3D_ids) >= 0)
    if has_obs:
        uv, xyz = observed_points(image, point_xyz)
        z = (xyz @ R.T + t)[:, 2] if len(xyz) else np.zeros(0)
        source = "observations"
    else:
        uv, z = zbuffer_points(all_xyz, R, t, fx, fy, cx, cy, cam.width, cam.height, zbuffer_cell)
        source = "projection"
    ok = z > 1e-9
    uv, z = uv[ok], z[ok]
    # depth maps may come at another resolution than the camera: scale the pixel positions
    sx, sy = depth.shape[1] / cam.width, depth.shape[0] / cam.height
    mono = sample_bilinear(depth, uv[:, 0] * sx, uv[:, 1] * sy) if len(z) else np.zeros(0)
    good = np.isfinite(mono)
    mono, inv = mono[good], 1.0 / z[good]
    if len(inv) < min_points:
        return dict(scale=0.0, offset=0.0, points=int(len(inv)), source=source)
    scale, offset, n_in = robust_fit(mono, inv)
    if not np.isfinite(scale) or not np.isfinite(offset) or scale <= 0:
        return dict(scale=0.0, offset=0.0, points=int(len(inv)), source=source, negative=bool(scale < 0))
    return dict(scale=scale, offset=offset, points=int(len(inv)), inliers=n_in, source=source)


def make_depth_scale(base_dir, depths_dir, model_dir=None, min_points=10, zbuffer_cell=0, quiet=False):
    """Fit every image of <base_dir>/sparse/0 and write depth_params.json there. Returns {stem: fit dict}."""
    sparse = model_dir or os.path.join(base_dir, "sparse", "0")
    if not os.path.isdir(base_dir):
        raise UserError(f"--base_dir {base_dir} does not exist")
    if not os.path.isdir(depths_dir):
        raise UserError(f"--depths_dir {depths_dir} does not exist: it should hold one 16-bit PNG inverse-depth "
                        f"map per image (same name stem as the image, .png)")
    if min_points < 2:
        raise UserError(f"--min_points {min_points} must be at least 2")
    ext = cl.detect_model_ext(sparse)
    cams = cl.read_cameras(os.path.join(sparse, "cameras" + ext))
    images = cl.read_images(os.path.join(sparse, "images" + ext))
    if not images:
        raise UserError(f"the model in {sparse} has no images")
    cl.check_model(cams, images, os.path.join(sparse, "cameras" + ext), os.path.join(sparse, "images" + ext))
    for cam in cams.values():
        intrinsics(cam)
    missing = [im.name for im in images.values()
               if not os.path.isfile(os.path.join(depths_dir, os.path.splitext(im.name)[0] + DEPTH_EXT))]
    if missing:
        raise UserError(f"{len(missing)} of {len(images)} images have no depth map in {depths_dir} (first: "
                        f"{os.path.splitext(missing[0])[0] + DEPTH_EXT} for image {missing[0]}); make one per "
                        f"image, named like the image with .png")
    any_obs = any(len(im.xys) > 0 and np.any(np.asarray(im.point3D_ids) >= 0) for im in images.values())
    points_path = os.path.join(sparse, "points3D" + ext)
    if any_obs:
        pts = cl.read_points3D(points_path)
        point_xyz = {pid: np.asarray(p.xyz, dtype=np.float64) for pid, p in pts.items()}
        all_xyz = np.stack(list(point_xyz.values())) if point_xyz else np.zeros((0, 3))
    else:
        point_xyz = None
        all_xyz = cl.read_points3D_arrays(points_path)[0]
    if len(all_xyz) == 0:
        raise UserError(f"the model in {sparse} has no 3D points to fit depth scales to")
    cl.check_points_finite(all_xyz, points_path)

    fits = {}
    for im in tqdm(sorted(images.values(), key=lambda i: i.name), desc="depth scales", unit="img",
                   disable=quiet, dynamic_ncols=True):
        if im.camera_id not in cams:
            raise UserError(f"image {im.name} refers to camera {im.camera_id}, which {sparse} does not define")
        stem = os.path.splitext(im.name)[0]
        depth = read_inverse_depth(os.path.join(depths_dir, stem + DEPTH_EXT))
        fits[stem] = fit_image(im, cams[im.camera_id], depth, point_xyz, all_xyz, min_points, zbuffer_cell)
    out = os.path.join(sparse, "depth_params.json")
    write_json(out, {k: {"scale": v["scale"], "offset": v["offset"]} for k, v in fits.items()})

    if not quiet:
        _report(fits, out, min_points)
    return fits


def _report(fits, out, min_points):
    scales = np.array([f["scale"] for f in fits.values()])
    pos = scales[scales > 0]
    few = sum(1 for f in fits.values() if f["scale"] == 0 and f["points"] < min_points)
    neg = sum(1 for f in fits.values() if f.get("negative"))
    src = sorted({f["source"] for f in fits.values()})
    print(f"Wrote {out}: {len(pos)}/{len(fits)} images fitted from {' and '.join(src)} "
          f"(median {int(np.median([f['points'] for f in fits.values()]))} points per image)")
    if len(pos):
        med = float(np.median(pos))
        outl = int(np.sum((pos < 0.2 * med) | (pos > 5 * med)))
        print(f"  scale median {med:.4g} (range {pos.min():.4g} .. {pos.max():.4g}); {outl} image(s) outside "
              f"0.2x..5x the median will be ignored in training")
    if few:
        print(f"  {few} image(s) see fewer than {min_points} points: scale 0 (ignored in training)")
    if neg:
        print(f"  {neg} image(s) have a negative fit (scale 0): are the maps inverse depth (near = bright)?")
    if len(pos) == 0:
        print("  warning: no image could be fitted; training with -d will not use any depth map")


def main(argv=None):
    p = argparse.ArgumentParser(description="Fit per-image scale/offset of monocular inverse-depth maps to a "
                                            "COLMAP model; writes <base_dir>/sparse/0/depth_params.json.")
    p.add_argument("--base_dir", required=True, help="scene folder with sparse/0 (PINHOLE, as convert.py writes)")
    p.add_argument("--depths_dir", required=True,
                   help="folder of inverse-depth maps: <image stem>.png, 16-bit, any resolution")
    p.add_argument("--model_dir", default=None, help="COLMAP model to use (default <base_dir>/sparse/0)")
    p.add_argument("--min_points", type=int, default=10,
                   help="images with fewer usable 3D points get scale 0 and are ignored (default 10)")
    p.add_argument("--zbuffer_cell", type=int, default=0,
                   help="for models without 2D observations: keep the nearest projected point per square cell of "
                        "this many pixels (1 = per pixel; default 0 = chosen per image so that about 4 points "
                        "fall into a cell, which hides points behind a sparse surface)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = p.parse_args(argv)
    make_depth_scale(args.base_dir, args.depths_dir, args.model_dir, args.min_points, args.zbuffer_cell,
                     args.quiet)
    return 0


if __name__ == "__main__":
    run_cli(main)
