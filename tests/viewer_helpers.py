"""Runs of known Gaussians for the viewer, report and browser tests (no training)."""
import json
import math
import os

import torch

from scene.gaussian_model import GaussianModel
from utils.sh_utils import C0

MODEL_COLOURS = [(0.1, 0.2, 1.0), (1.0, 1.0, 0.1), (0.1, 0.9, 0.1), (1.0, 0.05, 0.05)]  # blue, yellow, green, red


def write_ball(path, n=8, colour=(1.0, 0.0, 0.0), centre=(0.0, 0.0, 0.0), radius=0.5, seed=0):
    """Save ``n`` opaque, round Gaussians of one colour (SH degree 0) filling a ball, as GaussianModel does."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    xyz = torch.tensor(centre) + radius * d / d.norm(dim=1, keepdim=True) * torch.rand(n, 1, generator=g) ** (1 / 3)
    rot = torch.zeros(n, 4)
    rot[:, 0] = 1
    m = GaussianModel(sh_degree=0)
    m._set(xyz, ((torch.tensor(colour) - 0.5) / C0).repeat(n, 1, 1), torch.zeros(n, 0, 3), torch.full((n, 1), 4.0),
           torch.full((n, 3), math.log(0.6 * radius / max(1, n) ** (1 / 3))), rot)
    m.save_ply(path)
    return path


def make_distill_run(root, counts=(8, 8, 8, 4), colours=MODEL_COLOURS, iterations=(10, 20), cfg=None):
    """A --num_models 4 layout: point_cloud_<i>/iteration_<it>/point_cloud.ply (ball i has counts[i] Gaussians of
    colours[i]), training_log.json (history: PSNR 20 + i + it / 10; gaussian_counts) and distill.json (PSNR 25 + i);
    cfg_args.json when ``cfg`` is given. Returns the run folder."""
    root = str(root)
    names = ("G_perb", "G_drop", "G_std", "student")
    for i, n in enumerate(counts):
        for it in iterations:
            write_ball(os.path.join(root, f"point_cloud_{i}", f"iteration_{it}", "point_cloud.ply"), n, colours[i],
                       seed=i)
        hist = [dict(iteration=it, psnr=20.0 + i + it / 10, ssim=0.8, l1=0.1, views=2, split="test",
                     gaussians=n + it) for it in iterations]
        with open(os.path.join(root, f"point_cloud_{i}", "training_log.json"), "w") as f:
            json.dump(dict(gaussians=n, ply_mb=0.01, history=hist, psnr=hist[-1]["psnr"], split="test",
                           gaussian_counts=[[1, 5], [10, n + 10], [20, n]]), f)
    models = {names[i]: dict(psnr=25.0 + i, ssim=0.9, lpips=None, split="test", gaussians=n, ply_mb=0.01)
              for i, n in enumerate(counts)}
    with open(os.path.join(root, "distill.json"), "w") as f:
        json.dump(dict(iterations=iterations[-1], models=models), f)
    if cfg is not None:
        with open(os.path.join(root, "cfg_args.json"), "w") as f:
            json.dump(cfg, f)
    return root
