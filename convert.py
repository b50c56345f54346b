#!/usr/bin/env python
"""Photos in <scene>/input -> a scene train.py can read, by structure from motion with pycolmap.

    python convert.py -s <scene>                 # SfM on <scene>/input/*, then undistortion
    python convert.py -s <scene> --skip_matching # only undistort <scene>/distorted/sparse/0 (any COLMAP run)

Steps: SIFT features -> matching (exhaustive, or sequential for video frames) -> incremental mapping -> the
model with the most registered images -> undistortion to PINHOLE cameras. Result::

    <scene>/images/                 undistorted photos (same names as in input/)
    <scene>/images_2, _4, _8/       with --resize: the same at 1/2, 1/4, 1/8 size
    <scene>/sparse/0/               PINHOLE cameras, poses and 3D points (COLMAP binary)
    <scene>/distorted/database.db   features and matches
    <scene>/distorted/sparse/0/     the distorted model (the --camera model, e.g. OPENCV)

Everything is built in a hidden temporary folder inside <scene> and renamed into place at the end, so an
interrupted run leaves the scene as it was.
"""
import argparse
import concurrent.futures
import math
import os
import shutil
import tempfile
import time

import cv2
from tqdm import tqdm

from scene import colmap_loader as cl
from utils.errors import UserError, run_cli
from utils.image_io import read_image_file

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
CAMERA_MODELS = ("OPENCV", "SIMPLE_RADIAL", "RADIAL", "PINHOLE", "SIMPLE_PINHOLE", "FULL_OPENCV", "OPENCV_FISHEYE")
RESIZE_FACTORS = (2, 4, 8)
TMP_PREFIX = ".convert-tmp-"
MIN_REGISTERED = 3

_RETRY_HINTS = ("take more photos with more overlap (each part of the scene in 3+ photos, 60-80% overlap between "
                "neighbours), avoid blur and plain textureless surfaces; try --camera SIMPLE_RADIAL (fewer "
                "intrinsics to estimate), --no_single_camera if the photos come from several cameras or zoom "
                "settings, or a larger --max_num_features / --max_image_size")


def build_parser():
    p = argparse.ArgumentParser(
        description="Structure from motion (pycolmap) on the photos in <scene>/input, undistorted into "
                    "<scene>/images and <scene>/sparse/0 for train.py.")
    p.add_argument("-s", "--source_path", required=True,
                   help="scene folder; the photos go in <scene>/input (results are written next to it)")
    p.add_argument("--skip_matching", action="store_true",
                   help="skip SfM: only undistort the existing model in <scene>/distorted/sparse/0 (e.g. from "
                        "your own COLMAP run, any camera model) with the photos in <scene>/input")
    p.add_argument("--resize", action="store_true",
                   help="also write images_2, images_4 and images_8 (1/2, 1/4, 1/8 size copies of images/)")
    p.add_argument("--num_threads", type=int, default=-1,
                   help="CPU threads for extraction, matching, mapping and undistortion (default -1: all)")
    p.add_argument("--no_gpu", action="store_true",
                   help="run SIFT on the CPU even when pycolmap was built with CUDA")
    p.add_argument("--verbose", action="store_true", help="show COLMAP's own log messages")

    # the settings of each SfM step, in a --help section of their own
    extraction = p.add_argument_group("feature extraction")
    extraction.add_argument("--camera", default="OPENCV", choices=CAMERA_MODELS,
                            help="COLMAP camera model estimated during SfM (default OPENCV, as the 3DGS reference); "
                                 "SIMPLE_RADIAL is more stable with few photos; PINHOLE/SIMPLE_PINHOLE assume no "
                                 "lens distortion; OPENCV_FISHEYE for fisheye lenses")
    single = extraction.add_mutually_exclusive_group()
    single.add_argument("--single_camera", dest="single_camera", action="store_true", default=None,
                        help="all photos share one set of intrinsics (the default when all photos have the same "
                             "size)")
    single.add_argument("--no_single_camera", dest="single_camera", action="store_false",
                        help="estimate intrinsics for every photo (photos from several cameras or zoom "
                             "settings; chosen automatically when the photo sizes differ)")
    extraction.add_argument("--max_image_size", type=int, default=3200,
                            help="photos larger than this (pixels, longest side) are downscaled for feature "
                                 "extraction only (default 3200)")
    extraction.add_argument("--max_num_features", type=int, default=8192,
                            help="most SIFT features per photo (default 8192)")

    matching = p.add_argument_group("matching")
    matching.add_argument("--matcher", default="exhaustive", choices=("exhaustive", "sequential"),
                          help="which photo pairs to match: exhaustive (all pairs; best for unordered photos, "
                               "quadratic cost) or sequential (neighbours in name order; for video frames)")
    matching.add_argument("--sequential_overlap", type=int, default=10,
                          help="with --matcher sequential: match each photo with this many following ones "
                               "(default 10)")

    mapping = p.add_argument_group("mapping")
    mapping.add_argument("--min_registered_fraction", type=float, default=0.5,
                         help="fail (keeping the model in distorted/sparse/0) when fewer than this fraction of the "
                              "photos is registered (default 0.5; 0 accepts any model with 3+ photos)")
    mapping.add_argument("--two_stage", default="auto", choices=("auto", "always", "never"),
                         help="auto (default): if the first solve looks unreliable (photos left out, fx/fy far from "
                              "1, reprojection error > 1 px), solve again registering with one focal length and no "
                              "distortion, then refine the --camera intrinsics in a final bundle adjustment, and "
                              "keep the better model; always: only that solve; never: only the reference's single "
                              "mapper run")
    mapping.add_argument("--seed", type=int, default=0, help="random seed of the mapper (default 0)")
    return p


