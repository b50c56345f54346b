#!/usr/bin/env python
"""Train 3D Gaussian Splatting models (one vanilla model, or the Distilled-3DGS teachers and student)."""
import argparse
import importlib.util
import math
import os
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from arguments import (DistillParams, ModelParams, OptimizationParams, PipelineParams, explicit_flags,  # noqa: E402
                       load_config, save_config, scale_steps)
from scene import Scene  # noqa: E402
from scene.gaussian_model import GaussianModel  # noqa: E402
from distill import distributed  # noqa: E402
from distill.pipeline import check_teachers, run_distillation  # noqa: E402
from distill.roles import check_student_init  # noqa: E402
from distill.roles import MODEL_NAMES  # noqa: E402
from gaussian_renderer import pick_backend  # noqa: E402
from training.loop import (CHECKPOINT_NAME, STOP, Interrupted, checkpoint_sh_degree, read_checkpoint,  # noqa: E402
                           train_model)
from training.optim import OPTIMIZER_TYPES  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.report import report_at_end  # noqa: E402
from utils.system_utils import sweep_stale_temp_files  # noqa: E402


MIN_STUDENT_VIEWS_BETWEEN_DENSIFICATIONS = 20
# flags that --resume lets differ from the saved run's (they change no trained value)
RESUME_FREE_FLAGS = {"model_path", "resume", "quiet", "checkpoint_every_minutes", "checkpoint_iterations",
                     "test_iterations", "dist_timeout_minutes"}
