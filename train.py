#!/usr/bin/env python
"""Train 3D Gaussian Splatting models (one vanilla model, or the Distilled-3DGS teachers and student)."""
import time

_IMPORTED = time.time()  # before the heavy imports: the start-up time a command-line run reports counts from here
import importlib.util  # noqa: E402
import os
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import uuid

import numpy as np
import torch

from arguments import (DistillParams, FlagParser, ModelParams, OptimizationParams, PipelineParams,
                       TrainRunParams, check_train_combinations, config_dict, final_iteration, load_config,
                       flag_specs, save_config, saved_flags, scale_steps)
from scene import Scene
from scene.gaussian_model import GaussianModel
from distill import distributed
from distill.pipeline import SUMMARY_NAME, check_teachers, earlier_summary, run_distillation, unscaled_final_iteration
from distill.roles import MODEL_NAMES
from distill.student_schedule import check_student_events, check_student_target
from gaussian_renderer import pick_backend, renders_with_cuda_extension
from training import data_parallel
from training.graph_step import graph_flag_conflict
from training.loop import (CHECKPOINT_NAME, STOP, Interrupted, checkpoint_sh_degree, read_checkpoint,
                           train_model)
from utils.errors import UserError, run_cli
from utils.report import report_at_end
from utils.system_utils import sweep_stale_temp_files


MIN_STUDENT_VIEWS_BETWEEN_DENSIFICATIONS = 20
# flags that --resume lets differ from the saved run's (they change no trained value)
RESUME_FREE_FLAGS = {"model_path", "resume", "quiet", "checkpoint_every_minutes", "checkpoint_iterations",
                     "test_iterations", "dist_timeout_minutes"}
# saved flags that describe how the run was started, not what it trains: --resume sets them itself
_RESUME_SET = {"start", "start_checkpoint", "overwrite", "resume"}
TRAIN_GROUPS = (ModelParams, OptimizationParams, PipelineParams, DistillParams, TrainRunParams)


def build_parser():
    return FlagParser(TRAIN_GROUPS, description=__doc__)


def read_flags(argv=None):
    """The validated flag groups (dataset, opt, pipe, dp, run) of a train.py command line; with --resume the
    flags come from the run it continues."""
    return _read_flags(argv)[:5]


def _read_flags(argv=None):
    """read_flags' groups, then the names of the flags the command line gave."""
    parser = build_parser()
    given = parser.given(argv)
    saved = resume_flags(given) if given.get("resume") else {}
    dataset, opt, pipe, dp, run = parser.build(given, saved)
    if run.resume:
        resume_point(dataset.model_path, opt, dp, run)
    check_train_combinations(dataset, opt, pipe, dp, run)
    if dp.num_models != 4:
        warn_distillation_flags_unused(given)
    return dataset, opt, pipe, dp, run, set(given)


def warn_distillation_flags_unused(given):
    """One warning line naming the distillation flags in ``given`` (the command line's): a one-model run ignores
    them, which a user who forgot --num_models 4 should hear before the run, not after it. Under torchrun only rank 0
    says it (every rank reads the same flags)."""
    unused = [f"--{s.name}" for s in flag_specs(DistillParams) if s.name in given and s.name != "num_models"]
    if unused and os.environ.get("RANK", "0") == "0":
        verb, them = ("apply", "them") if len(unused) > 1 else ("applies", "it")
        print(f"warning: {', '.join(unused)} only {verb} to the four-model distillation (--num_models 4): this run "
              f"trains one model without {them}", file=sys.stderr)


# what train.py, render.py and metrics.py write into a model folder (--overwrite deletes these only)
_RUN_FILES = re.compile(r"^(cfg_args\.json|distill\.json|report\.png|chkpnt.*\.pth|results.*\.(json|md)|"
                        r"per_view.*\.json|events\.out\.tfevents\..*)$")
_RUN_DIRS = re.compile(r"^point_cloud(_\d+)?$")
_RENDER_DIRS = ("train", "test", "video")


def earlier_run(model_path):
    """What shows that ``model_path`` holds an earlier run: its cfg_args.json and saved iterations ([] if none)."""
    if not os.path.isdir(model_path):
        return []
    found = ["cfg_args.json"] if os.path.isfile(os.path.join(model_path, "cfg_args.json")) else []
    for name in sorted(os.listdir(model_path)):
        folder = os.path.join(model_path, name)
        if _RUN_DIRS.match(name) and os.path.isdir(folder):
            found += [f"{name}/{it}" for it in sorted(os.listdir(folder)) if re.fullmatch(r"iteration_\d+", it)]
    return found