# ----------------------------------------------------------------------------------------------------------------
# input photos


def list_images(folder):
    """Relative paths ('/'-separated, sorted) of the image files under ``folder`` and of the other files."""
    images, others = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
            (images if f.lower().endswith(IMAGE_EXTS) else others).append(rel)
    return sorted(images), others


def _probe(path):
    """Decode an image cheaply (1/8 size for JPEG); returns its (reduced) shape or None if unreadable."""
    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        return read_image_file(path, flags=flags, retry_s=0).shape[:2]
    except (UserError, cv2.error):
        return None


def check_images(folder, names, num_threads=-1):
    """Decode every photo once; UserError naming the unreadable ones. Returns {name: reduced shape}."""
    workers = _threads(num_threads)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        shapes = list(tqdm(pool.map(lambda n: _probe(os.path.join(folder, n)), names), total=len(names),
                           desc="checking photos", unit="img", leave=False, dynamic_ncols=True))
    bad = [n for n, s in zip(names, shapes) if s is None]
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise UserError(f"{len(bad)} file(s) in {folder} cannot be read as images: {shown}; "
                        f"remove or re-export them (JPEG or PNG)")
    return dict(zip(names, shapes))


def _threads(n):
    return max(1, os.cpu_count() or 1) if n is None or n <= 0 else int(n)


# ----------------------------------------------------------------------------------------------------------------
# pycolmap


def _pycolmap(verbose=False):
    try:
        import pycolmap
    except ImportError:
        raise UserError("convert.py needs pycolmap: `pip install pycolmap` (CPU wheels work)") from None
    # glog levels: 0 INFO, 1 WARNING, 2 ERROR
    pycolmap.logging.minloglevel = 0 if verbose else 2
    pycolmap.logging.stderrthreshold = 0 if verbose else 2
    return pycolmap


def _device(pycolmap, no_gpu):
    return pycolmap.Device.cpu if no_gpu or not pycolmap.has_cuda else pycolmap.Device.auto


