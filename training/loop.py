"""The one training loop. Teacher variants and the student plug in through a Role (see roles)."""
import os
import pickle
import random
import time
import zipfile
from collections import namedtuple

import torch
from tqdm import tqdm

from gaussian_renderer import render
from training.densify import DensifyStrategy
from utils.errors import NonFiniteError, UserError
from utils.general_utils import log_linear
from utils.image_utils import psnr
from utils.loss_utils import photometric_loss, ssim
from utils.phase_timer import PhaseTimer
from utils.system_utils import atomic_path, write_json


class Role:
    """Hooks a model variant fills in; the defaults give vanilla 3DGS (G_std)."""

    name = "std"

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


def save_checkpoint(path, model, strategy, role, iteration):
    state = dict(iteration=iteration, params={k: v.detach() for k, v in model.params.items()},
                 optimizer=model.optimizer.state_dict(), active_sh_degree=model.active_sh_degree,
                 spatial_lr_scale=model.spatial_lr_scale, role=role.state_dict(),
                 strategy={k: getattr(strategy, k) for k in ("grad_accum", "denom", "max_radii2D")},
                 rng=dict(python=random.getstate(), torch=torch.get_rng_state()))
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# a checkpoint read (and checked) before the run writes anything: train_model's start_checkpoint takes it
# instead of a path, so the file is read once
Checkpoint = namedtuple("Checkpoint", ["path", "state"])
CHECKPOINT_KEYS = ("iteration", "params", "optimizer", "active_sh_degree", "spatial_lr_scale", "role", "strategy",
                   "rng")


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
    if not isinstance(params, dict) or any(k not in state for k in CHECKPOINT_KEYS) or any(
            not torch.is_tensor(params.get(k)) for k in ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")):
        raise UserError(f"--start_checkpoint {path} is not a checkpoint written by train.py (it lacks the model's "
                        f"parameters or training state); pass a chkpnt<it>.pth")
    return Checkpoint(path, state)


def checkpoint_sh_degree(state):
    """The maximum SH degree of a checkpoint's model (from its f_rest width)."""
    k = state["params"]["f_rest"].shape[1] + 1
    return int(round(k ** 0.5)) - 1


def load_checkpoint(path, model, strategy, role, opt):
    """Restore a checkpoint (a path, or a Checkpoint from read_checkpoint) into model, strategy and role;
    returns its iteration."""
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
        for k, v in state["strategy"].items():
            setattr(strategy, k, on_device(v))
        role.load_state_dict({k: on_device(v) for k, v in state["role"].items()})
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise UserError(f"cannot resume from {path} ({exc.__class__.__name__}: {detail}); it must be a "
                        f"chkpnt<it>.pth written by train.py for this model with the same settings")
    random.setstate(state["rng"]["python"])
    torch.set_rng_state(state["rng"]["torch"])
    return state["iteration"]


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
                step_hook=None):
    """Train ``model`` on ``scene``; write PLYs to <out_dir>/iteration_<it>/point_cloud.ply.

    Returns a summary dict (Gaussians, PLY MB, wall time, ms/step, peak memory, last test metrics).
    ``step_hook(it)``, if given, is called at the start of every iteration (scripts/profile_step.py).
    """
    t_enter = time.time()
    role = role or Role()
    dev = model.device
    bg = torch.tensor([1.0, 1.0, 1.0] if dataset.white_background else [0.0, 0.0, 0.0], device=dev)
    strategy = role.make_strategy(opt, scene.cameras_extent, dataset.white_background)
    if model.optimizer is None:
        model.training_setup(opt)
    first = 1
    if start_checkpoint:
        first = load_checkpoint(start_checkpoint, model, strategy, role, opt) + 1
    # checks where the loop reads values anyway: the progress bar every 10 steps, else densification's interval
    # (at most 100 steps apart, also after densification ends)
    guard = DivergenceGuard(label, 10 if not quiet else max(10, min(100, opt.densification_interval)),
                            getattr(start_checkpoint, "path", start_checkpoint))
    writer = None  # opt-in: importing TensorBoard costs seconds, and each logged loss waits for the GPU
    if pipe.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # train.py checked that the package is there
        writer = SummaryWriter(dataset.model_path)
    train_cams = scene.getTrainCameras()
    test_cams = scene.getTestCameras()
    vw = opt.view_weight if opt.view_weight >= 0 else (0.6 if opt.views_per_step > 1 else 1.0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    stack, history = [], []
    counts, count_every = [], max(1, opt.iterations // 200)  # [iteration, Gaussians] for the report
    ema = None
    io_seconds = 0.0  # evaluation and saving, left out of ms/step
    timer = PhaseTimer(dev, pipe.profile)
    t0 = time.time()
    bar = tqdm(range(first, opt.iterations + 1), desc=label or "training", disable=quiet, dynamic_ncols=True)
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
        for _ in range(opt.views_per_step):
            if not stack:
                stack = list(train_cams)
                random.shuffle(stack)
            cam = stack.pop()
            bgc = torch.rand(3, device=dev) if opt.random_background else bg
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
            extra = role.step_loss(it, model)
            if extra is not None:
                extra.backward()
                step_loss += extra.detach()
        with timer("optimizer"):
            model.optimizer_step(visible)
        step_loss = step_loss / opt.views_per_step
        ema = step_loss if ema is None else 0.4 * step_loss + 0.6 * ema  # stays on the device: no sync
        if it % guard.every == 0 or it in test_iterations or it in save_iterations or it == opt.iterations:
            loss_now = guard.check(it, model, ema, bar)  # waits for the GPU: only every guard.every steps
            if it % 10 == 0 and not quiet:
                bar.set_postfix(loss=f"{loss_now:.4f}", gaussians=model.num_points)
        if it % count_every == 0 or it == first:
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
            tqdm.write(f"[{label or 'model'} it {it}] {split} PSNR {res['psnr']:.2f} SSIM {res['ssim']:.4f} "
                       f"L1 {res['l1']:.4f} ({model.num_points} Gaussians)")
            if writer is not None:
                writer.add_scalar(f"{label}/{split}_psnr", res["psnr"], it)
        if it in save_iterations:
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
        if it in checkpoint_iterations:  # after this iteration's edits, so a resume continues exactly
            guard.check(it, model, ema, bar)  # densification can overflow (a split of an infinite scale)
            guard.checkpoint = os.path.join(dataset.model_path, f"chkpnt{label}{it}.pth")
            save_checkpoint(guard.checkpoint, model, strategy, role, it)
    bar.close()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.time() - t0
    steps = max(1, opt.iterations - first + 1)
    final_ply = os.path.join(out_dir, f"iteration_{opt.iterations}", "point_cloud.ply")
    if not os.path.isfile(final_ply):
        guard.check(opt.iterations, model, ema)
        model.save_ply(final_ply)
    summary = dict(gaussians=model.num_points, ply_mb=round(os.path.getsize(final_ply) / 1e6, 2), train_seconds=round(wall, 2),
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
    write_json(os.path.join(out_dir, "training_log.json"), dict(summary, gaussian_counts=counts))
    if writer is not None:
        writer.close()
    return summary