def run_outputs(model_path):
    """The entries of ``model_path`` that our tools wrote (what --overwrite deletes)."""
    out = []
    for name in sorted(os.listdir(model_path) if os.path.isdir(model_path) else []):
        path = os.path.join(model_path, name)
        if os.path.isdir(path) and not os.path.islink(path):
            if _RUN_DIRS.match(name) or (name in _RENDER_DIRS and all(
                    re.fullmatch(r"ours_\d+(\.\w+)?|\.ours_\d+\.partial\.\w+", n) for n in os.listdir(path))):
                out.append(path)
        elif _RUN_FILES.match(name):
            out.append(path)
    return out


def check_output_folder(model_path):
    """-m must be a folder that can be created and written in; checked before the scene loads, leaving nothing
    behind (a probe file in the deepest existing folder: permission bits alone mislead root)."""
    target = os.path.abspath(model_path)
    if os.path.exists(target) and not os.path.isdir(target):
        raise UserError(f"-m/--model_path {model_path} is a file, not a folder: pick another -m")
    parent = target
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"-m/--model_path {model_path} cannot be created: {parent} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".train-write-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"-m/--model_path {model_path} is not writable: cannot create files in {parent} "
                        f"({exc.strerror}); fix its permissions or pick another -m")




def check_start_checkpoint(path, dataset, opt, dp):
    """Read --start_checkpoint and check it fits this run (SH degree, iterations, model); before any output."""
    ckpt = read_checkpoint(path)
    state = ckpt.state
    degree = checkpoint_sh_degree(state)
    if degree != dataset.sh_degree:
        raise UserError(f"--start_checkpoint {path} holds a model of SH degree {degree} but this run has --sh_degree "
                        f"{dataset.sh_degree}: pass --sh_degree {degree}")
    index = dp.start if dp.num_models == 4 else 2
    last = final_iteration(index, opt.iterations, dp.student_steps_scale, dp.student_tail)
    if state["iteration"] > last:
        raise UserError(f"--start_checkpoint {path} was written at iteration {state['iteration']}, after this "
                        f"model's last iteration {last} (--iterations after --steps_scale, and "
                        f"--student_steps_scale for the student): pass --iterations above {state['iteration']}")
    got = state["model"].get("index")
    if (2 if got is None else got) != index:  # a vanilla model and G_std train alike
        which = f"{MODEL_NAMES[index]} (--start {dp.start})" if dp.num_models == 4 else "a vanilla model"
        raise UserError(f"--start_checkpoint {path} is a checkpoint of another model than {which}: its training "
                        f"state does not fit (the distillation names them chkpnt<model name><it>.pth)")
    return ckpt


def prepare_output_folder(model_path, overwrite, dp, ckpt):
    """Before the first write: sweep what killed runs left, delete an earlier run's outputs (--overwrite) or
    the earlier versions of the models --start K trains again."""
    if os.path.isdir(model_path):
        stale = sweep_stale_temp_files(model_path)
        if stale:
            print(f"note: removed {len(stale)} temporary file(s) or empty iteration folder(s) that an interrupted "
                  f"run left in {model_path}")
    else:
        os.makedirs(model_path)
    doomed = []
    if overwrite:
        doomed = run_outputs(model_path)
    elif dp.start:
        first = dp.start + (1 if ckpt else 0)  # a resumed model K keeps its folder (its earlier iterations)
        doomed = [p for i in range(first, 4) if os.path.isdir(p := os.path.join(model_path, f"point_cloud_{i}"))]
        # and the checkpoints of the models it trains again (a later --resume must not pick one of the old run)
        keep = os.path.abspath(ckpt.path) if ckpt else None
        doomed += [p for n in sorted(os.listdir(model_path)) if (m := CHECKPOINT_NAME.match(n))
                   and m.group("label") in MODEL_NAMES[first:] and os.path.abspath(
                       p := os.path.join(model_path, n)) != keep]
    for p in doomed:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)
    if doomed:
        why = "--overwrite" if overwrite else f"--start {dp.start} trains them again"
        print(f"Deleted {', '.join(os.path.basename(p) for p in doomed)} from {model_path} ({why})")