def extract_features(pycolmap, db, input_dir, names, args, single):
    mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.PER_IMAGE
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = args.camera
    ext = pycolmap.FeatureExtractionOptions()
    ext.max_image_size = int(args.max_image_size)
    ext.num_threads = int(args.num_threads)
    ext.sift.max_num_features = int(args.max_num_features)
    dev = _device(pycolmap, args.no_gpu)
    # register every photo first (one shared camera in single mode), then extract in chunks for a progress bar:
    # the extractor reuses the camera of a photo already in the database
    pycolmap.import_images(db, input_dir, mode, image_names=names, options=reader)
    chunk = max(2 * _threads(args.num_threads), math.ceil(len(names) / 25))
    with tqdm(total=len(names), desc="features", unit="img", dynamic_ncols=True) as bar:
        for i in range(0, len(names), chunk):
            part = names[i:i + chunk]
            pycolmap.extract_features(db, input_dir, image_names=part, camera_mode=mode, reader_options=reader,
                                      extraction_options=ext, device=dev)
            bar.update(len(part))
    database = pycolmap.Database.open(db)
    try:
        n_img, n_cam, n_kp = database.num_images(), database.num_cameras(), database.num_keypoints()
    finally:
        database.close()
    if n_img != len(names):
        raise UserError(f"COLMAP imported {n_img} of {len(names)} photos from {input_dir}; run with --verbose "
                        f"to see which ones it rejected")
    return dict(cameras=n_cam, keypoints=n_kp)


def match_features(pycolmap, db, args, n):
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = int(args.num_threads)
    dev = _device(pycolmap, args.no_gpu)
    if args.matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = int(args.sequential_overlap)
        pairing.loop_detection = False  # needs a vocabulary tree file
        pycolmap.match_sequential(db, matching_options=match, pairing_options=pairing, device=dev)
    else:
        pycolmap.match_exhaustive(db, matching_options=match, device=dev)
    database = pycolmap.Database.open(db)
    try:
        pairs = database.num_verified_image_pairs()
    finally:
        database.close()
    return dict(verified_pairs=pairs)


def _mapper_options(pycolmap, args):
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = int(args.num_threads)
    opts.ba_global_function_tolerance = 1e-6  # as the 3DGS reference's mapper call
    opts.random_seed = int(args.seed)
    opts.mapper.random_seed = int(args.seed)
    opts.triangulation.random_seed = int(args.seed)
    return opts


def incremental_mapping(pycolmap, db, input_dir, work_dir, opts, n, desc="registering"):
    """pycolmap's incremental mapper with a progress bar; returns the model with most images (or None) and
    the number of models."""
    os.makedirs(work_dir, exist_ok=True)
    bar = tqdm(total=n, desc=desc, unit="img", dynamic_ncols=True)

    def tick(k):
        bar.update(max(0, min(k, n - bar.n)))

    try:
        models = pycolmap.incremental_mapping(db, input_dir, work_dir, opts,
                                              initial_image_pair_callback=lambda: tick(2),
                                              next_image_callback=lambda: tick(1))
        if models:
            bar.n = max(m.num_reg_images() for m in models.values())
            bar.refresh()
    finally:
        bar.close()
    if not models:
        return None, 0
    return max(models.values(), key=_model_score), len(models)


def _model_score(rec):
    return rec.num_reg_images(), rec.num_points3D()


def doubtful(rec, n):
    """Reasons to distrust a solve ([] if it looks fine): unregistered photos, non-square pixels, large error."""
    why = []
    if rec.num_reg_images() < n:
        why.append(f"{rec.num_reg_images()}/{n} photos registered")
    for cam in rec.cameras.values():
        fx, fy = cam.focal_length_x, cam.focal_length_y
        if abs(fx / fy - 1) > 0.02:
            why.append(f"fx/fy = {fx / fy:.3f} (real cameras have square pixels)")
    err = rec.compute_mean_reprojection_error()
    if err > 1.0:
        why.append(f"mean reprojection error {err:.2f} px")
    return why


