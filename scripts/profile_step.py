#!/usr/bin/env python
"""Where the time of a training step goes (GPU): torch.profiler over steady-state steps, kernel
launches per step, and every host-device synchronisation inside a step.

    python scripts/profile_step.py -s data/bonsai --eval --views_per_step 1 --data_device cuda \
        --iterations 2000 --window 1901 30 [--trace trace.json.gz] [any train.py flag]
    python scripts/profile_step.py -s data/lego -w -m output/lego --num_models 4 --start 3 --steps_scale 0.25 \
        --views_per_step 1 --data_device cuda --window 9001 60

Trains one vanilla model with train.py's flags (the ``--iterations`` given are the run's length), or with
``--num_models 4 --start 3`` the student of the distillation in -m on its trained teachers (its own schedule:
--student_steps_scale and --student_tail included; nothing of -m is changed, the student goes to a folder of its
own, profile_step/ inside -m), and, at
the iterations of ``--window START COUNT``, in three equal parts: each synchronising call with its Python
source line (``torch.cuda.set_sync_debug_mode("warn")``), the wall time per step with nothing attached, then
CPU and CUDA activity (torch.profiler): the kernel and memcpy/memset launches per step and GPU busy time per
step against the profiled wall time (the profiler's own host cost inflates the latter on a host-bound step).
Pick a window without densification (between two multiples of --densification_interval) to see the
steady state. Prints a short table last.
"""
import argparse
import collections
import gzip
import os
import shutil
import sys
import time
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import train  # noqa: E402
from arguments import scale_steps  # noqa: E402
from distill.pipeline import STAGES, Teachers, check_teachers  # noqa: E402
from distill.student_schedule import stage_schedule  # noqa: E402
from gaussian_renderer import background  # noqa: E402
from scene import Scene  # noqa: E402
from scene.gaussian_model import GaussianModel  # noqa: E402
from training.loop import train_model  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.general_utils import seed_all  # noqa: E402
from utils.phase_timer import gpu_work_by_name, gpu_work_events, gpu_work_us  # noqa: E402

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Window:
    """Step hook: syncs are recorded over the first third of the window, the plain wall time over the second,
    the profiler over the last (the sync checks and the profiler slow the host, so each part runs alone)."""

    def __init__(self, start, count):
        third = count // 3
        self.sync_range = range(start, start + third)
        self.plain_range = range(start + third, start + 2 * third)
        self.prof_range = range(start + 2 * third, start + count)
        self.syncs = collections.Counter()
        self.prof = None
        self.t0 = self.wall = self.plain_wall = None
        self._old_show = None

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return self._old_show(message, category, filename, lineno, file, line)
        # the innermost frames of this project (not torch's) say which line waited
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(PROJECT)
                  and not f.filename.endswith("profile_step.py")]
        where = " <- ".join(f"{os.path.relpath(f.filename, PROJECT)}:{f.lineno}" for f in frames[-3:][::-1])
        self.syncs[where or f"{filename}:{lineno}"] += 1

    def __call__(self, it):
        if it == self.sync_range.start:
            self._old_show = warnings.showwarning
            warnings.showwarning = self._record
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        if it == self.plain_range.start:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = self._old_show
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()
        if it == self.prof_range.start:
            torch.cuda.synchronize()
            self.plain_wall = time.perf_counter() - self.t0
            self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.prof.__enter__()
            self.t0 = time.perf_counter()
        if it == self.prof_range.stop:
            torch.cuda.synchronize()
            self.wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)