def _final_ply(model_path, folder, iterations):
    return os.path.isfile(os.path.join(model_path, folder, f"iteration_{iterations}", "point_cloud.ply"))


def resume_flags(given):
    """--resume: the flags saved in the cfg_args.json of the run in -m (typed); flags given as well must match
    them, except RESUME_FREE_FLAGS."""
    folder = given.get("model_path")
    if not folder:
        raise UserError("--resume needs -m/--model_path: the folder of the run to continue")
    clash = sorted(set(given) & {"start", "start_checkpoint", "overwrite"})
    if clash:
        raise UserError(f"--resume picks the checkpoint itself: leave out --{clash[0]}")
    if not os.path.isdir(folder):
        raise UserError(f"--resume: -m {folder} does not exist")
    cfg = load_config(folder)
    if not cfg:
        raise UserError(f"--resume: {folder} has no cfg_args.json, so it holds no run of train.py to continue")
    if not any(CHECKPOINT_NAME.match(n) for n in os.listdir(folder)):
        raise UserError(f"--resume: {folder} holds no checkpoint (chkpnt*.pth) to continue from; train it again "
                        f"with --overwrite")
    saved = saved_flags(folder, TRAIN_GROUPS, cfg)
    for k in _RESUME_SET | {"model_path"}:
        saved.pop(k, None)
    for k, v in saved.items():
        if k in given and k not in RESUME_FREE_FLAGS and given[k] != v:
            raise UserError(f"--resume continues with the flags saved in {os.path.join(folder, 'cfg_args.json')}: "
                            f"--{k} {given[k]} differs from its {v}; leave --{k} out")
    return saved


def resume_point(folder, opt, dp, run):
    """--resume: where to continue: the first model without its final PLY or distill.json entry, from its newest
    checkpoint (without one, from its start when earlier models finished). Sets dp.start and run.start_checkpoint."""
    names = [n for n in sorted(os.listdir(folder)) if CHECKPOINT_NAME.match(n)]
    labels = list(MODEL_NAMES) if dp.num_models == 4 else [""]
    folders = [f"point_cloud_{i}" for i in range(4)] if dp.num_models == 4 else ["point_cloud"]
    # a model is finished with its final PLY and, in the four-model run, its distill.json entry (a kill between
    # the two, e.g. during the final evaluation, continues that model from its newest checkpoint)
    entries = earlier_summary(os.path.join(folder, SUMMARY_NAME), 4)["models"] if dp.num_models == 4 else None
    lasts = [unscaled_final_iteration(i, opt.iterations, opt.steps_scale, dp.student_steps_scale,
                                      dp.student_tail) for i in range(len(folders))]
    stage = next((i for i, f in enumerate(folders) if not _final_ply(folder, f, lasts[i])
                  or (entries is not None and MODEL_NAMES[i] not in entries)), None)
    if stage is None:
        what = "every model has its" if len(folders) > 1 else "its model has its"
        raise UserError(f"--resume: the run in {folder} has finished ({what} final PLY): nothing to "
                        f"continue")
    mine = [(int(m.group("it")), n) for n in names if (m := CHECKPOINT_NAME.match(n)).group("label") == labels[stage]]
    dp.start = stage if dp.num_models == 4 else 0
    run.start_checkpoint = os.path.join(folder, max(mine)[1]) if mine else None
    if not mine and not dp.start:
        raise UserError(f"--resume: {folder} holds no checkpoint of {labels[stage] or 'its model'} to continue from")
    where = f"{labels[stage]} " if labels[stage] else ""
    print(f"Resuming {where}from {run.start_checkpoint}" if mine else
          f"Resuming at the start of {labels[stage]} (the models before it are finished; it has no checkpoint)")


def resume_command(model_path):
    script = os.path.relpath(os.path.abspath(__file__))
    if script.startswith(".."):
        script = os.path.abspath(__file__)
    return f"python {shlex.quote(script)} -m {shlex.quote(model_path)} --resume"


def _on_signal(signum, frame):
    if STOP["signal"] is not None:  # a second signal: stop at once, as without the handler
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    STOP["signal"] = signum


