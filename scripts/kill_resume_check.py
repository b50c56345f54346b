#!/usr/bin/env python
"""kill -9 a four-model run at random moments, continue it with --resume each time, and check that it ends with
the uninterrupted run's PLYs (byte for byte).

    python scripts/kill_resume_check.py --kills 20 [-s SCENE] [-o OUT] [--seed S]

Without -s a small synthetic scene is made. Automatic checkpoints are written every iteration
(--checkpoint_every_minutes 1e-9), so each kill loses at most one iteration; a kill before the first checkpoint
(or before cfg_args.json exists) restarts the run from scratch. Prints one line per kill and a verdict; exits 1
when a PLY differs. CPU only (the GPU rasterizer's atomics are not bit-reproducible).
"""
import argparse
import glob
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.errors import UserError, run_cli  # noqa: E402

# a short four-model run: 25 iterations a model, densification, both student prunes
FLAGS = ["--num_models", "4", "--steps_scale", "0.001", "--iterations", "25000", "--views_per_step", "1",
         "--densification_interval", "5000", "--opacity_reset_interval", "1000000", "--firstPrune",
         "--test_iterations", "30000", "--eval", "--quiet"]


def plys(folder):
    """{relative path: sha256} of every saved PLY of a run."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "point_cloud*", "iteration_*", "point_cloud.ply"))):
        with open(path, "rb") as f:
            out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def command(scene, out, fresh):
    base = [sys.executable, os.path.join(ROOT, "train.py"), "-m", out]
    if fresh:
        return base + ["-s", scene, *FLAGS, "--overwrite", "--checkpoint_every_minutes", "1e-9"]
    return base + ["--resume"]


def can_resume(out):
    return os.path.isfile(os.path.join(out, "cfg_args.json")) and bool(glob.glob(os.path.join(out, "chkpnt*")))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-s", "--source_path", default="", help="scene folder (default: a synthetic scene is made)")
    p.add_argument("-o", "--out", default=os.path.join("output", "kill_resume"), help="work folder")
    p.add_argument("--kills", type=int, default=20, help="number of kill -9 to deliver")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    args = p.parse_args(argv)
    if args.kills < 1:
        raise UserError(f"--kills {args.kills} must be at least 1")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    os.makedirs(args.out, exist_ok=True)
    scene = args.source_path
    if not scene:
        from scripts.make_synthetic_scene import make_synthetic_scene  # noqa: PLC0415
        scene = make_synthetic_scene(os.path.join(args.out, "scene"), num_views=8, width=32, height=24,
                                     num_points=300, seed=1)
    ref, run = os.path.join(args.out, "uninterrupted"), os.path.join(args.out, "killed")
    t0 = time.time()
    subprocess.run(command(scene, ref, True), env=env, check=True, stdout=subprocess.DEVNULL)
    whole = time.time() - t0
    want = plys(ref)
    shutil.rmtree(run, ignore_errors=True)
    rng = random.Random(args.seed)
    k = 0
    while k < args.kills:
        if os.path.isdir(run) and plys(run).keys() >= want.keys():  # killed after its last PLY was written
            bad = [name for name in want if plys(run).get(name) != want[name]]
            print(f"the run had written every PLY by kill {k}: " + ("identical" if not bad else f"{len(bad)} differ"))
            if bad:
                return 1
            shutil.rmtree(run)
        fresh = not can_resume(run)
        proc = subprocess.Popen(command(scene, run, fresh), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.3, 0.7 * whole)  # each attempt pays the start-up again: stay inside the run
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            k += 1
            print(f"kill {k}: SIGKILL after {delay:.1f} s ({'fresh start' if fresh else '--resume'}; "
                  f"checkpoints now {sorted(os.path.basename(c) for c in glob.glob(os.path.join(run, 'chkpnt*')))})")
            continue
        if proc.returncode != 0:
            raise UserError(f"an attempt failed (exit {proc.returncode}): {proc.stderr.read().strip()[-300:]}")
        # the run finished between two kills: check it, then start another chain for the remaining kills
        bad = [name for name in want if plys(run).get(name) != want[name]]
        print(f"the run finished after {k} kills: " + ("identical" if not bad else f"{len(bad)} PLYs differ"))
        if bad:
            return 1
        shutil.rmtree(run)
    if not plys(run).keys() >= want.keys():  # finish what the last kill interrupted
        done = subprocess.run(command(scene, run, not can_resume(run)), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise UserError(f"the final --resume failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    got = plys(run)
    bad = [name for name in want if got.get(name) != want[name]]
    print(f"{len(want)} PLYs compared after {args.kills} kills: "
          + ("all identical to the uninterrupted run" if not bad else f"{len(bad)} differ: {bad}"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
