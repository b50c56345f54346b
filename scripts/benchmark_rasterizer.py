"""Forward+backward time and peak memory of our CUDA rasterizer, side by side with gsplat.

Gaussians are sampled around a COLMAP scene's SfM points (jittered copies, 3DGS-style kNN scales, random
rotations/opacities, SH degree 3) and rendered from the scene's real cameras at 800 px width.

    python scripts/benchmark_rasterizer.py --scene data/bonsai            # 0.1M, 1M, 3M Gaussians
    python scripts/benchmark_rasterizer.py --sizes 100000 --runs 30 --no-gsplat

Ours runs twice: in the exact mode (the forward reads the pair count back to size its buffers: one host-device
sync a render) and in the capacity mode, as the trainer renders (buffers of 2x the most pairs one of the views
makes, sized once per model size as training/pair_budget.py does; nothing read back, so the host queues the
whole forward and backward ahead of the GPU); a pass that overflowed its capacity is reported. The capacity mode
runs a third time replayed from CUDA graphs (one per view), as the trainer's steps run: no host work per kernel.
gsplat cannot be captured (its forward reads its intersection count back to the host), so it runs eagerly only.

The loss is the colour's sum, as gsplat's step: the inverse depth ours renders as well gets no gradient, as in
training without depth maps (--depth-loss sums it in too, which times the backward's depth terms).

Times: CUDA events around forward + loss + backward, after warm-up, in --rounds rounds that alternate the two
renderers (--runs iterations each, cycling through the views), so that a drift of the GPU's speed during the
benchmark (clocks, heat, a neighbour) reaches both alike: each renderer's median over all its iterations, and
the ratio as the median of the rounds' ratios with their range. Peak memory: torch.cuda.max_memory_allocated
during one renderer's iterations, with the same parameter tensors alive for both renderers.

Kernel time: the GPU work of one iteration alone (kernels, copies and fills; torch.profiler over a pass through the
views), without the gaps where the GPU waits for the host: the wall time above is held by the host where the
rasterizer's kernels take less than its host work (small N), which the trainer's CUDA graphs do not pay.
"""
import argparse
import contextlib
import math
import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scene.colmap_loader import (  # noqa: E402
    detect_model_ext, qvec2rotmat, read_cameras, read_images, read_points3D_arrays,
)
from utils.phase_timer import gpu_waits, gpu_work_by_name, gpu_work_us  # noqa: E402


# ----------------------------------------------------------------------------------------------- scene
def load_scene(scene):
    sparse = os.path.join(scene, "sparse", "0")
    if not os.path.isdir(sparse):
        sys.exit(f"error: {sparse} not found; pass --scene <COLMAP scene folder with sparse/0>")
    ext = detect_model_ext(sparse)
    cameras = read_cameras(os.path.join(sparse, "cameras" + ext))
    images = read_images(os.path.join(sparse, "images" + ext))
    xyz = read_points3D_arrays(os.path.join(sparse, "points3D" + ext))[0]
    cams = {k: (c.model, c.width, c.height, np.asarray(c.params)) for k, c in cameras.items()}
    imgs = sorted(((np.asarray(im.qvec), np.asarray(im.tvec), im.camera_id, im.name) for im in images.values()),
                  key=lambda t: t[3])
    return cams, imgs, np.asarray(xyz, dtype=np.float64)


