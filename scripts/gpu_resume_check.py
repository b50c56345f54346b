#!/usr/bin/env python
"""How far a resumed GPU run ends from the uninterrupted one, against the run-to-run spread of the GPU itself.

    python scripts/gpu_resume_check.py -s SCENE -o OUT [--iterations 3000] [--at 1500] [-- TRAIN.PY FLAGS]

Trains one vanilla model three times: A (uninterrupted, writes chkpnt<at>.pth), A2 (uninterrupted again) and B
(continued from A's checkpoint with --start_checkpoint). On the CPU B equals A bit for bit (tests/test_resume.py);
the CUDA backward sums gradients with atomics, so on the GPU even A2 differs from A. Prints the Gaussian counts,
the largest absolute difference of each parameter and the test PSNRs of B - A next to A2 - A.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scene.gaussian_model import PARAM_NAMES, GaussianModel  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def train(args, name, extra):
    out = os.path.join(args.out, name)
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "-s", args.source_path, "-m", out, "--quiet",
           "--iterations", str(args.iterations), "--test_iterations", str(args.iterations),
           "--save_iterations", str(args.iterations), "--seed", "0"] + extra + args.flags
    subprocess.run(cmd, check=True)
    ply = os.path.join(out, "point_cloud", f"iteration_{args.iterations}", "point_cloud.ply")
    with open(os.path.join(out, "point_cloud", "training_log.json")) as f:
        psnr = json.load(f).get("psnr")
    return GaussianModel(3).load_ply(ply), psnr


def difference(a, b):
    if a.num_points != b.num_points:
        return f"{b.num_points - a.num_points:+d} Gaussians"
    return ", ".join(f"{k} {float((a.params[k] - b.params[k]).abs().max()):.3g}" for k in PARAM_NAMES)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-s", "--source_path", required=True)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--at", type=int, default=1500, help="iteration of the checkpoint B continues from")
    args = p.parse_args(own)
    args.flags = flags
    if not 0 < args.at < args.iterations:
        raise UserError(f"--at {args.at} must lie between 0 and --iterations {args.iterations}")
    a, pa = train(args, "A", ["--checkpoint_iterations", str(args.at), "--overwrite"])
    a2, pa2 = train(args, "A2", ["--overwrite"])
    ckpt = os.path.join(args.out, "A", f"chkpnt{args.at}.pth")
    b, pb = train(args, "B", ["--start_checkpoint", ckpt])
    print(f"{'run':<24}{'Gaussians':>10}{'PSNR':>9}  largest |difference| from A")
    print(f"{'A (uninterrupted)':<24}{a.num_points:>10}{pa:>9.3f}")
    print(f"{'A2 (uninterrupted)':<24}{a2.num_points:>10}{pa2:>9.3f}  {difference(a, a2)}")
    print(f"{f'B (resumed at {args.at})':<24}{b.num_points:>10}{pb:>9.3f}  {difference(a, b)}")


if __name__ == "__main__":
    run_cli(main)