def refine_all_intrinsics(pycolmap, rec):
    """Global bundle adjustment of poses, points, focal lengths and distortion (principal point fixed)."""
    opts = pycolmap.BundleAdjustmentOptions()
    opts.print_summary = False
    opts.refine_focal_length = True
    opts.refine_extra_params = True
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in rec.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.THREE_POINTS)
    pycolmap.create_default_bundle_adjuster(opts, config, rec).solve()


def _set_database_cameras(pycolmap, db, cameras):
    database = pycolmap.Database.open(db)
    try:
        for cam in cameras:
            database.update_camera(cam)
    finally:
        database.close()


def map_with_simple_camera(pycolmap, db, input_dir, work_dir, args, n, model):
    """Register with SIMPLE_PINHOLE cameras (one focal length, no distortion), then turn them into ``model``
    cameras and refine all intrinsics in a final bundle adjustment. The database is left as it was."""
    database = pycolmap.Database.open(db)
    try:
        originals = database.read_all_cameras()
    finally:
        database.close()
    simple = []
    for cam in originals:
        s = pycolmap.Camera.create_from_model_name(cam.camera_id, "SIMPLE_PINHOLE", float(cam.mean_focal_length()),
                                                   cam.width, cam.height)
        s.principal_point_x, s.principal_point_y = cam.principal_point_x, cam.principal_point_y
        s.has_prior_focal_length = cam.has_prior_focal_length
        simple.append(s)
    _set_database_cameras(pycolmap, db, simple)
    try:
        rec, count = incremental_mapping(pycolmap, db, input_dir, work_dir, _mapper_options(pycolmap, args), n,
                                         desc="registering (2nd)")
    finally:
        _set_database_cameras(pycolmap, db, originals)
    if rec is None:
        return None, 0
    for cam_id in list(rec.cameras.keys()):
        cam = rec.camera(cam_id)
        f, cx, cy = cam.params[0], cam.params[1], cam.params[2]
        full = pycolmap.Camera.create_from_model_name(cam_id, model, float(f), cam.width, cam.height)
        full.principal_point_x, full.principal_point_y = cx, cy
        cam.model = full.model
        cam.params = full.params  # distortion starts at zero
    refine_all_intrinsics(pycolmap, rec)
    return rec, count


def map_images(pycolmap, db, input_dir, work_dir, args, n):
    """Incremental mapping; returns (best model or None, number of models, note).

    With few uncalibrated photos, estimating separate focal lengths and lens distortion from the start can
    drive the solve into a wrong minimum (seen with OPENCV on 40 bonsai photos: fx/fy 1.16, wrong poses, yet
    all photos "registered"). When the first solve looks doubtful (``doubtful``), a second solve registers the
    photos with SIMPLE_PINHOLE cameras and only then refines the requested model's intrinsics (both focal
    lengths, distortion) in a final bundle adjustment; the model with more registered photos, then more 3D
    points, is kept. --two_stage always/never force or skip the second solve.
    """
    rec, count, note = None, 0, ""
    second = args.camera != "SIMPLE_PINHOLE" and args.two_stage != "never"
    if args.two_stage != "always" or not second:
        rec, count = incremental_mapping(pycolmap, db, input_dir, os.path.join(work_dir, "a"),
                                         _mapper_options(pycolmap, args), n)
    why = doubtful(rec, n) if rec is not None else ["no model"]
    if second and (why or args.two_stage == "always"):
        if rec is not None:
            print(f"  the first solve looks unreliable ({'; '.join(why)}): solving again with one focal length "
                  f"and no distortion, then refining the {args.camera} intrinsics")
        rec2, count2 = map_with_simple_camera(pycolmap, db, input_dir, os.path.join(work_dir, "b"), args, n,
                                              args.camera)
        if rec2 is not None:
            if rec is None or _model_score(rec2) > _model_score(rec):
                if rec is not None:
                    note = (f"kept the second solve ({rec2.num_reg_images()} photos, {rec2.num_points3D()} points "
                            f"vs {rec.num_reg_images()} photos, {rec.num_points3D()} points)")
                rec, count = rec2, count2
            else:
                note = "kept the first solve"
    return rec, count, note