def make_views(cams, imgs, width, n_views, device):
    """Per view: dict with our settings pieces and gsplat's viewmat / K."""
    from utils.graphics_utils import projection_matrix  # noqa: PLC0415

    step = max(1, len(imgs) // n_views)
    views = []
    for qvec, tvec, cam_id, _ in imgs[::step][:n_views]:
        model, w0, h0, params = cams[cam_id]
        if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
            fx = fy = params[0]
        else:
            fx, fy = params[0], params[1]
        s = width / w0
        W, H = width, int(round(h0 * s))
        fx, fy = fx * s, fy * s
        fovx, fovy = 2 * math.atan(W / (2 * fx)), 2 * math.atan(H / (2 * fy))
        w2c = np.eye(4)
        w2c[:3, :3] = qvec2rotmat(qvec)
        w2c[:3, 3] = tvec
        w2c_t = torch.tensor(w2c, dtype=torch.float32, device=device)
        view = w2c_t.T.contiguous()
        proj = (view @ projection_matrix(0.01, 100.0, fovx, fovy).T.to(device)).contiguous()
        campos = torch.linalg.inv(w2c_t)[:3, 3].contiguous()
        K = torch.tensor([[fx, 0, W / 2], [0, fy, H / 2], [0, 0, 1]], dtype=torch.float32, device=device)
        views.append(dict(W=W, H=H, tanfovx=math.tan(fovx / 2), tanfovy=math.tan(fovy / 2), view=view, proj=proj,
                          campos=campos, viewmat=w2c_t, K=K))
    return views


def sample_gaussians(xyz, n, seed, device):
    """n Gaussians: jittered copies of SfM points with 3DGS-style initial scales (kNN of the samples)."""
    from simple_knn._C import distCUDA2  # noqa: PLC0415

    g = torch.Generator(device=device).manual_seed(seed)
    pts = torch.tensor(xyz, dtype=torch.float32, device=device)
    d_sfm = distCUDA2(pts).clamp_min(1e-12).sqrt()  # spacing of the SfM cloud around each point
    idx = torch.randint(0, pts.shape[0], (n,), generator=g, device=device)
    means = pts[idx] + torch.randn(n, 3, generator=g, device=device) * d_sfm[idx, None] * 0.5
    dist = distCUDA2(means).clamp_min(1e-7).sqrt()
    scales = dist[:, None] * torch.exp(0.3 * torch.randn(n, 3, generator=g, device=device))
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, device=device), dim=-1)
    opac = torch.rand(n, generator=g, device=device) * 0.9 + 0.05
    shs = torch.randn(n, 16, 3, generator=g, device=device) * 0.1
    shs[:, 0] = torch.rand(n, 3, generator=g, device=device) * 2 - 1
    return dict(means=means, scales=scales, quats=quats, opacities=opac, shs=shs)


# ---------------------------------------------------------------------------------------------- renderers
def ours_render(params, v, bg, capacity=None):
    """Our forward: (color, invdepth). capacity: a Capacity for the capacity mode, or None for the exact mode."""
    from diff_gaussian_rasterization import GaussianRasterizationSettings, GaussianRasterizer  # noqa: PLC0415

    mode = {} if capacity is None else dict(pair_capacity=capacity.pairs, pair_meta=capacity.meta)
    s = GaussianRasterizationSettings(image_height=v["H"], image_width=v["W"], tanfovx=v["tanfovx"],
                                      tanfovy=v["tanfovy"], bg=bg, scale_modifier=1.0, viewmatrix=v["view"],
                                      projmatrix=v["proj"], sh_degree=3, campos=v["campos"], prefiltered=False,
                                      debug=False, antialiasing=False, **mode)
    means2D = torch.zeros_like(params["means"], requires_grad=True)
    color, radii, invdepth = GaussianRasterizer(s)(  # means2D [P, 3] as graphdeco-style training passes it
        means3D=params["means"], means2D=means2D, opacities=params["opacities"][:, None], shs=params["shs"],
        scales=params["scales"], rotations=params["quats"])
    if capacity is not None:
        capacity.overflows += capacity.meta[2:3]  # (on the device, as the trainer counts them: no sync)
    return color, invdepth


def ours_step(params, v, bg, capacity=None, depth_loss=False):
    """Forward, a loss and backward. The loss is the colour's sum, as gsplat's step (its RGB render), so that the
    inverse depth, which ours renders as well, gets no gradient, as in training without depth maps; depth_loss adds
    its sum (--depth-loss: the backward's depth terms timed too)."""
    color, invdepth = ours_render(params, v, bg, capacity)
    loss = color.sum() + invdepth.sum() if depth_loss else color.sum()
    loss.backward()


class Capacity:
    """The capacity mode's pair buffers for one model size, as the trainer sizes them (training/pair_budget.py):
    HEADROOM x the most pairs a view makes, each view measured once by a render that fits (a sync, outside the
    timing); ``overflows`` counts on the device the renders whose pairs did not fit afterwards."""

    def __init__(self, params, views, bg):
        from training.pair_budget import (  # noqa: PLC0415
            HEADROOM, INITIAL_PAIRS_PER_GAUSSIAN, MIN_CAPACITY, pairs_that_fit,
        )

        dev = params["means"].device
        self.meta = torch.zeros(3, dtype=torch.int32, device=dev)
        self.overflows = torch.zeros(1, dtype=torch.int32, device=dev)
        cap, most = max(MIN_CAPACITY, INITIAL_PAIRS_PER_GAUSSIAN * params["means"].shape[0]), 0

        def render_at(capacity):
            self.pairs = capacity
            ours_render(params, v, bg, self)

        for v in views:
            pairs, cap = pairs_that_fit(render_at, cap, self.meta)
            most = max(most, pairs)
        self.pairs = max(MIN_CAPACITY, int(HEADROOM * most))
        self.overflows.zero_()


