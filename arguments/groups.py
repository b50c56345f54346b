"""The flag groups shared by the CLIs: scene and model, rendering, optimisation, distillation.

Attribute names are the reference implementation's (``opt.iterations``, ``dp.firstPrune``, ...), which the saved
cfg_args.json also uses. Fields marked ``steps=True`` are iteration counts that --steps_scale rescales.
"""
import re
from dataclasses import dataclass
from typing import Literal, Optional

from arguments.fields import Check, at_least, auto_switch, between, flag, positive
from utils.errors import UserError

MAX_WIDTH = 1600  # px: without -r, images wider than this are downscaled to it (scene.dataset_readers)

_non_negative = at_least(0)
_DEVICE = Check(lambda v: re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None, "cpu, cuda or cuda:<index>")


def prune_stage_count(dp):
    """How many cuts the student's second prune makes (``dp``: DistillParams): --prune_stages, else 3 for a student
    that grows (--student_init sfm: from the scene's points) under a --student_max_ratio cap (paired over four
    seeds: +0.21 dB on lego, -0.01 on bonsai, docs/BENCHMARKS.md) and 1 otherwise (the reference's one cut; a
    std-started student is never cut)."""
    if dp.prune_stages is not None:
        return dp.prune_stages
    return 3 if dp.student_max_ratio is not None and dp.student_init == "sfm" else 1


def prune_cut_iterations(dp):
    """The iterations of the student's second-prune cuts: --second_prune_iter, then every --prune_stage_interval
    until prune_stage_count cuts."""
    return [dp.second_prune_iter + j * dp.prune_stage_interval for j in range(prune_stage_count(dp))]


class FlagGroup:
    """Shared helpers of the flag group dataclasses."""

    @classmethod
    def defaults(cls, **overrides):
        """The group's default values, with ``overrides`` (unknown names raise TypeError)."""
        return cls(**overrides)


@dataclass
class ModelParams(FlagGroup):
    title = "Scene and model"
    source_path: str = flag("", "scene folder: COLMAP (images/ + sparse/0) or NeRF-synthetic (transforms_*.json)",
                            short="-s")
    model_path: str = flag("", "output folder for the trained model(s); empty: output/<random name>", short="-m")
    images: str = flag("images", "name of the image folder inside the scene", short="-i")
    depths: str = flag("", "folder of 16-bit PNG inverse-depth maps for depth regularisation (needs "
                           "sparse/0/depth_params.json from utils/make_depth_scale.py); empty: none", short="-d")
    resolution: Optional[Literal[1, 2, 4, 8]] = flag(
        None, "image downscale factor", short="-r", legacy_none=-1,
        none=f"keep the size, capping the width at {MAX_WIDTH} px")
    white_background: bool = flag(False, "composite RGBA (NeRF-synthetic) images on white instead of black",
                                  short="-w")
    sh_degree: int = flag(3, "maximum spherical-harmonics degree", check=between(0, 3))
    data_device: str = flag("cpu", "where the ground-truth images are kept: cpu (saves GPU memory), cuda or "
                                   "cuda:<index>", check=_DEVICE)
    eval: bool = flag(False, "hold out every 8th image (sorted by name) as the test split; NeRF-synthetic scenes "
                             "use their test split")
    num_random_points: int = flag(100_000, "number of random initial points for scenes without SfM points "
                                           "(NeRF-synthetic scenes start from them)", check=at_least(1))