# ----------------------------------------------------------------------------------------------------------------
# undistortion and downscaled copies


def undistort(pycolmap, distorted_sparse, input_dir, out_dir, args):
    """Undistort into out_dir/images + out_dir/sparse/0 (PINHOLE). Returns the number of images written."""
    cams = cl.read_cameras(os.path.join(distorted_sparse, "cameras" + cl.detect_model_ext(distorted_sparse)))
    imgs = cl.read_images(os.path.join(distorted_sparse, "images" + cl.detect_model_ext(distorted_sparse)))
    raw = os.path.join(out_dir, "raw")
    pycolmap.undistort_images(raw, distorted_sparse, input_dir, output_type="COLMAP",
                              num_threads=int(args.num_threads))
    images_dir = os.path.join(raw, "images")
    missing = [im.name for im in imgs.values() if not os.path.isfile(os.path.join(images_dir, im.name))]
    if missing:
        raise UserError(f"undistortion failed for {len(missing)} of {len(imgs)} photos (first: {missing[0]}); "
                        f"check that they are readable in {input_dir} (run with --verbose for COLMAP's log)")
    sparse = os.path.join(out_dir, "sparse", "0")
    os.makedirs(sparse)
    for f in os.listdir(os.path.join(raw, "sparse")):
        shutil.move(os.path.join(raw, "sparse", f), os.path.join(sparse, f))
    out_cams = cl.read_cameras(os.path.join(sparse, "cameras" + cl.detect_model_ext(sparse)))
    bad = sorted({c.model for c in out_cams.values()} - {"PINHOLE", "SIMPLE_PINHOLE"})
    if bad:
        raise UserError(f"undistortion produced {', '.join(bad)} cameras instead of PINHOLE from the models "
                        f"{sorted({c.model for c in cams.values()})} in {distorted_sparse}")
    shutil.move(images_dir, os.path.join(out_dir, "images"))
    shutil.rmtree(raw)  # stereo/ and run-colmap-*.sh for COLMAP's MVS are not needed here
    return len(imgs)


