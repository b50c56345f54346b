"""The one training loop. Teacher variants and the student plug in through a Role (see roles)."""
import os
import pickle
import random
import re
import time
import zipfile
from collections import namedtuple

import numpy as np
import torch
from tqdm import tqdm

from gaussian_renderer import background, render
from training.densify import DensifyStrategy
from utils.errors import NonFiniteError, UserError
from utils.general_utils import log_linear
from utils.image_utils import psnr
from utils.loss_utils import photometric_loss, ssim
from utils.phase_timer import PhaseTimer
from utils.system_utils import atomic_path, write_json


class Role:
    """Hooks a model variant fills in; the defaults give vanilla 3DGS (G_std)."""

    def make_strategy(self, opt, extent, white_background):
        return DensifyStrategy(opt, extent, white_background)

    def before_step(self, it, model, strategy):
        """Called before the views of a step are rendered (noise events)."""

    def render_opacity(self, it, model):
        """Activated opacities to train with this step (dropout), or None for the model's own."""
        return None

    def view_target(self, it, camera, device):
        """(image, weight): a second target for this training view's image loss (the student's
        mean teacher render), or None."""
        return None

    def step_loss(self, it, model):
        """Extra loss once per step (structure loss), or None."""
        return None

    def after_step(self, it, model, strategy, out):
        """Called after the optimizer step and densification with the last view's render output
        (pruning schedules, statistics)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@torch.no_grad()
def evaluate(model, cameras, pipe, bg, limit=None):
    """Mean PSNR / SSIM / L1 over ``cameras`` (at most ``limit`` of them, evenly spaced)."""
    if not cameras:
        return None
    if limit and len(cameras) > limit:
        step = len(cameras) / limit
        cameras = [cameras[int(i * step)] for i in range(limit)]
    ps, ss, ls = [], [], []
    for cam in cameras:
        img = render(cam, model, pipe, bg)["render"].clamp(0, 1)
        gt = cam.original_image(img.device)
        ps.append(float(psnr(img, gt)))
        ss.append(float(ssim(img, gt)))
        ls.append(float((img - gt).abs().mean()))
    n = len(ps)
    return dict(psnr=sum(ps) / n, ssim=sum(ss) / n, l1=sum(ls) / n, views=n)


# the checkpoint layout; a checkpoint of another version is refused with one line (never half-loaded)
CHECKPOINT_VERSION = 2
CHECKPOINT_KEYS = ("version", "iteration", "model", "params", "optimizer", "active_sh_degree", "spatial_lr_scale",
                   "role", "strategy", "loop", "rng")
# chkpnt<label><it>.pth (--checkpoint_iterations) and chkpnt<label><it>.auto.pth (time cadence, signals; only the
# newest automatic one of each model is kept)
CHECKPOINT_NAME = re.compile(r"^chkpnt(?P<label>[A-Za-z_]*?)(?P<it>\d+)(?P<auto>\.auto)?\.pth$")


def checkpoint_name(label, it, auto=False):
    return f"chkpnt{label}{it}{'.auto' if auto else ''}.pth"


def rng_state():
    """Python, NumPy, torch CPU (and CUDA, when there is one) generator states."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, model, strategy, role, iteration, meta=None, loop=None):
    """Write everything a resume needs to continue exactly after ``iteration`` (atomically): parameters, optimizer,
    densification statistics, role state, the loop's state (camera stack, running loss, logs) and the RNGs.
    ``meta``: which model this is (index in the four-model run or None, label, last iteration)."""
    cpu = lambda v: v.detach().cpu() if torch.is_tensor(v) else v  # noqa: E731
    state = dict(version=CHECKPOINT_VERSION, iteration=iteration, model=dict(meta or {}),
                 params={k: v.detach() for k, v in model.params.items()},
                 optimizer=model.optimizer.state_dict(), active_sh_degree=model.active_sh_degree,
                 spatial_lr_scale=model.spatial_lr_scale, role=role.state_dict(),
                 strategy=strategy.state_dict(), loop={k: cpu(v) for k, v in (loop or {}).items()},
                 rng=rng_state())
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def prune_auto_checkpoints(folder, label, keep):
    """Delete the automatic checkpoints of model ``label`` in ``folder`` other than ``keep`` (a file name)."""
    for name in os.listdir(folder):
        m = CHECKPOINT_NAME.match(name)
        if m and m.group("auto") and m.group("label") == label and name != keep:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