@dataclass
class PipelineParams(FlagGroup):
    title = "Rendering"
    backend: Literal["auto", "cuda", "torch", "gsplat"] = flag(
        "auto", "rasterizer: auto (the CUDA extension for CUDA tensors, else PyTorch), cuda, torch, or gsplat "
                "(gsplat's rasterizer, for comparisons; CUDA only, no distillation)")
    antialiasing: bool = flag(False, "scale opacity by sqrt(det S / det(S + 0.3 I)), a 2D anti-aliasing filter")
    debug: bool = flag(False, "rasterizer debug checks")
    profile: bool = flag(False, "time the phases of every training step (render, loss, backward, optimizer, "
                                "densification, ...) and report the mean ms per step of each")
    tensorboard: bool = flag(False, "log the loss, Gaussian count and test PSNR to TensorBoard event files in the "
                                    "model folder (needs the tensorboard package)")
    cuda_graphs: Literal["auto", "on", "off"] = auto_switch(
        "replay each training step's view (render, image loss, backward) as one CUDA graph while the model "
        "keeps its tensors (CUDA rasterizer; a step's further views replay a second graph that adds to the "
        "first's gradients; the student's extra terms eager after the replays; G_drop's dropout iterations and "
        "views with depth maps eager). on: every model (a flag that "
        "rules the graph out is refused); auto: every model where our CUDA rasterizer renders and no flag rules "
        "the graph out (a vanilla 7,000-step lego run's step took 0.65-0.71x its eager time on an H200, "
        "bonsai's 0.88x); off: none")
    capacity_mode: Literal["auto", "on", "off"] = auto_switch(
        "eager training renders in the CUDA rasterizer's capacity mode: the forward reads no pair count "
        "back to the host, so the host's launches overlap the GPU's work (pair buffers at 2x the most pairs "
        "seen; a view that needs more renders without its deepest pairs and the buffers grow; measured "
        "0.91-0.98x the step's time on an H200, no overflow in 7,000-step runs). auto: on with our CUDA "
        "rasterizer on a GPU, off otherwise")


@dataclass
class OptimizationParams(FlagGroup):
    title = "Optimisation"
    iterations: int = flag(30_000, "training iterations per model", steps=True, check=at_least(1))
    position_lr_init: float = flag(0.00016, "initial position learning rate (times the scene extent)",
                                   check=_non_negative)
    position_lr_final: float = flag(0.0000016, "final position learning rate (times the scene extent)",
                                    check=_non_negative)
    position_lr_max_steps: Optional[int] = flag(
        30_000, "iterations over which the position learning rate decays exponentially", steps=True,
        check=at_least(1), legacy_none=-1, none="decay over --iterations")
    feature_lr: float = flag(0.0025, "SH DC learning rate (the higher bands use it / 20)", check=_non_negative)
    opacity_lr: float = flag(0.025, "opacity learning rate", check=_non_negative)
    scaling_lr: float = flag(0.005, "log-scale learning rate", check=_non_negative)
    rotation_lr: float = flag(0.001, "quaternion learning rate", check=_non_negative)
    optimizer_type: Literal["default", "sparse_adam"] = flag(
        "default", "default (torch Adam, fused on CUDA) or sparse_adam (Adam over the Gaussians visible in the "
                   "step's views only)")
    lambda_dssim: float = flag(0.2, "weight of (1 - SSIM) in the image loss", check=_non_negative)
    percent_dense: float = flag(0.01, "densification clones a Gaussian whose largest scale is at most this "
                                      "fraction of the scene extent, else splits it", check=_non_negative)
    densification_interval: int = flag(100, "densify every N iterations", steps=True, check=at_least(1))
    opacity_reset_interval: int = flag(3000, "reset opacities to at most 0.01 every N iterations; the "
                                             "screen-size prune starts at the first of these", steps=True,
                                       check=at_least(1))
    no_opacity_reset: bool = flag(False, "never reset opacities (the large-Gaussian prune still starts after "
                                         "--opacity_reset_interval)")
    densify_from_iter: int = flag(500, "first densification iteration", steps=True, check=_non_negative)
    densify_until_iter: int = flag(15_000, "last densification iteration", steps=True, check=_non_negative)
    densify_grad_threshold: float = flag(0.0002, "densify Gaussians whose mean view-space gradient norm exceeds "
                                                 "this", check=_non_negative)
    min_opacity: float = flag(0.005, "densification prunes Gaussians below this opacity", check=between(0, 1))
    max_screen_size: Optional[int] = flag(
        None, "after the first opacity reset, also prune Gaussians whose screen radius exceeded this many "
              "pixels", check=positive(), legacy_none=0, none="off")
    max_world_scale: float = flag(0.1, "after the first opacity reset, prune Gaussians larger than this fraction "
                                       "of the scene extent", check=_non_negative)
    sh_increase_interval: int = flag(1000, "add one SH band every N iterations", steps=True, check=at_least(1))
    views_per_step: int = flag(6, "training views whose losses are summed before one optimizer step "
                                  "(densification statistics come from the last)", check=at_least(1))
    view_weight: Optional[float] = flag(
        None, "loss weight of each view in a step", check=_non_negative, legacy_none=-1,
        none="0.6 when --views_per_step > 1, else 1")
    depth_l1_weight_init: float = flag(1.0, "initial weight of the inverse-depth L1 term (with -d)",
                                       check=_non_negative)
    depth_l1_weight_final: float = flag(0.01, "final weight of the inverse-depth L1 term (log-linear decay)",
                                        check=_non_negative)
    random_background: bool = flag(False, "a random background colour each step")
    steps_scale: float = flag(1.0, "multiply every iteration count (the iterations, schedules, test/save/"
                                   "checkpoint iterations) by this, for short runs", check=positive())


