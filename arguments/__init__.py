"""Flag groups (the reference's names) and the saved configuration (cfg_args.json, read back safely).

Each group is a list of (name, default, help[, short flag]). ``extract`` returns a namespace holding
only that group's values. The configuration is written as JSON; render.py and metrics.py merge it
as: defaults < saved configuration < flags given explicitly on their command line.
"""
import argparse
import json
import os
from types import SimpleNamespace

from utils.errors import UserError
from utils.system_utils import write_json

CONFIG_NAME = "cfg_args.json"


class ParamGroup:
    title = ""
    flags = ()  # (name, default, help) or (name, default, help, short)

    @classmethod
    def add_args(cls, parser):
        group = parser.add_argument_group(cls.title)
        for entry in cls.flags:
            name, default, help_text = entry[:3]
            names = [f"--{name}"] + ([entry[3]] if len(entry) > 3 else [])
            if isinstance(default, bool):
                group.add_argument(*names, action="store_true", default=default, help=help_text.replace("%", "%%"))
            else:
                group.add_argument(*names, type=type(default), default=default, help=help_text.replace("%", "%%"))
        return parser

    @classmethod
    def defaults(cls, **overrides):
        """The group's default values (as parsed from an empty command line), with overrides."""
        ns = cls.extract(cls.add_args(argparse.ArgumentParser()).parse_args([]))
        for k, v in overrides.items():
            setattr(ns, k, v)
        return ns

    @classmethod
    def extract(cls, args):
        return SimpleNamespace(**{e[0]: getattr(args, e[0]) for e in cls.flags})


class ModelParams(ParamGroup):
    title = "Scene and model"
    flags = (
        ("source_path", "", "scene folder: COLMAP (images/ + sparse/0) or NeRF-synthetic (transforms_*.json)", "-s"),
        ("model_path", "", "output folder for the trained model(s) (default: output/<random>)", "-m"),
        ("images", "images", "name of the image folder inside the scene", "-i"),
        ("depths", "", "folder of 16-bit PNG inverse-depth maps for depth regularisation (needs "
                       "sparse/0/depth_params.json from utils/make_depth_scale.py)", "-d"),
        ("resolution", -1, "image downscale factor 1, 2, 4 or 8; -1 keeps the size but caps the width at 1600 px",
         "-r"),
        ("white_background", False, "composite RGBA (NeRF-synthetic) images on white instead of black", "-w"),
        ("sh_degree", 3, "maximum spherical-harmonics degree (0..3)"),
        ("data_device", "cpu", "where the ground-truth images live: cpu (default, saves GPU memory) or cuda"),
        ("eval", False, "hold out every 8th image (sorted names) as the test split; NeRF-synthetic uses its "
                        "test split"),
        ("num_random_points", 100_000, "number of random initial points for scenes without SfM points "
                                       "(NeRF-synthetic)"),
    )


class PipelineParams(ParamGroup):
    title = "Rendering"
    flags = (
        ("backend", "auto", "rasterizer: auto (CUDA extension for CUDA tensors, else PyTorch), cuda, torch, or "
                            "gsplat (gsplat's rasterization, to compare rasterizers; CUDA, vanilla 3DGS only)"),
        ("antialiasing", False, "scale opacity by sqrt(det S / det(S + 0.3 I)) (Mip-Splatting style 2D filter)"),
        ("debug", False, "rasterizer debug checks"),
        ("profile", False, "time the phases of every training step (render, loss, backward, optimizer, "
                           "densification, ...; CUDA events on the GPU) and report the mean ms per step of each"),
        ("tensorboard", False, "log the loss, Gaussian count and test PSNR to TensorBoard event files in the model "
                               "folder (needs the tensorboard package)"),
    )