# a checkpoint read (and checked) before the run writes anything: train_model's start_checkpoint takes it
# instead of a path, so the file is read once
Checkpoint = namedtuple("Checkpoint", ["path", "state"])


def read_checkpoint(path):
    """Checkpoint(path, state) of a chkpnt<it>.pth written by train.py; a UserError naming the file otherwise."""
    if not os.path.isfile(path):
        raise UserError(f"--start_checkpoint {path} does not exist (or is not a file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, RuntimeError, ValueError, KeyError,
            AttributeError, ImportError, IndexError, TypeError, UnicodeDecodeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise UserError(f"--start_checkpoint {path} is not a checkpoint written by train.py ({exc.__class__.__name__}"
                        f": {detail}); pass a chkpnt<it>.pth (a point_cloud.ply cannot be resumed from)")
    params = state.get("params") if isinstance(state, dict) else None
    if not isinstance(params, dict) or any(
            not torch.is_tensor(params.get(k)) for k in ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")):
        raise UserError(f"--start_checkpoint {path} is not a checkpoint written by train.py (it lacks the model's "
                        f"parameters or training state); pass a chkpnt<it>.pth")
    version = state.get("version")
    if version != CHECKPOINT_VERSION:
        seen = version or "none: written before versioned checkpoints"
        raise UserError(f"{path} is a checkpoint of another version ({seen}; this train.py reads version "
                        f"{CHECKPOINT_VERSION}): it cannot be resumed; "
                        f"train that model again, or resume it with the train.py that wrote it")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing or not isinstance(state["loop"], dict) or not isinstance(state["model"], dict):
        raise UserError(f"{path} has another layout than a version {CHECKPOINT_VERSION} checkpoint (missing "
                        f"{', '.join(missing) or 'loop/model dictionaries'}): it cannot be resumed")
    return Checkpoint(path, state)


def checkpoint_sh_degree(state):
    """The maximum SH degree of a checkpoint's model (from its f_rest width)."""
    k = state["params"]["f_rest"].shape[1] + 1
    return int(round(k ** 0.5)) - 1


def load_checkpoint(path, model, strategy, role, opt):
    """Restore a checkpoint (a path, or a Checkpoint from read_checkpoint) into model, strategy and role and the
    random generators; returns (its iteration, the loop state it saved)."""
    if isinstance(path, Checkpoint):
        path, state = path
    else:
        state = read_checkpoint(path).state
    try:
        model._set(*(state["params"][k] for k in ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")))
        model.spatial_lr_scale = state["spatial_lr_scale"]
        model.active_sh_degree = state["active_sh_degree"]
        model.training_setup(opt)
        model.optimizer.load_state_dict(state["optimizer"])
        on_device = lambda v: v.to(model.device) if torch.is_tensor(v) else v  # noqa: E731 (read on the CPU)
        strategy.load_state_dict({k: on_device(v) for k, v in state["strategy"].items()})
        role.load_state_dict({k: on_device(v) for k, v in state["role"].items()})
        loop = {k: on_device(v) for k, v in state["loop"].items()}
        set_rng_state(state["rng"])
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise UserError(f"cannot resume from {path} ({exc.__class__.__name__}: {detail}); it must be a "
                        f"chkpnt<it>.pth written by train.py for this model with the same settings")
    return state["iteration"], loop


# SIGINT / SIGTERM: the handler only records the signal; the loop checks it once per iteration (a Python value,
# no device read), writes a checkpoint after that iteration and raises Interrupted
STOP = dict(signal=None)


class Interrupted(Exception):
    """Training stopped by a signal after writing ``checkpoint``."""

    def __init__(self, signum, checkpoint, label, iteration):
        super().__init__(f"signal {signum}")
        self.signum, self.checkpoint, self.label, self.iteration = signum, checkpoint, label, iteration


class DivergenceGuard:
    """Stops a run whose loss or parameters became NaN or infinite, with one line naming the model, the
    iteration and the last good checkpoint. It reads the device only at check points (where the loop
    reads values anyway: the progress bar's loss every 10 steps, densification, saves), never every step;
    the loss it reads is the running mean, which stays non-finite once one step's loss was."""

    def __init__(self, label, every, checkpoint=None):
        self.label, self.every = label or "model", every
        self.last_ok = None  # last iteration whose check passed
        self.checkpoint = checkpoint  # last checkpoint written from finite parameters (or resumed from)
        self.saved = None  # last iteration saved as a PLY

    def check(self, it, model, ema=None, bar=None):
        """Raise NonFiniteError if ``ema`` (the running loss, a device scalar) or a parameter is not finite;
        returns the loss as a float (one transfer for all of it)."""
        flags = [torch.isfinite(p).all() for p in model.params.values()]
        vals = torch.stack([(ema if ema is not None else torch.zeros((), device=model.device)).float().reshape(())]
                           + [f.float() for f in flags]).tolist()
        loss, finite = vals[0], all(v == 1.0 for v in vals[1:])
        if finite and (loss == loss and abs(loss) != float("inf")):
            self.last_ok = it
            return loss
        if bar is not None:
            bar.close()
        what = []
        if not (loss == loss and abs(loss) != float("inf")):
            what.append(f"the loss ({loss})")
        if not finite:
            what.append(f"the parameters of {model.nonfinite_summary()}")
        since = (f"the last check passed at iteration {self.last_ok}" if self.last_ok is not None
                 else "no earlier check")
        kept = (f"last good checkpoint: {self.checkpoint} (resume with --start_checkpoint)" if self.checkpoint
                else "no good checkpoint (--checkpoint_iterations writes them)")
        saved = f", last PLY saved at iteration {self.saved}" if self.saved is not None else ""
        raise NonFiniteError(f"{self.label}: {' and '.join(what)} became NaN or infinite by iteration {it} ({since}; "
                             f"checked every {self.every} iterations and before every save); training stopped, "
                             f"nothing non-finite was written; {kept}{saved}; lower the learning rates or loss "
                             f"weights")


def train_model(scene, model, opt, pipe, dataset, out_dir, role=None, test_iterations=(),
                save_iterations=(), checkpoint_iterations=(), start_checkpoint=None, label="", quiet=False,
                step_hook=None, stage=None, checkpoint_every_minutes=0.0, sync=None):
    """Train ``model`` on ``scene``; write PLYs to <out_dir>/iteration_<it>/point_cloud.ply.

    Returns a summary dict (Gaussians, PLY MB, wall time, ms/step, peak memory, last test metrics).
    ``step_hook(it)``, if given, is called at the start of every iteration (scripts/profile_step.py).
    ``stage``: the model's index in the four-model run (None: a vanilla run), recorded in its checkpoints.
    ``checkpoint_every_minutes`` > 0 writes an automatic chkpnt<label><it>.auto.pth at the end of the first
    iteration after each such interval (only the newest is kept). After a SIGINT/SIGTERM (STOP) the loop writes
    one at the end of the current iteration and raises Interrupted.
    ``sync`` (a training.data_parallel.StepSync under torchrun): this rank renders its share of each step's views,
    the step is summed over the ranks before the optimizer step, and only the writer rank writes files.
    """
    t_enter = time.time()
    lead = sync is None or sync.is_writer  # writes files and adds the once-per-step loss
    role = role or Role()
    dev = model.device
    bg = background(dataset.white_background, dev)
    strategy = role.make_strategy(opt, scene.cameras_extent, dataset.white_background)
    if model.optimizer is None:
        model.training_setup(opt)
    first, resumed = 1, {}
    if start_checkpoint:
        first, resumed = load_checkpoint(start_checkpoint, model, strategy, role, opt)
        first += 1
    meta = dict(index=stage, label=label, iterations=opt.iterations)
    # checks where the loop reads values anyway: the progress bar every 10 steps, else densification's interval
    # (at most 100 steps apart, also after densification ends)
    guard = DivergenceGuard(label, 10 if not quiet else max(10, min(100, opt.densification_interval)),
                            getattr(start_checkpoint, "path", start_checkpoint))
    writer = None  # opt-in: importing TensorBoard costs seconds, and each logged loss waits for the GPU
    if pipe.tensorboard and lead:
        from torch.utils.tensorboard import SummaryWriter  # train.py checked that the package is there
        writer = SummaryWriter(dataset.model_path)
    train_cams = scene.getTrainCameras()
    test_cams = scene.getTestCameras()
    vw = opt.view_weight if opt.view_weight is not None else (0.6 if opt.views_per_step > 1 else 1.0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    stack, history = [], []
    counts, count_every = [], max(1, opt.iterations // 200)  # [iteration, Gaussians] for the report
    ema = None
    if resumed:  # the loop's own state: the remaining shuffled cameras, the running loss, the logs so far
        by_uid = {c.uid: c for c in train_cams}
        if any(u not in by_uid for u in resumed["stack"]):
            raise UserError(f"cannot resume from {getattr(start_checkpoint, 'path', start_checkpoint)}: its camera "
                            f"order names training views this scene does not have (another scene or --eval split)")
        stack = [by_uid[u] for u in resumed["stack"]]
        ema, history, counts = resumed["ema"], list(resumed["history"]), list(resumed["counts"])
    every_s = 60.0 * checkpoint_every_minutes
    last_auto = time.time()
    io_seconds = 0.0  # evaluation and saving, left out of ms/step
    timer = PhaseTimer(dev, pipe.profile)
    t0 = time.time()
    bar = tqdm(range(first, opt.iterations + 1), desc=label or "training", disable=quiet or not lead,
               dynamic_ncols=True)
    for it in bar:
        if step_hook is not None:
            step_hook(it)
        model.update_learning_rate(it)
        if it % opt.sh_increase_interval == 0:
            model.oneup_sh_degree()
        with timer("role events"):
            role.before_step(it, model, strategy)
        want_stats = strategy.wants_stats(it)
        step_loss = torch.zeros((), device=dev)
        visible = None  # Gaussians seen by any view of the step (sparse_adam updates only these)
        out = None
        for j in range(opt.views_per_step):
            if not stack:
                stack = list(train_cams)
                random.shuffle(stack)
            cam = stack.pop()
            bgc = torch.rand(3, device=dev) if opt.random_background else bg
            if sync is not None and not sync.renders(j):  # (after the draws: every rank's RNG stays in step)
                continue
            with timer("render"):
                opacity = role.render_opacity(it, model)
                out = render(cam, model, pipe, bgc, opacity=opacity, return_stats=want_stats)
            with timer("loss"):
                gt = cam.original_image(dev)
                loss = photometric_loss(out["render"], gt, opt.lambda_dssim, role.view_target(it, cam, dev))
                if cam.depth is not None and cam.depth_reliable:
                    w = log_linear(opt.depth_l1_weight_init, opt.depth_l1_weight_final, it, opt.iterations)
                    loss = loss + w * (out["depth"] - cam.depth.to(dev)).abs().mean()
            with timer("backward"):
                (vw * loss).backward()
            with timer("statistics"):
                step_loss += loss.detach()
                vis = out["visibility_filter"]
                visible = vis if visible is None else visible | vis
                if want_stats:
                    strategy.observe(model, out, cam)
        with timer("role events"):
            extra = role.step_loss(it, model)  # (on every rank: its random draws keep the ranks in step)
            if extra is not None and lead:  # (added once: the sum over the ranks has it)
                extra.backward()
                step_loss += extra.detach()
        if sync is not None:
            with timer("all-reduce"):
                step_loss, visible, out = sync.reduce_step(model, strategy, step_loss, visible, out)
        with timer("optimizer"):
            model.optimizer_step(visible)
        step_loss = step_loss / opt.views_per_step
        ema = step_loss if ema is None else 0.4 * step_loss + 0.6 * ema  # stays on the device: no sync
        if it % guard.every == 0 or it in test_iterations or it in save_iterations or it == opt.iterations:
            loss_now = guard.check(it, model, ema, bar)  # waits for the GPU: only every guard.every steps
            if it % 10 == 0 and not quiet:
                bar.set_postfix(loss=f"{loss_now:.4f}", gaussians=model.num_points)
        if it % count_every == 0 or (it == first and not resumed):
            counts.append([it, model.num_points])
        if it % 10 == 0 and writer is not None:
            writer.add_scalar(f"{label}/loss", float(step_loss), it)
            writer.add_scalar(f"{label}/gaussians", model.num_points, it)
        t_io = time.time()
        if it in test_iterations:
            res = evaluate(model, test_cams, pipe, bg) or evaluate(model, train_cams, pipe, bg, limit=8)
            split = "test" if test_cams else "train"
            res.update(iteration=it, split=split, gaussians=model.num_points)
            history.append(res)
            if lead:
                tqdm.write(f"[{label or 'model'} it {it}] {split} PSNR {res['psnr']:.2f} SSIM {res['ssim']:.4f} "
                           f"L1 {res['l1']:.4f} ({model.num_points} Gaussians)")
            if writer is not None:
                writer.add_scalar(f"{label}/{split}_psnr", res["psnr"], it)
        if it in save_iterations and lead:
            model.save_ply(os.path.join(out_dir, f"iteration_{it}", "point_cloud.ply"))
            guard.saved = it
        io_seconds += time.time() - t_io
        # densification and role events come after the report, so a test at an opacity-reset
        # iteration sees the trained model (as graphdeco's report precedes its densification); none
        # after the last iteration: its new Gaussians would never be trained, and the saved model and
        # the reported count are the evaluated model's
        with torch.no_grad():
            if it < opt.iterations:
                with timer("densification"):
                    strategy.step(model, it, out, cam)
            with timer("role events"):
                role.after_step(it, model, strategy, out)
        timer.end_step()
        # after this iteration's edits, so a resume continues exactly; the signal flag is a Python value and the
        # cadence reads the wall clock: neither waits for the device
        signum = STOP["signal"]
        auto = signum is not None or (every_s > 0 and it < opt.iterations and time.time() - last_auto >= every_s)
        if lead and (it in checkpoint_iterations or auto):
            t_io = time.time()
            guard.check(it, model, ema, bar)  # densification can overflow (a split of an infinite scale)
            loop_state = dict(stack=[c.uid for c in stack], ema=ema, history=history, counts=counts)
            for name in ([checkpoint_name(label, it)] if it in checkpoint_iterations else []) + (
                    [checkpoint_name(label, it, auto=True)] if auto else []):
                guard.checkpoint = os.path.join(dataset.model_path, name)
                save_checkpoint(guard.checkpoint, model, strategy, role, it, meta, loop_state)
            if auto:
                prune_auto_checkpoints(dataset.model_path, label, os.path.basename(guard.checkpoint))
                last_auto = time.time()
            io_seconds += time.time() - t_io
        if signum is not None:
            bar.close()
            raise Interrupted(signum, guard.checkpoint, label, it)
    bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.time() - t0
    steps = max(1, opt.iterations - first + 1)
    final_ply = os.path.join(out_dir, f"iteration_{opt.iterations}", "point_cloud.ply")
    if lead and not os.path.isfile(final_ply):
        guard.check(opt.iterations, model, ema)
        model.save_ply(final_ply)
    ply_mb = round(os.path.getsize(final_ply) / 1e6, 2) if lead else None  # (the writer's file)
    summary = dict(gaussians=model.num_points, ply_mb=ply_mb, train_seconds=round(wall, 2),
                   setup_seconds=round(t0 - t_enter, 2),  # optimizer, logging, checkpoint: before the loop
                   ms_per_step=round(1000 * (wall - io_seconds) / steps, 2),
                   peak_memory_gib=round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 3) if dev.type == "cuda"
                   else None, history=history)
    phases = timer.summary()
    if phases:
        summary["phase_ms"] = phases
        tqdm.write(f"[{label or 'model'}] mean ms per step: "
                   + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    if history:
        summary.update({k: history[-1][k] for k in ("psnr", "ssim", "split")})
    if lead:
        write_json(os.path.join(out_dir, "training_log.json"), dict(summary, gaussian_counts=counts))
    if writer is not None:
        writer.close()
    return summary