@dataclass
class DistillParams(FlagGroup):
    title = "Distillation (Distilled-3DGS)"
    num_models: Literal[1, 4] = flag(1, "1 trains one vanilla model into point_cloud/; 4 trains G_perb (0), "
                                        "G_drop (1), G_std (2) and the student (3) into point_cloud_<i>/")
    start: int = flag(0, "with --num_models 4: the first model to train; the earlier ones are read from "
                         "point_cloud_<i>/", check=between(0, 3))
    perturb_start: int = flag(15_000, "G_perb's noise events happen at iterations strictly after this...",
                              steps=True, check=_non_negative)
    perturb_end: int = flag(25_000, "...and strictly before this...", steps=True, check=_non_negative)
    perturb_interval: int = flag(1000, "...that are multiples of this", steps=True, check=at_least(1))
    perturb_scale: float = flag(0.1, "noise std as a fraction of max(1, mean |parameter|)", check=_non_negative)
    drop_start: int = flag(15_000, "G_drop drops Gaussians at iterations strictly after this...", steps=True,
                           check=_non_negative)
    drop_end: int = flag(25_000, "...and strictly before this...", steps=True, check=_non_negative)
    drop_interval: int = flag(1000, "...that are multiples of this (1: every iteration)", steps=True,
                              check=at_least(1))
    drop_rate: float = flag(0.2, "drop probability p = drop_rate x (it - drop_ramp_start) / (drop_ramp_end - "
                                 "drop_ramp_start), clamped to [0, 0.9]", check=_non_negative)
    drop_ramp_start: int = flag(500, "iteration where the drop probability is 0", steps=True, check=_non_negative)
    drop_ramp_end: int = flag(15_000, "iteration where the drop probability reaches --drop_rate", steps=True,
                              check=_non_negative)
    imp_metric: Literal["indoor", "outdoor"] = flag(
        "indoor", "student importance: indoor (sum of alpha T) or outdoor (per-view mean alpha T over the pixels "
                  "a Gaussian touches)")
    firstPrune: bool = flag(False, "student: importance-sampled prune and re-initialisation at "
                                   "--first_prune_iter")
    factor: float = flag(0.9, "the first prune keeps N x factor x (fraction with importance > 0) Gaussians",
                         check=positive())
    first_prune_iter: int = flag(15_000, "iteration of the first (sampling) prune", steps=True,
                                 check=_non_negative)
    second_prune_iter: int = flag(16_000, "iteration of the second prune (the least important Gaussians; the "
                                          "reference's is 20000); not before --densify_until_iter for a student "
                                          "that grows", steps=True, check=_non_negative, absent=20_000)
    prune_stages: Optional[int] = flag(
        None, "student: the second prune in this many cuts, --prune_stage_interval iterations apart from "
              "--second_prune_iter, each to a count geometrically between the student's count at the first cut "
              "and --student_max_ratio's target (the last cut reaches it), with importance scored again before "
              "each (1: one cut, as the reference); more than 1 needs --student_max_ratio", check=at_least(1),
        none="3 with --student_max_ratio (and --student_init sfm), else 1", absent=1)
    prune_stage_interval: int = flag(1000, "--prune_stages: iterations between the cuts", steps=True,
                                     check=at_least(1))
    never_strongest_at: Literal["every", "last"] = flag(
        "every", "--prune_stages: which cuts give the Gaussians that are never the strongest contributor of a "
                 "training pixel importance 0 (so that they go): every cut (the reference's importance) or only the "
                 "last, the earlier ones ranking by contribution alone and keeping their geometric counts")
    cut_selection: Literal["top", "sample"] = flag(
        "top", "--student_max_ratio's cuts: which Gaussians each keeps: top (the most important, as the reference's "
               "prune) or sample (its count drawn without replacement with probability proportional to importance, "
               "as Mini-Splatting's simplification: where every Gaussian matters little, a sparse cover stays "
               "instead of none)")
    prune_importance_fraction: Optional[float] = flag(
        None, "share of the total importance the second prune removes (Gaussians of no importance always go)",
        check=between(0, 1), absent=0.01,
        none="0 with --student_max_ratio (the cap alone sets the count: the most important Gaussians up to it), "
             "0.01 without (the reference)")
    student_max_ratio: Optional[float] = flag(
        0.12, "the second prune also removes the next least important Gaussians until the student has at most "
              "this fraction of G_std's count", check=Check(lambda v: 0 <= v <= 1, "between 0 (off) and 1"),
        legacy_none=0, none="off, as the reference", absent=None)
    student_init: Literal["sfm", "std"] = flag(
        "sfm", "how the student starts: sfm (the SfM points, grown by densification, pruned at "
               "--second_prune_iter) or std (G_std's --student_max_ratio most important Gaussians by "
               "--imp_metric, all parameters copied, fine-tuned without growth; needs --student_max_ratio)")
    student_position_lr_init: Optional[float] = flag(
        None, "with --student_init std: the student's initial position learning rate (times the extent), "
              "decaying to --position_lr_final over its iterations",
        check=Check(lambda v: v >= 0, ">= 0 (0 = the rate G_std's schedule reached at its last iteration)"),
        legacy_none=0, none="the rate G_std's schedule reached at its last iteration")
    num_max: int = flag(4_500_000, "student: no densification growth above this many Gaussians",
                        check=_non_negative)
    num_max_ratio: Optional[float] = flag(
        0.4, "student: no clone/split growth once it has this multiple of G_std's Gaussian count; replaces "
             "--num_max", check=Check(lambda v: v >= 0, ">= 0 (0 = off: --num_max applies)"), legacy_none=0,
        none="off: --num_max applies, as the reference", absent=None)
    student_prune_unseen: Literal["auto", "on", "off"] = auto_switch(
        "student (sfm start): at the teachers' opacity-reset iterations of its growth phase, remove its "
        "Gaussians of importance 0 (never the strongest contributor of a training pixel: what the second "
        "prune removes anyway), so that points a random start hid inside or behind the object do not hold "
        "the growth cap; one importance pass over the training views each time. auto: on when the scene "
        "has no SfM points (a random start, as NeRF-synthetic scenes), off when it has them")
    student_opacity_reset: Literal["auto", "on", "off"] = auto_switch(
        "student (sfm start): reset its opacities as the teachers do (to at most 0.01 every "
        "--opacity_reset_interval of its densification window, and at --densify_from_iter with a white "
        "background), which the method leaves out. auto: on when the scene has no SfM points (a random "
        "start, as NeRF-synthetic scenes, which 3DGS sheds that way), off when it has them")
    blur_split_ratio: float = flag(5000.0, "student blur split: split Gaussians whose largest screen area "
                                           "exceeds H x W / this", check=positive())
    student_relocate: Optional[int] = flag(
        None, "student: every this many iterations after its last cut (from its start with --student_init std) until "
              "its schedule ends (not in the tail), its Gaussians below --relocate_opacity move onto live ones drawn "
              "by opacity, each sharing that one's opacity and scale (3DGS-MCMC's relocation): the count stays, the "
              "transparent ones render again", steps=True, check=at_least(1), legacy_none=0,
        none="off (the transparent Gaussians stay), as the reference")
    relocate_opacity: float = flag(
        0.005, "--student_relocate: the opacity below which a Gaussian counts as transparent and moves (3DGS-MCMC's "
               "threshold; the densification prune's is --min_opacity)", check=between(0, 1))
    relocate_opacity_reg: float = flag(
        0.0, "--student_relocate: adds this x the mean of the student's opacities to its loss from its last cut to "
             "its last relocation (3DGS-MCMC's opacity regularisation, 0.01 there), so that the Gaussians its views "
             "need least fade below --relocate_opacity and move (0: off)", check=_non_negative, absent=0.0)
    student_densify: Literal["adc", "mcmc"] = flag(
        "adc", "student (sfm start): how it reaches its --student_max_ratio count: adc (clone, split and the blur "
               "split up to --num_max_ratio, then the importance cuts from --second_prune_iter, as the reference) or "
               "mcmc (3DGS-MCMC's: no clone, split, prune or cut: its start is drawn down to the target count at "
               "random; every --densification_interval from --densify_from_iter to its schedule's end the Gaussians "
               "below --relocate_opacity move onto live ones drawn by opacity, and a twentieth more are added the "
               "same way while it is below the target; every step noise moves the nearly transparent ones, and "
               "--mcmc_opacity_reg and --mcmc_scale_reg join its loss)", absent="adc")
    mcmc_noise_lr: float = flag(
        5e5, "--student_densify mcmc: the positions' noise each step, N(0, 1) times this, the position learning "
             "rate and the Gaussian's covariance, gated by a sigmoid that is 1/2 at --relocate_opacity and falls "
             "to 0 above it (3DGS-MCMC's 5e5; 0: no noise)", check=_non_negative)
    mcmc_opacity_reg: float = flag(
        0.01, "--student_densify mcmc: adds this x the mean of the student's opacities to its loss (3DGS-MCMC's)",
        check=_non_negative)
    mcmc_scale_reg: float = flag(
        0.01, "--student_densify mcmc: adds this x the mean of the student's scales to its loss (3DGS-MCMC's)",
        check=_non_negative)
    depth_reinit: Literal["auto", "on", "off"] = flag(
        "auto", "student (sfm start): Mini-Splatting's depth re-initialisation at --student_depth_reinit's iterations: "
                "its Gaussians re-created, as many as it has, at points of the surfaces it renders, drawn over the "
                "training views by pixel opacity and coloured as --depth_reinit_colour says; then a fresh optimizer, "
                "as after a cut. auto: on when the scene has no SfM points (a random start, as NeRF-synthetic scenes, "
                "where it helps), off when it has them (where it costs); off: as the reference", absent="on")
    student_depth_reinit: list[int] = flag(
        [10_000], "--depth_reinit: its iterations, each before the student's first cut (Mini-Splatting's are 5000 "
                  "and 10000); with --depth_reinit auto, those at or after the first cut are left out", steps=True,
        check=at_least(1), absent=[])
    depth_reinit_colour: Literal["photo", "strongest"] = flag(
        "photo", "--depth_reinit: the re-created Gaussians' colour: photo (the pixel's in the photo, no higher "
                 "SH: Mini-Splatting's) or strongest (every SH band of the pixel's strongest contributor, the "
                 "Gaussian whose peak places the point: what the student had learnt there, view dependence included)")
    student_steps_scale: float = flag(
        1.0, "the student's schedule (its iterations, densification, prunes, structure loss, position LR decay, "
             "test/save/checkpoint iterations) is the teachers' stretched by this factor (1: the reference's, the "
             "teachers' own)", check=positive())
    student_tail: float = flag(
        0.4, "after its schedule the student trains this fraction of the schedule's iterations more: a fine-tuning "
             "tail without densification, prune or structure loss, at the position learning rate the schedule ended "
             "with, all at the pruned student's cost (0: no tail, the reference)", check=_non_negative, absent=0.0)
    teacher_combine: Literal["mean", "median", "agreement"] = flag(
        "mean", "how the student's target combines the teachers' renders of a view, per pixel and channel: mean (the "
                "reference), median (the middle of the three: what only one teacher shows does not reach it) or "
                "agreement (their mean where they agree, the view's photo where they disagree: blended per pixel by "
                "exp(-(spread / 0.05)^2), spread = the teachers' standard deviation; novel views take the mean)")
    lambda_distill: float = flag(0.4, "weight of the distillation term against the teachers' combined render",
                                 check=_non_negative)
    distill_start: Optional[int] = flag(
        None, "student: the first iteration whose training-view loss has the distillation term; before it the "
              "student learns from the photos alone (the novel views keep --novel_view_start)",
        steps=True, check=_non_negative, none="from the first iteration, as the reference")
    novel_views: int = flag(2, "student: poses between each training view and a near neighbour whose teacher "
                               "render it also learns (this many per training view, rendered once; 0 = off, "
                               "the reference)",
                            check=_non_negative, absent=0)
    novel_view_prob: float = flag(0.5, "--novel_views: probability that a step adds the loss of one such view",
                                  check=between(0, 1))
    novel_view_scale: float = flag(
        1.0, "--novel_views: their image size as a fraction of the training views' (the same field of view): the "
             "teachers render them at that size, and a step's loss there costs that fraction squared of a training "
             "view's pixels", check=Check(lambda v: 0 < v <= 1, "above 0 and at most 1"), absent=1.0)
    novel_view_start: Optional[int] = flag(
        None, "--novel_views: the first iteration whose step may add such a view's loss (0: from the start)",
        steps=True, check=_non_negative, absent=0,
        none="the second prune's (--second_prune_iter), so that the growth phase, where the student's steps cost the "
             "most, learns from the training views alone; 0 with --student_init std, which does not grow")
    lambda_novel: float = flag(1.0, "--novel_views: weight of that loss (L1 + D-SSIM against the teachers' "
                                    "combined render)", check=_non_negative)
    lambda_structure: float = flag(1.0, "weight of the structure (spatial distribution) loss",
                                   check=_non_negative)
    structure_start: int = flag(21_000, "first structure-loss iteration", steps=True, check=_non_negative)
    structure_end: int = flag(29_000, "last structure-loss iteration", steps=True, check=_non_negative)
    structure_interval: int = flag(1000, "structure loss every N iterations between start and end", steps=True,
                                   check=at_least(1))
    structure_bins: int = flag(256, "histogram cells per axis of the structure loss", check=at_least(1))

    def check_combinations(self):
        if self.start and self.num_models != 4:
            raise UserError(f"--start {self.start} needs --num_models 4 (it picks the first of the four models "
                            f"to train)")
        if self.num_models == 4:
            self._check_student_init()
            if prune_stage_count(self) > 1 and self.student_max_ratio is None:  # (only an explicit count > 1)
                raise UserError(f"--prune_stages {self.prune_stages} needs --student_max_ratio > 0: the count the "
                                f"last cut reaches (e.g. 0.12)")
            if self.cut_selection == "sample" and self.student_max_ratio is None:
                raise UserError("--cut_selection sample needs --student_max_ratio > 0: the count each cut draws "
                                "(e.g. 0.12)")
            if self.cut_selection == "sample" and self.prune_importance_fraction:
                raise UserError("--prune_importance_fraction applies to --cut_selection top (a sampled cut keeps its "
                                "count, drawn by importance): drop one of the two")
            if self.relocate_opacity_reg and self.student_relocate is None:
                raise UserError(f"--relocate_opacity_reg {self.relocate_opacity_reg} needs --student_relocate (e.g. "
                                f"100): the regularisation only makes Gaussians transparent for a relocation to move")
            if self.depth_reinit_colour != "photo" and (self.depth_reinit == "off" or not self.student_depth_reinit):
                raise UserError(f"--depth_reinit_colour {self.depth_reinit_colour} needs the depth re-initialisation "
                                f"(--depth_reinit auto or on, with --student_depth_reinit iterations): it colours its "
                                f"Gaussians")
            if self.depth_reinit == "on" and self.student_init != "sfm":
                raise UserError("--depth_reinit on applies to --student_init sfm (a student started from G_std keeps "
                                "G_std's Gaussians and never grows): drop one of the two")
            if self.student_densify == "mcmc":
                self._check_mcmc()
            if self.never_strongest_at == "last" and prune_stage_count(self) == 1:
                raise UserError("--never_strongest_at last needs more than one cut (--prune_stages > 1, with "
                                "--student_max_ratio): with one cut that cut is the last")

    def _check_mcmc(self):
        """The --student_densify mcmc combinations that cannot work."""
        if self.student_init != "sfm":
            raise UserError("--student_densify mcmc applies to --student_init sfm (a student started from G_std "
                            "keeps G_std's Gaussians): drop one of the two")
        if self.student_max_ratio is None:
            raise UserError("--student_densify mcmc needs --student_max_ratio > 0: the count it grows to and keeps "
                            "(e.g. 0.12)")
        if self.student_relocate is not None:
            raise UserError(f"--student_relocate {self.student_relocate} applies to --student_densify adc: mcmc "
                            f"relocates its transparent Gaussians all along (every --densification_interval)")
        if self.firstPrune:
            raise UserError("--firstPrune applies to --student_densify adc: an mcmc student never prunes")

    def _check_student_init(self):
        """The --student_init combinations that cannot work (its value itself is a Literal)."""
        if self.student_init == "sfm":
            cap, target = self.num_max_ratio, self.student_max_ratio
            if cap is not None and target is not None and target > cap and self.student_densify == "adc":
                raise UserError(f"--student_max_ratio {target:g} is above the growth cap --num_max_ratio {cap:g}: "
                                f"the student never reaches it, so the second prune would keep every Gaussian; "
                                f"raise --num_max_ratio (e.g. {min(1.0, 2 * target):g}) or lower "
                                f"--student_max_ratio")
            if self.student_position_lr_init is not None:
                raise UserError("--student_position_lr_init applies only to --student_init std (an sfm student "
                                "follows the teachers' position schedule)")
            return
        if self.student_opacity_reset == "on":
            raise UserError("--student_opacity_reset on applies only to --student_init sfm (a student started from "
                            "G_std does not densify)")
        if self.student_prune_unseen == "on":
            raise UserError("--student_prune_unseen on applies only to --student_init sfm (a student started from "
                            "G_std does not grow, so there is no growth cap to free)")
        if self.student_max_ratio is None:
            raise UserError("--student_init std needs --student_max_ratio > 0: the fraction of G_std's Gaussians the "
                            "student keeps (e.g. 0.15)")
        if self.firstPrune:
            raise UserError("--student_init std cannot be combined with --firstPrune: its re-initialisation would "
                            "discard the parameters copied from G_std")

