"""train.py's own flags (when to test, save and checkpoint; resuming; the seed) and the rules that combine groups."""
from dataclasses import dataclass
from typing import Optional

from arguments.fields import Check, final_iteration, flag, positive, scaled_count
from arguments.groups import FlagGroup, prune_cut_iterations
from utils.errors import UserError


@dataclass
class TrainRunParams(FlagGroup):
    title = "Run"
    test_iterations: list[int] = flag([7_000, 30_000], "iterations at which the test PSNR is printed",
                                      steps=True)
    save_iterations: list[int] = flag([7_000, 30_000], "iterations at which point_cloud.ply is saved; the last "
                                                       "iteration is always saved", steps=True)
    checkpoint_iterations: list[int] = flag([], "iterations at which a resumable chkpnt<it>.pth is written",
                                            steps=True)
    start_checkpoint: Optional[str] = flag(None, "resume from this chkpnt<it>.pth", none="none")
    resume: bool = flag(False, "continue the run in -m from its newest checkpoint (in a four-model run the "
                               "finished models are reused), with the flags saved in its cfg_args.json; flags "
                               "given as well must match them, except the ones that change no trained value "
                               "(-m, --quiet, --checkpoint_every_minutes, --checkpoint_iterations, "
                               "--test_iterations, --dist_timeout_minutes)")
    checkpoint_every_minutes: float = flag(
        10.0, "write an automatic chkpnt<model><it>.auto.pth this often (wall clock; only the newest of each model "
              "is kept), so a killed run loses at most this much; 0 = off",
        check=Check(lambda v: v >= 0, ">= 0 (0 = off)"))
    overwrite: bool = flag(False, "the -m folder holds an earlier run: delete its outputs (point_cloud*, "
                                  "cfg_args.json, distill.json, checkpoints, renders, metrics) before training; "
                                  "without it train.py refuses such a folder unless --start K or "
                                  "--start_checkpoint continues that run")
    dist_timeout_minutes: float = flag(30.0, "under torchrun: how long a rank waits at a barrier for the others "
                                             "before it stops with an error (a failed or hung rank)",
                                       check=positive())
    seed: int = flag(0, "random seed")
    quiet: bool = flag(False, "no progress bar")


def check_train_combinations(dataset, opt, pipe, dp, run):
    """The rules that tie flags of different groups together (train.py calls it after parsing)."""
    if not dataset.source_path:
        raise UserError("-s/--source_path is required: the scene folder to train on")
    if dp.start and not dataset.model_path:
        raise UserError("--start needs -m/--model_path: the folder holding the earlier models")
    if run.overwrite and dp.start:
        raise UserError(f"--overwrite deletes the models that --start {dp.start} reuses: pass one of the two")
    if pipe.backend == "gsplat" and dp.num_models == 4:
        raise UserError("--backend gsplat has no per-Gaussian stats, which the student's importance pruning and "
                        "blur split need: train the distillation with --backend auto, cuda or torch")
    last = final_iteration(3, opt.iterations, dp.student_steps_scale, dp.student_tail)
    # a student term's first iteration at or after the student's last (both in the student's iterations)
    for name, start, used, lost, off in (
            ("distill_start", dp.distill_start, dp.lambda_distill > 0,
             "it would never learn from the distillation term", "--lambda_distill 0 to train without the term"),
            ("novel_view_start", dp.novel_view_start, dp.novel_views > 0 and dp.novel_view_prob > 0,
             "the teachers would render its novel views for nothing", "--novel_views 0 to train without them")):
        if dp.num_models == 4 and used and start is not None and scaled_count(start, dp.student_steps_scale) >= last:
            raise UserError(f"--{name} {start} is not before the student's last iteration ({last} with --student_tail "
                            f"{dp.student_tail:g}): {lost}; pass an earlier iteration, or {off}")
    cuts = prune_cut_iterations(dp)
    if dp.num_models == 4 and cuts[0] < opt.iterations <= cuts[-1]:  # (a prune that never starts is no error)
        given = "" if dp.prune_stages is not None else " (the default with --student_max_ratio)"
        raise UserError(f"--prune_stages {len(cuts)}{given} x --prune_stage_interval {dp.prune_stage_interval} from "
                        f"--second_prune_iter {dp.second_prune_iter}: the last cut, at iteration {cuts[-1]}, is not "
                        f"before the last iteration {opt.iterations}; use fewer stages (--prune_stages 1: one cut) "
                        f"or a shorter interval")