# saved flags that describe how the run was started, not what it trains: --resume sets them itself
_RESUME_SET = {"start", "start_checkpoint", "overwrite", "resume"}


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
    p.add_argument("--resume", action="store_true",
                   help="continue the run in -m from its newest checkpoint (also inside the four-model run: the "
                        "finished models are reused), with the flags saved in its cfg_args.json; flags given as "
                        "well must match them, except " + ", ".join("--" + k for k in sorted(RESUME_FREE_FLAGS)))
    p.add_argument("--checkpoint_every_minutes", type=float, default=10.0,
                   help="write an automatic chkpnt<model><it>.auto.pth this often (wall clock; only the newest of "
                        "each model is kept), so a killed run loses at most this much; 0 = off")
    p.add_argument("--overwrite", action="store_true",
                   help="the -m folder holds an earlier run: delete its outputs (point_cloud*, cfg_args.json, "
                        "distill.json, checkpoints, renders, metrics) before training; without it train.py refuses "
                        "such a folder unless --start K or --start_checkpoint continues that run")
    p.add_argument("--dist_timeout_minutes", type=float, default=30.0,
                   help="under torchrun: how long a rank waits at a barrier for the others before it stops with an "
                        "error (a failed or hung rank)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def scaled_iterations(values, f, last):
    return sorted({min(last, max(1, int(round(v * f)))) for v in values})


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
    if state["iteration"] > opt.iterations:
        raise UserError(f"--start_checkpoint {path} was written at iteration {state['iteration']}, after this run's "
                        f"last iteration {opt.iterations} (--iterations after --steps_scale): pass --iterations "
                        f"above {state['iteration']}")
    index = dp.start if dp.num_models == 4 else 2
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


def resume_args(parser, argv, args):
    """--resume: the flags of the run in -m (its cfg_args.json) and where to continue: the first model without its
    final PLY, from its newest checkpoint (without one, from its start when earlier models finished)."""
    folder = args.model_path
    if not folder:
        raise UserError("--resume needs -m/--model_path: the folder of the run to continue")
    given = explicit_flags(parser, sys.argv[1:] if argv is None else argv)
    clash = sorted(given & {"start", "start_checkpoint", "overwrite"})
    if clash:
        raise UserError(f"--resume picks the checkpoint itself: leave out --{clash[0]}")
    if not os.path.isdir(folder):
        raise UserError(f"--resume: -m {folder} does not exist")
    cfg = load_config(folder)
    if not cfg:
        raise UserError(f"--resume: {folder} has no cfg_args.json, so it holds no run of train.py to continue")
    names = [n for n in sorted(os.listdir(folder)) if CHECKPOINT_NAME.match(n)]
    if not names:
        raise UserError(f"--resume: {folder} holds no checkpoint (chkpnt*.pth) to continue from; train it again "
                        f"with --overwrite")
    for k, v in cfg.items():
        if k in _RESUME_SET or k == "model_path" or not hasattr(args, k):
            continue
        if k in given and k not in RESUME_FREE_FLAGS and getattr(args, k) != v:
            raise UserError(f"--resume continues with the flags saved in {os.path.join(folder, 'cfg_args.json')}: "
                            f"--{k} {getattr(args, k)} differs from its {v}; leave --{k} out")
        if k not in given:
            setattr(args, k, v)
    last = max(1, int(round(args.iterations * args.steps_scale)))  # as scale_steps
    labels = list(MODEL_NAMES) if args.num_models == 4 else [""]
    folders = [f"point_cloud_{i}" for i in range(4)] if args.num_models == 4 else ["point_cloud"]
    stage = next((i for i, f in enumerate(folders) if not _final_ply(folder, f, last)), None)
    if stage is None:
        what = "models have" if len(folders) > 1 else "model has"
        raise UserError(f"--resume: the run in {folder} has finished (its {what} iteration {last}): nothing to "
                        f"continue")
    mine = [(int(m.group("it")), n) for n in names if (m := CHECKPOINT_NAME.match(n)).group("label") == labels[stage]]
    args.overwrite, args.resume = False, True
    args.start = stage if args.num_models == 4 else 0
    args.start_checkpoint = os.path.join(folder, max(mine)[1]) if mine else None
    if not mine and not args.start:
        raise UserError(f"--resume: {folder} holds no checkpoint of {labels[stage] or 'its model'} to continue from")
    where = f"{labels[stage]} " if labels[stage] else ""
    print(f"Resuming {where}from {args.start_checkpoint}" if mine else
          f"Resuming at the start of {labels[stage]} (the models before it are finished; it has no checkpoint)")
    return args


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
        print(f"{name}: stopped {stop.label or 'training'} after iteration {stop.iteration} and wrote "
              f"{stop.checkpoint}; resume with: {resume_command(_main.model_path)}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    finally:
        distributed.close(_main.dist)
        _main.dist = None
        for s, h in handlers.items():
            signal.signal(s, h)
        STOP["signal"] = None


def _main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        args = resume_args(parser, argv, args)
    if not (args.checkpoint_every_minutes >= 0):
        raise UserError(f"--checkpoint_every_minutes {args.checkpoint_every_minutes} must be >= 0 (0 = off)")
    dataset, opt, pipe = ModelParams.extract(args), OptimizationParams.extract(args), PipelineParams.extract(args)
    dp = DistillParams.extract(args)
    if not dataset.source_path:
        raise UserError("-s/--source_path is required: the scene folder to train on")
    if not 0 <= dataset.sh_degree <= 3:
        raise UserError(f"--sh_degree {dataset.sh_degree} must be between 0 and 3")
    if opt.views_per_step < 1:
        raise UserError(f"--views_per_step {opt.views_per_step} must be at least 1")
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name} {value} must be a finite number")
    if opt.iterations < 1:
        raise UserError(f"--iterations {opt.iterations} must be at least 1")
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
    if dp.num_models == 4:
        check_student_init(dp)  # before anything is written
    if dp.start and not args.model_path:
        raise UserError("--start needs -m/--model_path: the folder holding the earlier models")
    if args.overwrite and dp.start:
        raise UserError(f"--overwrite deletes the models that --start {dp.start} reuses: pass one of the two")
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
    scene, ckpt, dist = _prepare_run(args, dataset, opt, dp, device)
    return _train(args, scene, dataset, opt, pipe, dp, device, (tests, saves, ckpts), ckpt, dist)


def _prepare_run(args, dataset, opt, dp, device):
    """Check the output folder, the checkpoint to resume and the earlier models, read the scene, then prepare the
    folder (rank 0 under torchrun); returns (scene, checkpoint or None, DistContext or None)."""
    if not dataset.model_path:
        dataset.model_path = args.model_path = os.path.join("output", uuid.uuid4().hex[:10])
    check_output_folder(dataset.model_path)
    ckpt = check_start_checkpoint(args.start_checkpoint, dataset, opt, dp) if args.start_checkpoint else None
    previous = earlier_run(dataset.model_path)
    if previous and not (args.overwrite or dp.start or ckpt or args.resume):
        shown = ", ".join(previous[:3]) + (f" and {len(previous) - 3} more" if len(previous) > 3 else "")
        raise UserError(f"-m {dataset.model_path} already holds a run ({shown}): pass --overwrite to delete its "
                        f"outputs first, --resume to continue it from its newest checkpoint, --start K to continue "
                        f"its distillation or --start_checkpoint to resume it, "
                        f"or pick another -m")
    dist = None
    if distributed.launched_distributed():
        if dp.num_models != 4:
            raise UserError("torchrun spreads the teachers of --num_models 4 over the ranks; train one model with "
                            "plain python train.py")
        dist = distributed.init_distributed(args.dist_timeout_minutes)
        _main.dist = dist
    ckpt_file = os.path.abspath(ckpt.path) if ckpt else None
    if args.overwrite and ckpt and any(ckpt_file == p or ckpt_file.startswith(p + os.sep)
                                       for p in map(os.path.abspath, run_outputs(dataset.model_path))):
        raise UserError(f"--overwrite would delete --start_checkpoint {ckpt.path}: move it out of "
                        f"{dataset.model_path} first, or leave out --overwrite")
    if dp.start:  # what --start K reuses: each model at this run's last iteration, before spending time
        check_teachers(dataset.model_path, dp.start, device, dataset.sh_degree, opt.iterations)

    scene = Scene(dataset)  # reads and checks all input before anything is written
    if dist is not None:  # every rank checked the folder before rank 0 changes it
        distributed.barrier(dist, "the barrier before preparing the output folder")
    if dist is None or dist.rank == 0:
        prepare_output_folder(dataset.model_path, args.overwrite and previous, dp, ckpt)
        if not args.resume:  # a resumed run keeps the cfg_args.json it continues
            save_config(dataset.model_path, args)
    if dist is not None:  # the other ranks write only into the prepared folder
        distributed.barrier(dist, "the barrier after preparing the output folder")
    _main.model_path = dataset.model_path  # for the resume line after a signal
    print(f"Output folder: {dataset.model_path} ({len(scene.train_cameras)} train / {len(scene.test_cameras)} "
          f"test views, {len(scene.points)} initial points, device {device})")
    return scene, ckpt, dist


def _train(args, scene, dataset, opt, pipe, dp, device, iterations, ckpt, dist):
    """Train the four-model distillation or one vanilla model; ``iterations``: (tests, saves, checkpoints)."""
    tests, saves, ckpts = iterations
    if dp.num_models == 4:
        summary = run_distillation(scene, dataset, opt, pipe, dp, device, tests, set(saves), set(ckpts),
                                   ckpt, args.quiet, seed=args.seed,
                                   checkpoint_every_minutes=args.checkpoint_every_minutes, dist=dist)
        if summary is None:  # a rank other than 0 under torchrun: its teachers are written, the student is rank 0's
            return None
        report_at_end(dataset.model_path, pipe.tensorboard)  # report.png; a plotting failure only warns
        return summary
    model = GaussianModel(dataset.sh_degree, device)
    model.create_from_points(scene.points, scene.colors, scene.cameras_extent)
    summary = train_model(scene, model, opt, pipe, dataset, os.path.join(dataset.model_path, "point_cloud"),
                          test_iterations=tests, save_iterations=set(saves), checkpoint_iterations=set(ckpts),
                          start_checkpoint=ckpt, quiet=args.quiet,
                          checkpoint_every_minutes=args.checkpoint_every_minutes)
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
