#!/usr/bin/env python
"""Image-quality metrics of rendered test views: PSNR, SSIM and LPIPS (VGG), per view and mean.

    python metrics.py -m <model_dir> [<model_dir> ...] [--split test|train] [--skip_lpips]
                      [--device cpu|cuda] [--batch_size N]

For every ``<model>/<split>/ours_<it>/`` folder written by render.py, the PNGs in ``renders/`` are
compared with the same-named PNGs in ``gt/``. Results go to ``<model>/results.json``
(``{"ours_<it>": {"SSIM", "PSNR", "LPIPS"}}``, means over views) and ``<model>/per_view.json``
(``{"ours_<it>": {"SSIM": {name: v}, "PSNR": {...}, "LPIPS": {...}}}``), and ``<model>/results.md``, a
Markdown table of the means (plus the run's models as train.py evaluated them, from distill.json or
training_log.json); with ``--split train`` the files are ``results_train.*`` / ``per_view_train.json`` so
test numbers are never overwritten.

Conventions:
* PSNR over the whole image (all channels) with MSE clamped at 1e-20, so an identical pair scores a
  finite 200 dB instead of infinity (the JSON never holds Infinity/NaN).
* SSIM: 11x11 Gaussian window, sigma 1.5, zero padding, mean over pixels and channels
  (utils.loss_utils). An identical pair scores exactly 1.
* LPIPS: lpips.LPIPS(net="vgg") on inputs scaled to [-1, 1]. Where the ImageNet VGG16 trunk weights
  are not on this machine (offline), LPIPS is recorded as null and PSNR/SSIM are still written.
* Alpha channels are dropped (RGB only); 8- and 16-bit PNGs are read.
"""
import argparse
import collections
import itertools
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from utils.errors import UserError, run_cli
from utils.image_io import read_image_file
from utils.image_utils import from_uint8, psnr
from utils.loss_utils import ssim_map
from utils.lpips_utils import load_lpips
from utils.report import results_markdown
from utils.system_utils import write_file, write_json


# ----------------------------------------------------------------------------------------------
# files

def _method_key(name):
    m = re.fullmatch(r"ours_(\d+)(_\w+)?", name)  # render.py's ours_<it>, a teacher's ours_<it>_<role>
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def find_methods(model, split):
    """Sorted ``ours_*`` folders in ``<model>/<split>`` (by iteration number)."""
    if not os.path.isdir(model):
        raise UserError(f"model folder {model} does not exist")
    split_dir = os.path.join(model, split)
    methods = []
    if os.path.isdir(split_dir):
        methods = [d for d in os.listdir(split_dir)
                   if d.startswith("ours_") and os.path.isdir(os.path.join(split_dir, d))]
    if not methods:
        raise UserError(f"no renders in {split_dir}: run render.py -m {model} first")
    return sorted(methods, key=_method_key)


def _pngs(folder):
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(".png") and os.path.isfile(os.path.join(folder, f)))


def _few(names, k=5):
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")


def pair_names(method_dir):
    """Sorted PNG names present in both renders/ and gt/; any difference is a UserError."""
    rdir, gdir = os.path.join(method_dir, "renders"), os.path.join(method_dir, "gt")
    for d in (rdir, gdir):
        if not os.path.isdir(d):
            raise UserError(f"{method_dir}: missing folder {os.path.basename(d)}/ "
                            f"(render.py writes renders/ and gt/)")
    rn, gn = _pngs(rdir), _pngs(gdir)
    if rn != gn:
        only_r = sorted(set(rn) - set(gn))
        only_g = sorted(set(gn) - set(rn))
        parts = []
        if only_r:
            parts.append(f"only in renders/: {_few(only_r)}")
        if only_g:
            parts.append(f"only in gt/: {_few(only_g)}")
        raise UserError(f"{method_dir}: renders/ and gt/ hold different PNG names ({'; '.join(parts)})")
    if not rn:
        raise UserError(f"{method_dir}: no PNG images in renders/ and gt/")
    for name in rn:  # header-only size check, so a bad pair fails before any heavy work
        rs, gs = _png_size(os.path.join(rdir, name)), _png_size(os.path.join(gdir, name))
        if rs != gs:
            raise UserError(f"{method_dir}: {name} is {rs[0]}x{rs[1]} in renders/ but "
                            f"{gs[0]}x{gs[1]} in gt/")
    return rn


def _png_size(path):
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:
        raise UserError(f"cannot read image {path} ({type(exc).__name__}: {exc})") from None


def read_image(path):
    """PNG -> [3, H, W] float32 in [0, 1] (RGB; alpha dropped; gray expanded)."""
    arr = read_image_file(path)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] >= 3:
        arr = arr[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    else:
        raise UserError(f"image {path} has {arr.shape[2]} channels; expected gray, RGB or RGBA")
    if arr.dtype == np.uint8:
        return from_uint8(arr)
    if arr.dtype == np.uint16:
        return torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32) / 65535.0).permute(2, 0, 1)
    raise UserError(f"image {path} has unsupported pixel type {arr.dtype}")