class OptimizationParams(ParamGroup):
    title = "Optimisation"
    flags = (
        ("iterations", 30_000, "training iterations per model"),
        ("position_lr_init", 0.00016, "initial position learning rate (times the scene extent)"),
        ("position_lr_final", 0.0000016, "final position learning rate (times the scene extent)"),
        ("position_lr_max_steps", 30_000, "iterations over which the position LR decays exponentially; -1 = "
                                          "--iterations (as gsplat's trainer)"),
        ("feature_lr", 0.0025, "SH DC learning rate (higher bands use it / 20)"),
        ("opacity_lr", 0.025, "opacity learning rate"),
        ("scaling_lr", 0.005, "log-scale learning rate"),
        ("rotation_lr", 0.001, "quaternion learning rate"),
        ("optimizer_type", "default", "default (torch Adam, fused on CUDA) or sparse_adam (Adam over the "
                                      "Gaussians visible in the step's views only)"),
        ("lambda_dssim", 0.2, "weight of (1 - SSIM) in the image loss"),
        ("percent_dense", 0.01, "clone if max scale <= this x extent, else split"),
        ("densification_interval", 100, "densify every N iterations"),
        ("opacity_reset_interval", 3000, "reset opacities to <= 0.01 every N iterations; also when the "
                                         "screen-size prune starts"),
        ("no_opacity_reset", False, "never reset opacities (the large-Gaussian prune still starts after "
                                    "--opacity_reset_interval): what gsplat 1.5.3's default strategy does in "
                                    "effect (its reset test `step % reset_every == 0 & step > 0` is never true, "
                                    "gsplat PR #776)"),
        ("densify_from_iter", 500, "first densification iteration"),
        ("densify_until_iter", 15_000, "last densification iteration"),
        ("densify_grad_threshold", 0.0002, "mean view-space gradient norm above which a Gaussian is densified"),
        ("min_opacity", 0.005, "prune Gaussians below this opacity at densification"),
        ("max_screen_size", 0, "after the first opacity reset, also prune Gaussians whose screen radius exceeded "
                                 "this (px); 0 = off, which is what graphdeco's code does in effect (it zeroes the "
                                 "radii before this test, graphdeco issue #123) and gsplat's default; 20 = the "
                                 "rule as the 3DGS paper states it (about 2 dB lower on bonsai at 7000 steps)"),
        ("max_world_scale", 0.1, "after the first opacity reset, prune Gaussians larger than this x extent"),
        ("sh_increase_interval", 1000, "add one SH band every N iterations"),
        ("views_per_step", 6, "training views whose losses are summed before one optimizer step "
                              "(the reference uses 6; densification statistics come from the last)"),
        ("view_weight", -1.0, "loss weight of each view in a step; -1 = 0.6 when views_per_step > 1 "
                              "(the reference), else 1"),
        ("depth_l1_weight_init", 1.0, "initial weight of the inverse-depth L1 term (with -d)"),
        ("depth_l1_weight_final", 0.01, "final weight of the inverse-depth L1 term (log-linear)"),
        ("random_background", False, "random background colour each step"),
        ("steps_scale", 1.0, "multiply every iteration-based setting (iterations, schedules, test/save "
                             "iterations) by this, for short runs"),
    )