def write_resized(images_dir, out_root, names, num_threads=-1):
    """images_dir/<name> -> out_root/images_<f>/<name> at 1/f size (area filter) for f in 2, 4, 8."""
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95]}

    def one(name):
        img = read_image_file(os.path.join(images_dir, name), "the undistorted image")
        h, w = img.shape[:2]
        for f in RESIZE_FACTORS:
            small = cv2.resize(img, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
            dst = os.path.join(out_root, f"images_{f}", name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if not cv2.imwrite(dst, small, params.get(os.path.splitext(name)[1].lower(), [])):
                raise UserError(f"cannot write {dst}")

    with concurrent.futures.ThreadPoolExecutor(_threads(num_threads)) as pool:
        list(tqdm(pool.map(one, names), total=len(names), desc="resizing", unit="img", dynamic_ncols=True))


# ----------------------------------------------------------------------------------------------------------------
# temporary folder and the final swap


def _clean_stale_tmp(scene):
    """Remove temporary folders left by killed runs (their process no longer exists)."""
    for d in os.listdir(scene):
        if not d.startswith(TMP_PREFIX):
            continue
        try:
            pid = int(d[len(TMP_PREFIX):].split("-")[0])
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        shutil.rmtree(os.path.join(scene, d), ignore_errors=True)


def _promote(tmp, scene, names):
    """Rename tmp/<name> over scene/<name> for each name (the old one is moved into tmp/old first)."""
    old = os.path.join(tmp, "old")
    os.makedirs(old, exist_ok=True)
    for name in names:
        dst = os.path.join(scene, name)
        if os.path.lexists(dst):
            os.rename(dst, os.path.join(old, name))
        os.rename(os.path.join(tmp, name), dst)


# ----------------------------------------------------------------------------------------------------------------
# main


def _scene_paths(scene):
    return dict(input=os.path.join(scene, "input"), distorted=os.path.join(scene, "distorted"),
                distorted_sparse=os.path.join(scene, "distorted", "sparse", "0"))


def _check_skip_matching_inputs(scene, paths):
    ds = paths["distorted_sparse"]
    if not os.path.isdir(ds) or not any(os.path.isfile(os.path.join(ds, f + e)) for f in cl.MODEL_FILES
                                        for e in (".bin", ".txt")):
        raise UserError(f"--skip_matching needs a COLMAP model in {ds} (cameras, images, points3D as .bin or "
                        f".txt) and the photos in {paths['input']}; run `python convert.py -s {scene}` without "
                        f"--skip_matching to compute one")
    ext = cl.detect_model_ext(ds)
    cams = cl.read_cameras(os.path.join(ds, "cameras" + ext))
    imgs = cl.read_images(os.path.join(ds, "images" + ext))
    if not imgs:
        raise UserError(f"the model in {ds} has no images")
    if not os.path.isdir(paths["input"]):
        raise UserError(f"--skip_matching undistorts the photos in {paths['input']}, which does not exist: put "
                        f"the photos the model in {ds} was made from there")
    missing = [im.name for im in imgs.values() if not os.path.isfile(os.path.join(paths["input"], im.name))]
    if missing:
        raise UserError(f"{len(missing)} of {len(imgs)} photos of the model in {ds} are missing from "
                        f"{paths['input']} (first: {missing[0]})")
    unknown = sorted({im.camera_id for im in imgs.values()} - set(cams))
    if unknown:
        raise UserError(f"images in {ds} use camera id(s) {unknown}, which its cameras file does not define")
    return cams, imgs


def convert(args):
    """Run the whole conversion for parsed ``args``; returns a summary dict."""
    scene = os.path.abspath(args.source_path)
    if not os.path.isdir(scene):
        raise UserError(f"scene folder {scene} (-s/--source_path) does not exist; create it and put the photos "
                        f"in {os.path.join(scene, 'input')}")
    if args.num_threads == 0:
        raise UserError("--num_threads must be positive, or -1 for all cores")
    if not 0 <= args.min_registered_fraction <= 1:
        raise UserError(f"--min_registered_fraction {args.min_registered_fraction} must be between 0 and 1")
    if args.sequential_overlap < 1:
        raise UserError(f"--sequential_overlap {args.sequential_overlap} must be at least 1")
    paths = _scene_paths(scene)
    summary = dict(scene=scene)
    t_start = time.time()

    names, single = _check_inputs(scene, paths, args, summary)

    pycolmap = _pycolmap(args.verbose)
    _clean_stale_tmp(scene)
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=scene)
    try:
        promote = []
        if args.skip_matching:
            distorted_sparse = paths["distorted_sparse"]
        else:
            distorted_sparse = _run_sfm(pycolmap, tmp, paths, names, args, single, summary)
            promote.append("distorted")
            if "failure" in summary:  # too few photos registered: keep only the (valid) distorted model
                _promote(tmp, scene, promote)
                raise UserError(summary["failure"])
        t0 = time.time()
        print("Undistorting to PINHOLE cameras ...")
        n_und = undistort(pycolmap, distorted_sparse, paths["input"], tmp, args)
        summary["undistort_s"] = round(time.time() - t0, 1)
        promote += ["images", "sparse"]
        if args.resize:
            und_names = sorted(list_images(os.path.join(tmp, "images"))[0])
            write_resized(os.path.join(tmp, "images"), tmp, und_names, args.num_threads)
            promote += [f"images_{f}" for f in RESIZE_FACTORS]
        had_depth = os.path.isfile(os.path.join(scene, "sparse", "0", "depth_params.json"))
        _promote(tmp, scene, promote)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary.update(images_written=n_und, total_s=round(time.time() - t_start, 1))
    _report(scene, args, summary, had_depth)
    print(f"Train with: python train.py -s {args.source_path} -m <output> --eval")
    return summary


def _check_inputs(scene, paths, args, summary):
    """Check the photos (or the model to undistort with --skip_matching) before anything is written; returns
    whether SfM shares one camera between the photos (None with --skip_matching)."""
    single = None
    if args.skip_matching:
        cams, imgs = _check_skip_matching_inputs(scene, paths)
        names = sorted(im.name for im in imgs.values())
        check_images(paths["input"], names, args.num_threads)
        print(f"Undistorting the model in {paths['distorted_sparse']} ({len(imgs)} images, cameras: "
              f"{', '.join(sorted({c.model for c in cams.values()}))})")
    else:
        names = _input_names(scene, paths["input"])
        shapes = check_images(paths["input"], names, args.num_threads)
        single = args.single_camera
        sizes = sorted(set(shapes.values()))
        if len(sizes) > 1:
            if single:
                raise UserError(f"--single_camera needs photos of one size, but {paths['input']} holds "
                                f"{len(sizes)} sizes; pass --no_single_camera or resize the photos")
            if single is None:
                print(f"note: the photos have {len(sizes)} different sizes: estimating intrinsics per photo "
                      f"(--no_single_camera)")
            single = False
        elif single is None:
            single = True
        summary.update(total=len(names), single_camera=single)
        if args.matcher == "exhaustive" and len(names) > 300:
            print(f"note: exhaustive matching of {len(names)} photos tries {len(names) * (len(names) - 1) // 2} "
                  f"pairs; for video frames --matcher sequential is much faster")
    return names, single


def _report(scene, args, summary, had_depth):
    """What was written, and notes on what was not."""
    und = cl.read_cameras(os.path.join(scene, "sparse", "0", "cameras.bin"))
    c = next(iter(und.values()))
    print(f"Wrote {summary['images_written']} undistorted images to {os.path.join(scene, 'images')} and the "
          f"PINHOLE model to {os.path.join(scene, 'sparse', '0')} ({len(und)} camera(s), first {c.width}x{c.height}, "
          f"fx {c.params[0]:.1f})" + (", plus images_2/4/8" if args.resize else ""))
    if not args.resize:
        stale = [f"images_{f}" for f in RESIZE_FACTORS if os.path.isdir(os.path.join(scene, f"images_{f}"))]
        if stale:
            print(f"note: {', '.join(stale)} in {scene} are from an earlier run and were not updated (pass "
                  f"--resize to rewrite them)")
    if had_depth:
        print("note: the old sparse/0/depth_params.json was replaced with the new model: re-run "
              "utils/make_depth_scale.py before training with -d")
    if "registered" in summary:
        print(f"Registered {summary['registered']}/{summary['total']} photos; SfM took {summary['sfm_s']:.1f} s, "
              f"total {summary['total_s']:.1f} s")


def _input_names(scene, input_dir):
    if not os.path.isdir(input_dir):
        hint = ""
        if os.path.isdir(os.path.join(scene, "images")) and not os.path.isdir(os.path.join(scene, "sparse")):
            hint = f" (convert.py writes {os.path.join(scene, 'images')} itself: move your photos to input/)"
        raise UserError(f"no photos: {input_dir} does not exist; put the photos of the scene there{hint}")
    names, others = list_images(input_dir)
    if not names:
        raise UserError(f"no images in {input_dir}: put the photos there as JPEG or PNG "
                        f"({', '.join(IMAGE_EXTS)})" + (f"; found only {', '.join(others[:5])}" if others else ""))
    if others:
        print(f"note: ignoring {len(others)} file(s) in {input_dir} that are not images (first: {others[0]})")
    if len(names) < MIN_REGISTERED:
        raise UserError(f"only {len(names)} photo(s) in {input_dir}: structure from motion needs at least "
                        f"{MIN_REGISTERED} overlapping photos (a few dozen are better)")
    return names


def _run_sfm(pycolmap, tmp, paths, names, args, single, summary):
    """Features, matching and mapping into tmp/distorted; returns tmp/distorted/sparse/0."""
    n = len(names)
    dist = os.path.join(tmp, "distorted")
    os.makedirs(dist)
    db = os.path.join(dist, "database.db")
    pycolmap.Database.open(db).close()  # create an empty database
    print(f"Structure from motion on {n} photos in {paths['input']} (camera {args.camera}, "
          f"{'one shared camera' if single else 'one camera per photo'}, {args.matcher} matching)")
    t_sfm = time.time()
    t0 = time.time()
    st = extract_features(pycolmap, db, paths["input"], names, args, single)
    summary["features_s"] = round(time.time() - t0, 1)
    print(f"  features: {st['keypoints']} keypoints ({st['keypoints'] / n:.0f} per photo) in "
          f"{summary['features_s']:.1f} s")
    t0 = time.time()
    print(f"  matching ({args.matcher}) ...", flush=True)
    st = match_features(pycolmap, db, args, n)
    summary["matching_s"] = round(time.time() - t0, 1)
    print(f"  matching: {st['verified_pairs']} verified photo pairs in {summary['matching_s']:.1f} s")
    if st["verified_pairs"] == 0:
        raise UserError(f"no two photos in {paths['input']} could be matched, so no camera poses can be "
                        f"found; {_RETRY_HINTS}")
    t0 = time.time()
    models_dir = os.path.join(tmp, "models")
    os.makedirs(models_dir)
    rec, count, note = map_images(pycolmap, db, paths["input"], models_dir, args, n)
    summary["mapping_s"] = round(time.time() - t0, 1)
    summary["sfm_s"] = round(time.time() - t_sfm, 1)
    if rec is None:
        raise UserError(f"structure from motion registered none of the {n} photos in {paths['input']}; "
                        f"{_RETRY_HINTS}")
    k = rec.num_reg_images()
    reg = {rec.image(i).name for i in rec.reg_image_ids()}
    cam = next(iter(rec.cameras.values()))
    summary.update(registered=k, models=count, points=rec.num_points3D(),
                   reprojection_error=float(rec.compute_mean_reprojection_error()),
                   unregistered=[x for x in names if x not in reg], camera_params=list(map(float, cam.params)))
    print(f"  mapping: registered {k}/{n} photos ({count} model(s), keeping the largest), "
          f"{rec.num_points3D()} points, mean reprojection error {summary['reprojection_error']:.2f} px, "
          f"{summary['mapping_s']:.1f} s" + (f"; {note}" if note else ""))
    print(f"  camera: {cam.model_name} {cam.width}x{cam.height} " +
          ", ".join(f"{k_} {v:.4g}" for k_, v in zip(cam.params_info.split(", "), cam.params)))
    if summary["unregistered"]:
        un = summary["unregistered"]
        print(f"  not registered: {', '.join(un[:10])}" + (f" and {len(un) - 10} more" if len(un) > 10 else ""))
    if k < MIN_REGISTERED:
        raise UserError(f"structure from motion registered only {k} of {n} photos (at least {MIN_REGISTERED} "
                        f"are needed); {_RETRY_HINTS}")
    sparse = os.path.join(dist, "sparse", "0")
    os.makedirs(sparse)
    rec.write(sparse)
    shutil.rmtree(models_dir)
    if k < args.min_registered_fraction * n:
        # the model is valid: keep it in distorted/ so the user can accept it with --skip_matching
        summary["failure"] = (
            f"structure from motion registered only {k} of {n} photos (below --min_registered_fraction "
            f"{args.min_registered_fraction}); the model is kept in {paths['distorted_sparse']}: use it anyway "
            f"with `python convert.py -s {args.source_path} --skip_matching`, or {_RETRY_HINTS}")
    return sparse


def main(argv=None):
    args = build_parser().parse_args(argv)
    return convert(args)


if __name__ == "__main__":
    run_cli(main)