def iter_pairs(method_dir, names, workers=4, depth=8):
    """Yield (name, render, gt) with a small bounded read-ahead (PNG decoding releases the GIL)."""
    rdir, gdir = os.path.join(method_dir, "renders"), os.path.join(method_dir, "gt")

    def load(name):
        r = read_image(os.path.join(rdir, name))
        g = read_image(os.path.join(gdir, name))
        if r.shape != g.shape:
            raise UserError(f"{method_dir}: {name} is {r.shape[2]}x{r.shape[1]} in renders/ but "
                            f"{g.shape[2]}x{g.shape[1]} in gt/")
        return name, r, g

    it = iter(names)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        pending = collections.deque(ex.submit(load, n) for n in itertools.islice(it, depth))
        try:
            while pending:
                fut = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(ex.submit(load, nxt))
                yield fut.result()
        finally:
            for f in pending:
                f.cancel()


def iter_batches(pairs, batch_size):
    """Group consecutive same-sized pairs into batches of at most batch_size."""
    batch = []
    for item in pairs:
        if batch and (len(batch) >= batch_size or batch[0][1].shape != item[1].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


# ----------------------------------------------------------------------------------------------
# metrics

def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _mean(values):
    vals = [v for v in values if v is not None]
    return _finite(math.fsum(vals) / len(vals)) if vals else None


@torch.no_grad()
def evaluate_folder(method_dir, names, device, lpips_model, batch_size, desc=None):
    """Per-view metrics of one ours_<it> folder: {"SSIM": {name: v}, "PSNR": ..., "LPIPS": ... or None}."""
    out = {"SSIM": {}, "PSNR": {}, "LPIPS": {} if lpips_model is not None else None}
    workers = max(1, min(4, os.cpu_count() or 1))
    with tqdm(total=len(names), desc=desc or os.path.basename(method_dir), unit="img",
              dynamic_ncols=True) as bar:
        for batch in iter_batches(iter_pairs(method_dir, names, workers=workers), batch_size):
            bnames = [b[0] for b in batch]
            r = torch.stack([b[1] for b in batch]).to(device, non_blocking=True)
            g = torch.stack([b[2] for b in batch]).to(device, non_blocking=True)
            p = psnr(r, g).tolist()
            s = ssim_map(r, g).mean(dim=(1, 2, 3)).tolist()
            lp = (lpips_model(r * 2 - 1, g * 2 - 1).flatten().tolist()
                  if lpips_model is not None else None)
            for i, n in enumerate(bnames):
                out["PSNR"][n] = _finite(p[i])
                out["SSIM"][n] = _finite(s[i])
                if lp is not None:
                    out["LPIPS"][n] = _finite(lp[i])
            bar.update(len(batch))
    return out


def summarize(per_view):
    return {k: (_mean(per_view[k].values()) if per_view[k] is not None else None)
            for k in ("SSIM", "PSNR", "LPIPS")}


def _fmt(v):
    return "skipped" if v is None else f"{v:>12.7f}"


def build_parser():
    p = argparse.ArgumentParser(description="PSNR / SSIM / LPIPS-VGG of render.py outputs.")
    p.add_argument("-m", "--model_paths", "--model_path", dest="model_paths", nargs="+",
                   required=True, help="model output folder(s) holding <split>/ours_<it>/")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--skip_lpips", action="store_true", help="do not compute LPIPS (recorded as null)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda if available, else cpu")
    p.add_argument("--batch_size", type=int, default=None,
                   help="views per batch (default 4 on cuda, 2 on cpu)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size} must be at least 1")
    batch_size = args.batch_size or (4 if device == "cuda" else 2)
    suffix = "" if args.split == "test" else f"_{args.split}"

    # Check every folder before any heavy work, so a bad one fails fast.
    jobs = []
    for model in args.model_paths:
        methods = []
        for method in find_methods(model, args.split):
            mdir = os.path.join(model, args.split, method)
            methods.append((method, mdir, pair_names(mdir)))
        jobs.append((model, methods))

    lpips_model = None
    if args.skip_lpips:
        print("LPIPS skipped (--skip_lpips): recorded as null.", flush=True)
    else:
        lpips_model, reason = load_lpips(device)
        if lpips_model is None:
            print(f"LPIPS skipped: {reason}. PSNR/SSIM are still written.", flush=True)

    all_results = {}
    for model, methods in jobs:
        print(f"Scene: {model}", flush=True)
        results, per_view = {}, {}
        for method, mdir, names in methods:
            pv = evaluate_folder(mdir, names, device, lpips_model, batch_size,
                                 desc=f"{os.path.basename(os.path.normpath(model))}/{method}")
            per_view[method] = pv
            results[method] = summarize(pv)
            print(f"Method: {method} ({len(names)} views)")
            for k in ("SSIM", "PSNR", "LPIPS"):
                print(f"  {k:<5}: {_fmt(results[method][k])}")
            print("", flush=True)
        write_json(os.path.join(model, f"results{suffix}.json"), results)
        write_json(os.path.join(model, f"per_view{suffix}.json"), per_view)
        write_file(os.path.join(model, f"results{suffix}.md"), results_markdown(model, results, per_view, args.split))
        all_results[model] = results
    return all_results


if __name__ == "__main__":
    run_cli(main)