class DistillParams(ParamGroup):
    title = "Distillation (Distilled-3DGS)"
    flags = (
        ("num_models", 1, "1 trains one vanilla model into point_cloud/; 4 trains G_perb (0), G_drop (1), "
                          "G_std (2) and the student (3) into point_cloud_<i>/"),
        ("start", 0, "with --num_models 4: first model to train; earlier ones are read from point_cloud_<i>/"),
        ("perturb_start", 15_000, "noise events of G_perb happen at iterations strictly after this..."),
        ("perturb_end", 25_000, "...and strictly before this..."),
        ("perturb_interval", 1000, "...that are multiples of this"),
        ("perturb_scale", 0.1, "noise std as a fraction of max(1, mean |parameter|)"),
        ("drop_start", 15_000, "G_drop drops Gaussians at iterations strictly after this..."),
        ("drop_end", 25_000, "...and strictly before this..."),
        ("drop_interval", 1000, "...that are multiples of this (1: every iteration, DropGaussian style)"),
        ("drop_rate", 0.2, "drop probability p = drop_rate x (it - drop_ramp_start) / (drop_ramp_end - "
                           "drop_ramp_start), clamped to [0, 0.9]"),
        ("drop_ramp_start", 500, "iteration where the drop probability is 0"),
        ("drop_ramp_end", 15_000, "iteration where the drop probability reaches drop_rate"),
        ("imp_metric", "indoor", "student importance: indoor (sum of alpha T) or outdoor (per-view mean "
                                 "alpha T over touched pixels)"),
        ("firstPrune", False, "student: importance-sampled prune + re-initialisation at --first_prune_iter"),
        ("factor", 0.9, "first prune keeps N x factor x (fraction with importance > 0) Gaussians"),
        ("first_prune_iter", 15_000, "iteration of the first (sampling) prune"),
        ("second_prune_iter", 20_000, "iteration of the second prune (least important 1% of importance)"),
        ("prune_importance_fraction", 0.01, "share of the total importance removed by the second prune"),
        ("student_max_ratio", 0.0, "second prune: also remove the next least important Gaussians until the "
                                   "student has at most this fraction of G_std's count (0 = off, the reference)"),
        ("student_init", "sfm", "how the student starts: sfm (the SfM points, grown by densification and pruned "
                                "at --second_prune_iter, the reference) or std (G_std's trained Gaussians, the "
                                "--student_max_ratio most important by --imp_metric, all parameters copied, then "
                                "fine-tuned without growth; needs --student_max_ratio > 0)"),
        ("student_position_lr_init", 0.0, "--student_init std: the student's initial position learning rate (times "
                                          "the extent), decaying to --position_lr_final over its iterations; 0 = "
                                          "the rate G_std's schedule reached at its last iteration"),
        ("num_max", 4_500_000, "student: no densification growth above this many Gaussians"),
        ("num_max_ratio", 0.0, "student: no clone/split growth once it has at least this multiple of G_std's "
                               "Gaussian count (e.g. 0.6); replaces --num_max when > 0 (0 = off)"),
        ("blur_split_ratio", 5000.0, "student blur split: split Gaussians whose area_max exceeds H x W / this"),
        ("lambda_distill", 0.4, "weight of the distillation term against the mean teacher render"),
        ("novel_views", 0, "student: poses between each training view and a near neighbour whose mean teacher "
                           "render it also learns (this many per training view, rendered once; 0 = off)"),
        ("novel_view_prob", 0.5, "--novel_views: probability that a step adds the loss of one such view"),
        ("lambda_novel", 1.0, "--novel_views: weight of that loss (L1 + D-SSIM against the mean teacher render)"),
        ("lambda_structure", 1.0, "weight of the structure (spatial distribution) loss"),
        ("structure_start", 21_000, "first structure-loss iteration"),
        ("structure_end", 29_000, "last structure-loss iteration"),
        ("structure_interval", 1000, "structure loss every N iterations between start and end"),
        ("structure_bins", 256, "histogram cells per axis of the structure loss"),
    )


# iteration-valued settings of each group that --steps_scale rescales
SCALED_SETTINGS = ("iterations", "position_lr_max_steps", "densification_interval", "opacity_reset_interval",
                   "densify_from_iter", "densify_until_iter", "sh_increase_interval",
                   "perturb_start", "perturb_end", "perturb_interval", "drop_start", "drop_end", "drop_interval",
                   "drop_ramp_start", "drop_ramp_end", "first_prune_iter", "second_prune_iter",
                   "structure_start", "structure_end", "structure_interval")


def scale_steps(group, f, names=SCALED_SETTINGS):
    """Rescale the iteration-based settings of a flag group in place by ``f`` (each stays >= 1)."""
    if f <= 0:
        raise UserError(f"--steps_scale {f} must be positive")
    for n in names:
        if hasattr(group, n) and getattr(group, n) >= 0:  # negative values are sentinels (-1 = automatic)
            setattr(group, n, max(1, int(round(getattr(group, n) * f))))
    return group


def save_config(model_path, args):
    """Write the run's flags to <model>/cfg_args.json (JSON, never evaluated as code)."""
    cfg = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    write_json(os.path.join(model_path, CONFIG_NAME), cfg)


def load_config(model_path):
    path = os.path.join(model_path, CONFIG_NAME)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            cfg = json.load(f)
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-run train.py or delete it and pass the flags")
    if not isinstance(cfg, dict):
        raise UserError(f"{path} does not hold a flag dictionary")
    return cfg


def explicit_flags(parser, argv):
    """The destinations of the flags given in ``argv`` (not those left at their defaults)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kw = dict(dest=action.dest, default=argparse.SUPPRESS)
            if isinstance(action, argparse._StoreTrueAction):
                kw["action"] = "store_true"
            elif action.nargs is not None:
                kw["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kw)
    return set(vars(probe.parse_known_args(argv)[0]))


def combined_args(parser, argv=None):
    """Parse ``argv``; flags not given explicitly take the value saved in <model>/cfg_args.json."""
    args = parser.parse_args(argv)
    given = explicit_flags(parser, argv)
    if not args.model_path:
        raise UserError("-m/--model_path is required: the folder train.py wrote")
    if not os.path.isdir(args.model_path):
        raise UserError(f"model folder {args.model_path} (-m) does not exist")
    saved = load_config(args.model_path)
    for k, v in saved.items():
        if k not in given and hasattr(args, k):
            setattr(args, k, v)
    return args
