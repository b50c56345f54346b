#!/usr/bin/env python
"""Train 3D Gaussian Splatting models (one vanilla model, or the Distilled-3DGS teachers and student)."""
import argparse
import importlib.util
import os
import random
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from arguments import (DistillParams, ModelParams, OptimizationParams, PipelineParams, save_config,  # noqa: E402
                       scale_steps)
from scene import Scene  # noqa: E402
from scene.gaussian_model import GaussianModel  # noqa: E402
from distill.pipeline import run_distillation  # noqa: E402
from gaussian_renderer import pick_backend  # noqa: E402
from training.loop import train_model  # noqa: E402
from training.optim import OPTIMIZER_TYPES  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.report import report_at_end  # noqa: E402


MIN_STUDENT_VIEWS_BETWEEN_DENSIFICATIONS = 20


def build_parser():
    p = argparse.ArgumentParser(description=__doc__)
    ModelParams.add_args(p)
    OptimizationParams.add_args(p)
    PipelineParams.add_args(p)
    DistillParams.add_args(p)
    p.add_argument("--test_iterations", nargs="+", type=int, default=[7_000, 30_000],
                   help="iterations at which test PSNR is printed (rescaled by --steps_scale)")
    p.add_argument("--save_iterations", nargs="+", type=int, default=[7_000, 30_000],
                   help="iterations at which point_cloud.ply is saved; the last iteration is always saved")
    p.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[],
                   help="iterations at which a resumable chkpnt<it>.pth is written")
    p.add_argument("--start_checkpoint", type=str, default=None, help="resume from a chkpnt<it>.pth")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def scaled_iterations(values, f, last):
    return sorted({min(last, max(1, int(round(v * f)))) for v in values})


def main(argv=None):
    args = build_parser().parse_args(argv)
    dataset, opt, pipe = ModelParams.extract(args), OptimizationParams.extract(args), PipelineParams.extract(args)
    dp = DistillParams.extract(args)
    if not dataset.source_path:
        raise UserError("-s/--source_path is required: the scene folder to train on")
    if not 0 <= dataset.sh_degree <= 3:
        raise UserError(f"--sh_degree {dataset.sh_degree} must be between 0 and 3")
    if opt.views_per_step < 1:
        raise UserError(f"--views_per_step {opt.views_per_step} must be at least 1")
    if args.start_checkpoint and not os.path.isfile(args.start_checkpoint):
        raise UserError(f"--start_checkpoint {args.start_checkpoint} does not exist")
    if pipe.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard, or leave the flag "
                        "out (train.py writes training_log.json either way)")
    if dp.num_models not in (1, 4):
        raise UserError(f"--num_models {dp.num_models} is not supported: use 1 (one vanilla model) or 4 "
                        f"(three teachers and the student)")
    if not 0 <= dp.start <= 3 or (dp.start and dp.num_models != 4):
        raise UserError(f"--start {dp.start} must be 0..3 and needs --num_models 4")
    if dp.imp_metric not in ("indoor", "outdoor"):
        raise UserError(f"--imp_metric {dp.imp_metric} is unknown: use indoor or outdoor")
    if opt.optimizer_type not in OPTIMIZER_TYPES:
        raise UserError(f"--optimizer_type {opt.optimizer_type} is unknown: use " + " or ".join(OPTIMIZER_TYPES))
    if not 0 <= dp.student_max_ratio <= 1:
        raise UserError(f"--student_max_ratio {dp.student_max_ratio} must be between 0 (off) and 1")
    if dp.num_max_ratio < 0:
        raise UserError(f"--num_max_ratio {dp.num_max_ratio} must be >= 0 (0 = off: --num_max applies)")
    if dp.start and not args.model_path:
        raise UserError("--start needs -m/--model_path: the folder holding the earlier models")
    f = opt.steps_scale
    scale_steps(opt, f)
    scale_steps(dp, f)
    tests = scaled_iterations(args.test_iterations, f, opt.iterations)
    saves = scaled_iterations(args.save_iterations, f, opt.iterations) + [opt.iterations]
    ckpts = scaled_iterations(args.checkpoint_iterations, f, opt.iterations)
    views_between = opt.densification_interval * opt.views_per_step
    if dp.num_models == 4 and views_between < MIN_STUDENT_VIEWS_BETWEEN_DENSIFICATIONS:
        # measured on bonsai: 25 views between densifications (--steps_scale 0.25, 1 view) and 30 (0.05,
        # 6 views) train a good student; 5 (0.05, 1 view) made it split into millions of untrained fragments
        print(f"warning: the student densifies every {views_between} training views (--densification_interval "
              f"{opt.densification_interval} after --steps_scale x --views_per_step {opt.views_per_step}); with "
              f"fewer than {MIN_STUDENT_VIEWS_BETWEEN_DENSIFICATIONS} its blur split can grow untrained fragments "
              f"and ruin it: raise --views_per_step or --steps_scale", file=sys.stderr)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if pipe.backend == "gsplat" and dp.num_models == 4:
        raise UserError("--backend gsplat has no per-Gaussian stats, which the student's importance pruning and "
                        "blur split need: train the distillation with --backend auto, cuda or torch")
    pick_backend(device, pipe.backend)  # an unknown or unusable --backend stops here, before any output

    scene = Scene(dataset)  # reads and checks all input before anything is written
    if not dataset.model_path:
        dataset.model_path = args.model_path = os.path.join("output", uuid.uuid4().hex[:10])
    os.makedirs(dataset.model_path, exist_ok=True)
    save_config(dataset.model_path, args)
    print(f"Output folder: {dataset.model_path} ({len(scene.train_cameras)} train / {len(scene.test_cameras)} "
          f"test views, {len(scene.points)} initial points, device {device})")

    if dp.num_models == 4:
        summary = run_distillation(scene, dataset, opt, pipe, dp, device, tests, set(saves), set(ckpts),
                                   args.start_checkpoint, args.quiet)
        report_at_end(dataset.model_path, pipe.tensorboard)  # report.png; a plotting failure only warns
        return summary
    model = GaussianModel(dataset.sh_degree, device)
    model.create_from_points(scene.points, scene.colors, scene.cameras_extent)
    summary = train_model(scene, model, opt, pipe, dataset, os.path.join(dataset.model_path, "point_cloud"),
                          test_iterations=tests, save_iterations=set(saves), checkpoint_iterations=set(ckpts),
                          start_checkpoint=args.start_checkpoint, quiet=args.quiet)
    peak = summary["peak_memory_gib"]
    print(f"Training complete: {summary['gaussians']} Gaussians, {summary['ply_mb']} MB, "
          f"{summary['train_seconds']} s ({summary['ms_per_step']} ms/step"
          + (f", peak {peak:.2f} GiB)" if peak is not None else ")")
          + (f", {summary['split']} PSNR {summary['psnr']:.2f} SSIM {summary['ssim']:.4f}"
             if "psnr" in summary else ""))
    report_at_end(dataset.model_path, pipe.tensorboard)
    return summary


if __name__ == "__main__":
    run_cli(main)