class Graphed:
    """Our capacity-mode forward + backward captured in one CUDA graph per view and replayed, as the trainer's steps
    run (training/graph_step.py): an iteration is one replay, no host work per kernel. The graphs share one memory
    pool; each keeps its own gradient buffers (set to None after the capture: a replay rewrites them, nothing reads
    them). gsplat has no such column: its forward reads the number of tile intersections back to the host to size
    its buffers (gsplat 1.5.3, cuda/csrc/Intersect.cpp, ``cum_tiles_per_gauss[-1].item()``), which a capture refuses."""

    def __init__(self, params, views, bg, capacity, depth_loss=False):
        self.graphs = {}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (CUB's and autograd's first-use work)
            for v in views:
                ours_step(params, v, bg, capacity, depth_loss)
                _clear_grads(params)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        pool = torch.cuda.graph_pool_handle()
        for v in views:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                ours_step(params, v, bg, capacity, depth_loss)
            _clear_grads(params)
            self.graphs[id(v)] = graph

    def __call__(self, params, v, bg):
        self.graphs[id(v)].replay()


def ours_settings_line(width, height):
    """Our rasterizer's kernel choices at this image size (depth chunks of the render forward and backward, and what
    the environment flags choose, as the extension reads them), so that a table says what it timed."""
    import diff_gaussian_rasterization as dgr  # noqa: PLC0415
    tiles = math.ceil(width / 16) * math.ceil(height / 16)
    fwd, bwd = dgr.extension().render_chunks(tiles)
    flags = ", ".join(f"{k}={v}" for k, v in sorted(dgr.extension().render_flags().items()))
    return f"ours: {tiles} tiles, render forward in {fwd} depth chunk(s), backward in {bwd}; {flags}"


def gsplat_step(params, v, bg, render_mode="RGB"):
    import gsplat  # noqa: PLC0415

    colors, alphas, meta = gsplat.rasterization(
        params["means"], params["quats"], params["scales"], params["opacities"], params["shs"],
        v["viewmat"][None], v["K"][None], v["W"], v["H"], sh_degree=3, packed=False, eps2d=0.3,
        backgrounds=bg[None], render_mode=render_mode)
    meta["means2d"].retain_grad()  # what gsplat's densification strategies do in training (cf. our means2D)
    loss = colors.sum()
    loss.backward()


def _clear_grads(params):
    for p in params.values():
        p.grad = None


def _profiled(step, params, views, bg, host=False):
    """torch.profiler (CUDA activity; with `host` the CPU's too, each iteration a record_function("iteration") range,
    for gpu_waits) over one forward + backward a view, over `views`; a sync ends each, so its kernels end inside."""
    from torch.profiler import ProfilerActivity, profile as tprofile, record_function  # noqa: PLC0415

    torch.cuda.synchronize()
    activities = [ProfilerActivity.CUDA, ProfilerActivity.CPU] if host else [ProfilerActivity.CUDA]
    with tprofile(activities=activities) as prof:
        for v in views:
            with record_function("iteration") if host else contextlib.nullcontext():
                step(params, v, bg)
                torch.cuda.synchronize()
            _clear_grads(params)
    return prof


def profile(step, params, views, bg, label, top=20):
    """Print the GPU kernels of one forward+backward (after an untimed one), by total time."""
    step(params, views[0], bg)
    _clear_grads(params)
    print(f"  kernels of {label} (ms, calls):")
    for name, n, us in gpu_work_by_name(_profiled(step, params, views[:1], bg).events())[:top]:
        print(f"    {us / 1e3:8.3f} {n:3d}  {name[:110]}")