def report(win, trace_path):
    steps = len(win.prof_range)
    events = win.prof.events()
    # GPU-side ranges of record_function annotations (e.g. Optimizer.step) are not work: leave them out
    gpu = gpu_work_events(events)
    kernels = [e for e in gpu if "memcpy" not in e.name.lower() and "memset" not in e.name.lower()]
    busy_us = gpu_work_us(events)
    launches = [e for e in events if e.device_type.name == "CPU" and e.name in (
        "cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")]
    print("\n== top CUDA kernels (summed over the window) ==")
    for name, n, us in gpu_work_by_name(events)[:25]:
        print(f"{us / steps / 1000:8.3f} ms/step {n / steps:6.1f}/step  {name[:110]}")
    print("\n== top operators by host (CPU) time ==")
    print(win.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))
    if trace_path:
        raw = trace_path[:-3] if trace_path.endswith(".gz") else trace_path
        win.prof.export_chrome_trace(raw)
        if raw != trace_path:
            with open(raw, "rb") as src, gzip.open(trace_path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.remove(raw)
    print("\n== host-device synchronisations per step (set_sync_debug_mode, %d steps) ==" % len(win.sync_range))
    if not win.syncs:
        print("none")
    for where, n in win.syncs.most_common():
        print(f"{n / len(win.sync_range):6.2f}/step  {where}")
    print("\n| steps | wall ms/step | wall ms/step profiled | GPU busy ms/step | kernels/step | memcpy+memset/step | "
          "launch calls/step | syncs/step |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {len(win.plain_range)} + {steps} | {1000 * win.plain_wall / len(win.plain_range):.2f} | "
          f"{1000 * win.wall / steps:.2f} | {busy_us / steps / 1000:.2f} | {len(kernels) / steps:.1f} | "
          f"{(len(gpu) - len(kernels)) / steps:.1f} | {len(launches) / steps:.1f} | "
          f"{sum(win.syncs.values()) / max(1, len(win.sync_range)):.2f} |")


def main(argv=None):
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--window", nargs=2, type=int, default=[1901, 30], metavar=("START", "COUNT"),
                     help="iterations to examine: syncs over the first third, the plain wall time over the second, "
                          "the profiler over the last")
    own.add_argument("--trace", default="", help="write the profiler's Chrome trace here (.json or .json.gz)")
    mine, rest = own.parse_known_args(argv)
    dataset, opt, pipe, dp, run = train.read_flags(rest)
    for group in (opt, dp):
        scale_steps(group, opt.steps_scale)
    student = dp.num_models == 4
    if student and (dp.start != 3 or not dataset.model_path):
        raise UserError("profile_step.py profiles the student alone: with --num_models 4 pass --start 3 and the "
                        "-m of a distillation whose teachers are trained")
    teacher_iterations = opt.iterations  # (the teachers' PLYs are saved at the run's last iteration)
    if student:  # the student's own flags: its schedule (stretched, with its tail), as the pipeline makes them
        opt, dp = stage_schedule(3, opt, dp, [], [], [])[:2]
    start, count = mine.window
    if not torch.cuda.is_available():
        raise UserError("profile_step.py measures the GPU step: no CUDA device here")
    if count < 6 or start < 2 or start + count > opt.iterations:
        raise UserError(f"--window {start} {count} must lie inside the {'student' if student else 'run'}'s "
                        f"{opt.iterations} iterations (start >= 2, count >= 6)")
    if student:
        checked = check_teachers(dataset.model_path, 3, "cuda", dataset.sh_degree, teacher_iterations)
    scene = Scene(dataset)
    if student:
        teachers = Teachers(teacher_iterations, checked)  # (read once, as train.py does)
        out = os.path.join(dataset.model_path, "profile_step")
        seed_all(run.seed, 3)  # the pipeline's student draws these numbers
        model, role = STAGES["student"](scene, dataset, opt, pipe, dp, "cuda",
                                        background(dataset.white_background, "cuda"), teachers)
    else:
        torch.manual_seed(run.seed)
        out = dataset.model_path or os.path.join("output", "profile_step")
        model = GaussianModel(dataset.sh_degree, "cuda")
        model.create_from_points(scene.points, scene.colors, scene.cameras_extent)
        role = None
    dataset.model_path = out
    os.makedirs(out, exist_ok=True)
    win = Window(start, count)
    summary = train_model(scene, model, opt, pipe, dataset, os.path.join(out, "point_cloud"), role=role, quiet=True,
                          step_hook=win)
    report(win, mine.trace)
    print(f"\n{summary['gaussians']} Gaussians at the end; whole run {summary['ms_per_step']} ms/step")


if __name__ == "__main__":
    run_cli(main)