def main(argv=None):
    """Train; SIGINT/SIGTERM during it write a checkpoint after the current iteration and exit 130/143 with the
    command that resumes."""
    STOP["signal"] = None
    handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    _main.dist = None
    try:
        return _main(argv)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        wrote = stop.checkpoint or "no checkpoint (rank 0 writes those of a data-parallel model)"
        print(f"{name}: stopped {stop.label or 'training'} after iteration {stop.iteration} and wrote "
              f"{wrote}; resume with: {resume_command(_main.model_path)}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    finally:
        distributed.close(_main.dist)
        _main.dist = None
        for s, h in handlers.items():
            signal.signal(s, h)
        STOP["signal"] = None


def _main(argv=None):
    dataset, opt, pipe, dp, run, given_flags = _read_flags(argv)
    if run.start_checkpoint and not os.path.isfile(run.start_checkpoint):
        raise UserError(f"--start_checkpoint {run.start_checkpoint} does not exist")
    if pipe.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard, or leave the flag "
                        "out (train.py writes training_log.json either way)")
    if not dataset.model_path:
        dataset.model_path = os.path.join("output", uuid.uuid4().hex[:10])
    config = config_dict(dataset, opt, pipe, dp, run)  # as given: cfg_args.json holds the unscaled counts
    tests, saves, ckpts = scaled_schedule(opt, dp, run)
    random.seed(run.seed)
    np.random.seed(run.seed)
    torch.manual_seed(run.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pick_backend(device, pipe.backend)  # an unusable --backend (no GPU, gsplat missing) stops here
    if pipe.cuda_graphs == "on" and (conflict := graph_flag_conflict(pipe)):
        raise UserError(f"--cuda_graphs cannot be used with {conflict}")
    for name, given in (("cuda_graphs on", pipe.cuda_graphs == "on"), ("capacity_mode on", pipe.capacity_mode == "on")):
        if given and not renders_with_cuda_extension(device, pipe.backend):
            raise UserError(f"--{name} needs a CUDA GPU and our CUDA rasterizer (--backend auto or cuda): leave the "
                            f"flag out here")
    check_output_folder(dataset.model_path)
    ckpt = check_start_checkpoint(run.start_checkpoint, dataset, opt, dp) if run.start_checkpoint else None
    previous = earlier_run(dataset.model_path)
    if previous and not (run.overwrite or dp.start or ckpt or run.resume):
        shown = ", ".join(previous[:3]) + (f" and {len(previous) - 3} more" if len(previous) > 3 else "")
        raise UserError(f"-m {dataset.model_path} already holds a run ({shown}): pass --overwrite to delete its "
                        f"outputs first, --resume to continue it from its newest checkpoint, --start K to continue "
                        f"its distillation or --start_checkpoint to resume it, "
                        f"or pick another -m")
    dist = None
    if distributed.launched_distributed():  # the teachers spread over the ranks; the student, or the one model of
        # --num_models 1, data-parallel over all of them
        dist = distributed.init_distributed(run.dist_timeout_minutes)
        _main.dist = dist
    ckpt_file = os.path.abspath(ckpt.path) if ckpt else None
    if run.overwrite and ckpt and any(ckpt_file == p or ckpt_file.startswith(p + os.sep)
                                       for p in map(os.path.abspath, run_outputs(dataset.model_path))):
        raise UserError(f"--overwrite would delete --start_checkpoint {ckpt.path}: move it out of "
                        f"{dataset.model_path} first, or leave out --overwrite")
    reused = []  # what --start K reuses: each model at this run's last iteration, checked before spending time
    if dp.start:
        reused = check_teachers(dataset.model_path, dp.start, device, dataset.sh_degree, opt.iterations)
        if dp.start == 3:  # (G_std known: a student left no Gaussian stops before --start deletes the earlier one)
            check_student_target(dp, reused[2].num_points)

    scene = Scene(dataset)  # reads and checks all input before anything is written
    if dist is not None:  # every rank checked the folder before rank 0 changes it
        distributed.barrier(dist, "the barrier before preparing the output folder")
    if dist is None or dist.rank == 0:
        prepare_output_folder(dataset.model_path, run.overwrite and previous, dp, ckpt)
        if not run.resume:  # a resumed run keeps the cfg_args.json it continues
            save_config(dataset.model_path, config)
    if dist is not None:  # the other ranks write only into the prepared folder
        distributed.barrier(dist, "the barrier after preparing the output folder")
    _main.model_path = dataset.model_path  # for the resume line after a signal
    # start-up (a command-line run): imports, CUDA, the checks and the scene's images, a pipeline's wall time
    # beyond its stages
    startup = f"; start-up {time.time() - _IMPORTED:.1f} s" if _main.from_command_line else ""
    print(f"Output folder: {dataset.model_path} ({len(scene.train_cameras)} train / {len(scene.test_cameras)} "
          f"test views, {len(scene.points)} initial points, device {device}{startup})")

    if dp.num_models == 4:
        summary = run_distillation(scene, dataset, opt, pipe, dp, device, tests, set(saves), set(ckpts),
                                   ckpt, run.quiet, seed=run.seed,
                                   checkpoint_every_minutes=run.checkpoint_every_minutes, dist=dist,
                                   given=given_flags, reused=reused)
        if summary is None:  # a rank other than 0 under torchrun: its teachers are written, the student is rank 0's
            return None
        report_at_end(dataset.model_path, pipe.tensorboard)  # report.png; a plotting failure only warns
        return summary
    return train_vanilla(scene, dataset, opt, pipe, run, device, dist, ckpt, tests, saves, ckpts)

def scaled_schedule(opt, dp, run):
    """--steps_scale applied to every iteration count; returns the test, save and checkpoint iterations. Warns
    when the student would densify too often for its blur split, stops when its relocation could not run."""
    for group in (opt, dp, run):
        scale_steps(group, opt.steps_scale)
    tests = sorted({min(opt.iterations, it) for it in run.test_iterations})
    saves = sorted({min(opt.iterations, it) for it in run.save_iterations}) + [opt.iterations]
    ckpts = sorted({min(opt.iterations, it) for it in run.checkpoint_iterations})
    check_student_events(opt, dp)
    views_between = opt.densification_interval * opt.views_per_step
    if dp.num_models == 4 and dp.student_densify == "adc" and views_between < MIN_STUDENT_VIEWS_BETWEEN_DENSIFICATIONS:
        # measured on bonsai: 25 views between densifications (--steps_scale 0.25, 1 view) and 30 (0.05,
        # 6 views) train a good student; 5 (0.05, 1 view) made it split into millions of untrained fragments
        print(f"warning: the student densifies every {views_between} training views (--densification_interval "
              f"{opt.densification_interval} after --steps_scale x --views_per_step {opt.views_per_step}); with "
              f"fewer than {MIN_STUDENT_VIEWS_BETWEEN_DENSIFICATIONS} its blur split can grow untrained fragments "
              f"and ruin it: raise --views_per_step or --steps_scale", file=sys.stderr)
    return tests, saves, ckpts


def train_vanilla(scene, dataset, opt, pipe, run, device, dist, ckpt, tests, saves, ckpts):
    """--num_models 1: one model from the scene's points (data-parallel under torchrun); prints its summary."""
    model = GaussianModel(dataset.sh_degree, device)
    model.create_from_points(scene.points, scene.colors, scene.cameras_extent)
    sync = None
    if dist is not None:
        sync = data_parallel.start(dist, opt.views_per_step, "the model")
        if sync is None and not dist.is_writer:
            return None  # (one view per step: rank 0 trains the model alone)
        if sync is not None:
            sync.broadcast_model(model)
    summary = train_model(scene, model, opt, pipe, dataset, os.path.join(dataset.model_path, "point_cloud"),
                          test_iterations=tests, save_iterations=set(saves), checkpoint_iterations=set(ckpts),
                          start_checkpoint=ckpt, quiet=run.quiet,
                          checkpoint_every_minutes=run.checkpoint_every_minutes, sync=sync)
    if sync is not None and not sync.is_writer:
        return None  # rank 0 wrote the model and prints its summary
    peak = summary["peak_memory_gib"]
    print(f"Training complete: {summary['gaussians']} Gaussians, {summary['ply_mb']} MB, "
          f"{summary['train_seconds']} s ({summary['ms_per_step']} ms/step"
          + (f", peak {peak:.2f} GiB)" if peak is not None else ")")
          + (f", {summary['split']} PSNR {summary['psnr']:.2f} SSIM {summary['ssim']:.4f}"
             if "psnr" in summary else ""))
    report_at_end(dataset.model_path, pipe.tensorboard)
    return summary


_main.from_command_line = False

if __name__ == "__main__":
    _main.from_command_line = True
    run_cli(main)