def host_waits(step, params, views, bg, label, top=12):
    """Print where the GPU waits for the host in one forward + backward a view (after an untimed one): the GPU's idle
    time before each iteration's first kernel, and the gaps inside it that a later launch ended (gpu_waits), summed
    by the CPU ops that made that launch. torch.profiler's own host cost lengthens every gap a little, alike for
    both renderers: the list says where, not how much exactly."""
    import json  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    step(params, views[0], bg)
    _clear_grads(params)
    prof = _profiled(step, params, views, bg, host=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            n, prelude, rows = gpu_waits(json.load(f))
    n = max(n, 1)
    total = sum(r[0] for r in rows)
    print(f"  where the GPU waits for the host, {label} (us an iteration, over {n}): before its first kernel "
          f"{prelude / n:.0f}; inside {total / n:.0f}, of which:")
    for us, count, ops, name, calls in rows[:top]:
        print(f"    {us / n:7.1f} {count / n:5.1f}x  {ops[:90]}  ->  {name[:60]}" + (f"  [{calls}]" if calls else ""))


def device_ms(events, iterations):
    """Milliseconds of GPU work an iteration: the work events' own time (profiler microseconds) over `iterations`."""
    return gpu_work_us(events) / 1e3 / iterations


def kernel_ms(step, params, views, bg):
    """GPU work of one forward + backward (ms), from a profiled pass over the views (after the timed rounds)."""
    return device_ms(_profiled(step, params, views, bg).events(), len(views))


def warm_up(step, params, views, bg, iterations):
    """Untimed iterations, then the peak memory (MiB) of one pass over the views."""
    for i in range(iterations):
        step(params, views[i % len(views)], bg)
        _clear_grads(params)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for v in views:
        step(params, v, bg)
        _clear_grads(params)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2 ** 20


def timed(step, params, views, bg, runs):
    """Milliseconds of each of `runs` iterations (CUDA events), cycling through the views."""
    times = []
    for i in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step(params, views[i % len(views)], bg)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
        _clear_grads(params)
    return times


def table(rows, rounds, runs, depth_loss=False):
    """The closing table's lines. rows: (N, median ms by renderer ("ours", "ours_cap", "ours_graph", "gsplat" where
    timed), the ratio to gsplat's of "ours", "ours_cap" and "ours_graph" as (median, low, high) over the rounds,
    peak MiB by renderer, the capacity's pairs, the renders that overflowed it, kernel ms by renderer (kernel_ms)).
    "ours_graph" (Graphed) may be missing from ms and ratio: its cells then read nan."""
    nan = float("nan")
    lines = ["", f"{'N':>9} | {'ours ms':>8} | {'capacity':>8} | {'graphed':>8} | {'gsplat ms':>9} | "
                 f"{'ratio':>17} | {'capacity ratio':>17} | {'graphed ratio':>17} | "
                 f"{'kernel ms capacity / gsplat':>27} | {'peak MiB ours / capacity / gsplat':>33}", "-" * 187]
    for n, ms, ratio, peaks, _, overflows, gpu in rows:
        r = {k: f"{m:.2f} ({lo:.2f}-{hi:.2f})" for k, (m, lo, hi) in ratio.items()}
        r.setdefault("ours_graph", "nan (nan-nan)")
        mib = " / ".join(f"{peaks.get(k, nan):.0f}" for k in ("ours", "ours_cap", "gsplat"))
        kern = (f"{gpu['ours_cap']:.2f} / {gpu.get('gsplat', nan):.2f} "
                f"({gpu['ours_cap'] / gpu.get('gsplat', nan):.2f})")
        lines.append(f"{n:>9} | {ms['ours']:>8.2f} | {ms['ours_cap']:>8.2f} | {ms.get('ours_graph', nan):>8.2f} | "
                     f"{ms.get('gsplat', nan):>9.2f} | {r['ours']:>17} | {r['ours_cap']:>17} | "
                     f"{r['ours_graph']:>17} | {kern:>27} | {mib:>33}"
                     + (" OVERFLOWED" if overflows else ""))
    return lines + [
        f"(ratio = ours / gsplat, the median of {rounds} rounds' ratios (their range); capacity: our capacity mode, as",
        f" the trainer renders (no host-device sync); forward + backward, medians of {rounds} x {runs} iterations",
        " each; graphed: the capacity mode replayed from CUDA graphs, as the trainer's steps run (gsplat's forward",
        " syncs with the host, it cannot be captured); kernel ms: the GPU work of one iteration without the host's",
        " gaps (their ratio in brackets); ours also renders inverse depth "
        + ("and sums it into the loss" if depth_loss else "(the loss is the colour's sum, as gsplat's)"),
        " and the means2D gradient; gsplat retains its means2d gradient, as its densification strategies do;",
        " OVERFLOWED: a capacity-mode render's pairs did not fit, its time is not valid)"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="data/bonsai", help="COLMAP scene folder (with sparse/0)")
    ap.add_argument("--sizes", default="100000,1000000,3000000", help="comma-separated Gaussian counts")
    ap.add_argument("--width", type=int, default=800, help="render width in pixels (height keeps the aspect)")
    ap.add_argument("--views", type=int, default=10, help="number of scene cameras to cycle through")
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    ap.add_argument("--runs", type=int, default=20, help="timed iterations of each renderer per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds alternating the renderers (>= 1)")
    ap.add_argument("--no-gsplat", action="store_true", help="skip the gsplat comparison")
    ap.add_argument("--gsplat-render-mode", default="RGB", help="gsplat render_mode (RGB, or RGB+D for depth)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels at the largest size")
    ap.add_argument("--depth-loss", action="store_true",
                    help="our loss also sums the inverse depth (its gradient terms in the backward timed too)")
    ap.add_argument("--gaps", action="store_true",
                    help="print where the GPU waits for the host at the largest size (each eager renderer)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.runs < 1 or args.warmup < 0:
        ap.error("--rounds and --runs must be at least 1, --warmup at least 0")
    if not torch.cuda.is_available():
        sys.exit("error: the benchmark needs a CUDA device")
    dev = torch.device("cuda")
    cams, imgs, xyz = load_scene(args.scene)
    views = make_views(cams, imgs, args.width, args.views, dev)
    bg = torch.zeros(3, device=dev)
    have_gsplat = False
    if not args.no_gsplat:
        try:
            from gaussian_renderer.gsplat_backend import load_gsplat  # noqa: PLC0415
            load_gsplat()  # GSPLAT_PREBUILT_SO=path/to/gsplat_cuda.so skips gsplat's first-use compile
            have_gsplat = True
        except Exception as exc:  # noqa: BLE001 (any import failure just drops the column)
            print(f"gsplat not available ({exc}); timing ours only")
    print(f"scene {args.scene}: {len(imgs)} images, {len(xyz)} SfM points; {len(views)} views at "
          f"{views[0]['W']}x{views[0]['H']}; {torch.cuda.get_device_name()}")
    print(ours_settings_line(views[0]["W"], views[0]["H"]))
    rows = []
    sizes = [int(x) for x in args.sizes.split(",")]
    for n in sizes:
        params = sample_gaussians(xyz, n, args.seed, dev)
        params = {k: v.contiguous().requires_grad_(True) for k, v in params.items()}
        gs = lambda p, v, b: gsplat_step(p, v, b, args.gsplat_render_mode)  # noqa: E731
        cap = Capacity(params, views, bg)
        steps = {"ours": lambda p, v, b: ours_step(p, v, b, None, args.depth_loss),
                 "ours_cap": lambda p, v, b, c=cap: ours_step(p, v, b, c, args.depth_loss)}
        try:
            steps["ours_graph"] = Graphed(params, views, bg, cap, args.depth_loss)
        except RuntimeError as exc:  # (the table then reads nan there; the eager columns stand)
            print(f"  N={n}: the capacity mode could not be captured in a CUDA graph ({exc}); no graphed column")
        if have_gsplat:
            steps["gsplat"] = gs
        peaks = {k: warm_up(f, params, views, bg, args.warmup) for k, f in steps.items()}
        times, ratios = {k: [] for k in steps}, {k: [] for k in ("ours", "ours_cap", "ours_graph") if k in steps}
        for _ in range(args.rounds):
            got = {k: timed(f, params, views, bg, args.runs) for k, f in steps.items()}
            for k, t in got.items():
                times[k] += t
            if have_gsplat:
                for k in ratios:
                    ratios[k].append(statistics.median(got[k]) / statistics.median(got["gsplat"]))
        ms = {k: statistics.median(t) for k, t in times.items()}
        ratio = {k: (statistics.median(r), min(r), max(r)) if r else (float("nan"),) * 3 for k, r in ratios.items()}
        gpu = {k: kernel_ms(f, params, views, bg) for k, f in steps.items() if k in ("ours_cap", "gsplat")}
        overflows = int(cap.overflows.item())
        rows.append((n, ms, ratio, peaks, cap.pairs, overflows, gpu))
        if args.profile and n == sizes[-1]:
            profile(steps["ours"], params, views, bg, "ours")
            if have_gsplat:
                profile(gs, params, views, bg, "gsplat")
        if args.gaps and n == sizes[-1]:
            for k, label in (("ours", "ours"), ("ours_cap", "ours, capacity mode"), ("gsplat", "gsplat")):
                if k in steps:
                    host_waits(steps[k], params, views, bg, label)
        print(f"  N={n}: ours {ms['ours']:.2f} ms {peaks['ours']:.0f} MiB; capacity mode {ms['ours_cap']:.2f} ms "
              f"{peaks['ours_cap']:.0f} MiB ({cap.pairs} pairs, {overflows} overflowed), graphed "
              f"{ms.get('ours_graph', float('nan')):.2f} ms; gsplat "
              f"{ms.get('gsplat', float('nan')):.2f} ms {peaks.get('gsplat', float('nan')):.0f} MiB; kernels "
              + " / ".join(f"{k} {t:.3f} ms" for k, t in gpu.items()), flush=True)
        del params, cap, steps
        torch.cuda.empty_cache()
    print("\n".join(table(rows, args.rounds, args.runs, args.depth_loss)))


if __name__ == "__main__":
    main()
