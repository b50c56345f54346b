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
from scene.gaussian_model import check_rows
from training.densify import DensifyConfig, DensifyStrategy
from training.graph_step import (
    GraphCaptureError, GraphedStep, graph_flag_conflict, graph_ineligible, graphs_wanted, without_graph,
)
from training.optim import load_optimizer_state
from training.pair_budget import PairBudget, QueuedRenders, capacity_mode_applies
from utils.errors import NonFiniteError, UserError
from utils.general_utils import log_linear
from utils.image_utils import psnr
from utils.loss_utils import backward_weighted, photometric_loss, ssim
from utils.phase_timer import PhaseTimer
from utils.system_utils import atomic_path, write_json


class Role:
    """Hooks a model variant fills in; the defaults give vanilla 3DGS (G_std).

    ``state`` is the per-Gaussian statistics dict the loop holds (the strategy's rows and the role's own, from
    :meth:`initialize_state`): every edit of the model carries its rows, and checkpoints save it.
    """
    pairs = None  # --capacity_mode: the loop's PairBudget, for the renders of step_loss
    graphed = None  # --cuda_graphs: the loop's GraphedStep of the model's step (its add_view, for step_loss)

    def make_strategy(self, opt, extent, white_background):
        return DensifyStrategy(DensifyConfig.from_opt(opt, extent, white_background))

    def initialize_state(self, n, device):
        """The role's own per-Gaussian statistics of ``n`` Gaussians ([N] tensors), added to the strategy's."""
        return {}

    def before_step(self, it, model, state):
        """Called before the views of a step are rendered (noise events)."""

    def drops(self, it):
        """This step's training renders drop Gaussians (G_drop's dropout iterations): render_opacity draws the
        opacities they train with, so the step runs eagerly where the model's other steps replay a CUDA graph."""
        return False

    def render_opacity(self, it, model):
        """Activated opacities to train with this step (dropout, where :meth:`drops`), or None for the model's
        own."""
        return None

    def view_target(self, it, camera, device):
        """(image, weight): a second target for this training view's image loss (the student's
        mean teacher render; float32 or half [3, H, W]), or None."""
        return None

    def step_loss(self, it, model):
        """Extra loss once per step (structure loss), or None; the loop back-propagates it unless it has no
        autograd graph (a term whose gradients a graph's replay added: ``self.graphed.add_view``). A render it
        makes goes through ``self.pairs`` when the loop set one (--capacity_mode: a PairBudget)."""
        return None

    def update_stats(self, it, state, out):
        """Called after the optimizer step, before densification edits the model, with the last view's render
        output (statistics of the role's own rows)."""

    def after_step(self, it, model, state, out):
        """Called after the optimizer step and densification with the last view's render output
        (pruning schedules)."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@torch.no_grad()
def evaluate(model, cameras, pipe, bg, limit=None):
    """Mean PSNR / SSIM / L1 over ``cameras`` (at most ``limit`` of them, evenly spaced). The renders are queued
    (QueuedRenders) and the scores read back once, at the end; a view whose render overflowed is scored again."""
    if not cameras:
        return None
    if limit and len(cameras) > limit:
        step = len(cameras) / limit
        cameras = [cameras[int(i * step)] for i in range(limit)]
    queue = QueuedRenders(model.device, pipe, len(cameras))

    def scores(img, cam):  # [PSNR, SSIM, L1] of one view, on the device
        img = img.clamp(0, 1)
        gt = cam.original_image(img.device)
        return torch.stack([psnr(img, gt).reshape(()), ssim(img, gt).reshape(()), (img - gt).abs().mean()])

    rows = [scores(queue.render(i, cam, model, pipe, bg)[0]["render"], cam) for i, cam in enumerate(cameras)]
    for i in queue.overflowed():
        rows[i] = scores(render(cameras[i], model, pipe, bg)["render"], cameras[i])
    ps, ss, ls = zip(*torch.stack(rows).tolist())
    n = len(ps)
    return dict(psnr=sum(ps) / n, ssim=sum(ss) / n, l1=sum(ls) / n, views=n)


# the checkpoint layout; a checkpoint of another version is refused with one line (never half-loaded)
# version 3 (the strategy state as one dict of per-Gaussian rows) also reads version 2 (statistics split between
# the strategy and G_perb's role, converted on load)
CHECKPOINT_VERSION = 3
READABLE_VERSIONS = (2, 3)
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


def save_checkpoint(path, model, stats, role, iteration, meta=None, loop=None):
    """Write everything a resume needs to continue exactly after ``iteration`` (atomically): parameters, optimizer,
    the strategy state ``stats`` (per-Gaussian statistics), role state, the loop's state (camera stack, running
    loss, logs) and the RNGs.
    ``meta``: which model this is (index in the four-model run or None, label, last iteration)."""
    cpu = lambda v: v.detach().cpu() if torch.is_tensor(v) else v  # noqa: E731
    state = dict(version=CHECKPOINT_VERSION, iteration=iteration, model=dict(meta or {}),
                 params={k: v.detach() for k, v in model.params.items()},
                 optimizer=model.optimizer.state_dict(), active_sh_degree=model.active_sh_degree,
                 spatial_lr_scale=model.spatial_lr_scale, role=role.state_dict(),
                 strategy={k: cpu(v) for k, v in stats.items()}, loop={k: cpu(v) for k, v in (loop or {}).items()},
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
    if version not in READABLE_VERSIONS:
        seen = version or "none: written before versioned checkpoints"
        raise UserError(f"{path} is a checkpoint of another version ({seen}; this train.py reads versions "
                        f"{' and '.join(map(str, READABLE_VERSIONS))}): it cannot be resumed; "
                        f"train that model again, or resume it with the train.py that wrote it")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing or not isinstance(state["loop"], dict) or not isinstance(state["model"], dict):
        raise UserError(f"{path} has another layout than a version {version} checkpoint (missing "
                        f"{', '.join(missing) or 'loop/model dictionaries'}): it cannot be resumed")
    return Checkpoint(path, state)


def checkpoint_sh_degree(state):
    """The maximum SH degree of a checkpoint's model (from its f_rest width)."""
    k = state["params"]["f_rest"].shape[1] + 1
    return int(round(k ** 0.5)) - 1


def _stats_of(state, fresh, role_state):
    """The strategy state a checkpoint saved, checked against ``fresh`` (the run's initial state: its keys and
    row count). A version 2 checkpoint kept G_perb's statistics in its role as grad/count and could hold rows
    of a stale count, or None, that the next step replaced by zeros: they are converted the same way."""
    saved = dict(state["strategy"])
    if state["version"] == 2:
        saved.update(perturb_grad=role_state.pop("grad", None), perturb_count=role_state.pop("count", None))
        n = next(iter(fresh.values())).shape[0]
        saved = {k: v if torch.is_tensor(v) and v.shape[0] == n else fresh[k] for k, v in saved.items() if k in fresh}
    if set(saved) != set(fresh):
        raise ValueError(f"its strategy state holds {', '.join(sorted(saved))}, this run's "
                         f"{', '.join(sorted(fresh))} (another model of the four-model run or other flags)")
    return {k: saved[k].to(fresh[k].device) for k in fresh}


def load_checkpoint(path, model, role, opt, initial_stats):
    """Restore a checkpoint (a path, or a Checkpoint from read_checkpoint) into model and role and the random
    generators; ``initial_stats(n, device)`` makes the run's initial strategy state (what the saved one must
    match). Returns (its iteration, the loop state it saved, the strategy state)."""
    if isinstance(path, Checkpoint):
        path, state = path
    else:
        state = read_checkpoint(path).state
    try:
        model._set(*(state["params"][k] for k in ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")))
        model.spatial_lr_scale = state["spatial_lr_scale"]
        model.active_sh_degree = state["active_sh_degree"]
        model.training_setup(opt)
        load_optimizer_state(model.optimizer, state["optimizer"])
        on_device = lambda v: v.to(model.device) if torch.is_tensor(v) else v  # noqa: E731 (read on the CPU)
        role_state = dict(state["role"])
        stats = _stats_of(state, initial_stats(model.num_points, model.device), role_state)
        check_rows(stats, model.num_points)
        role.load_state_dict({k: on_device(v) for k, v in role_state.items()})
        loop = {k: on_device(v) for k, v in state["loop"].items()}
        set_rng_state(state["rng"])
    except (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError, AssertionError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise UserError(f"cannot resume from {path} ({exc.__class__.__name__}: {detail}); it must be a "
                        f"chkpnt<it>.pth written by train.py for this model with the same settings")
    return state["iteration"], loop, stats


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


class _Run:
    """What train_model's pieces share: the run's fixed settings and the loop's running values (the camera stack,
    the running loss, the logs, the strategy state), which a checkpoint saves."""

    def __init__(self, scene, model, opt, pipe, dataset, out_dir, role, label, quiet):
        self.scene, self.model, self.opt, self.pipe, self.dataset = scene, model, opt, pipe, dataset
        self.out_dir, self.role, self.label, self.quiet = out_dir, role, label, quiet
        self.dev = model.device
        self.bg = background(dataset.white_background, self.dev)
        self.strategy = role.make_strategy(opt, scene.cameras_extent, dataset.white_background)
        self.train_cams, self.test_cams = scene.getTrainCameras(), scene.getTestCameras()
        self.view_weight = opt.view_weight if opt.view_weight is not None else (0.6 if opt.views_per_step > 1 else 1.0)
        self.stack, self.history, self.ema = [], [], None
        self.counts, self.count_every = [], max(1, opt.iterations // 200)  # [iteration, Gaussians] for the report
        self.stats = None  # the strategy state: per-Gaussian statistics every edit of the model carries
        self.test_iterations = self.save_iterations = self.checkpoint_iterations = ()
        self.first, self.resumed = 1, False  # the first iteration to train; whether it continues a checkpoint
        self.every_s, self.last_auto = 0.0, 0.0  # automatic checkpoints: the cadence, the last one's time
        self.writer = self.guard = self.timer = self.bar = None
        self.sync, self.lead = None, True  # data-parallel: the StepSync; whether this rank writes files
        self.io_seconds = 0.0  # evaluation and saving, left out of ms/step
        self.graphed = None  # --cuda_graphs: the GraphedStep of an eligible model
        self.graph_failure = None  # --cuda_graphs auto: what the GraphedStep had done when a capture failed
        self.pairs = None  # --capacity_mode: the PairBudget of the eager renders

    def initial_stats(self, n, device):
        """The strategy's and the role's statistics of ``n`` Gaussians before any view."""
        return {**self.strategy.initialize_state(n, device), **self.role.initialize_state(n, device)}

    def loop_state(self):
        return dict(stack=[c.uid for c in self.stack], ema=self.ema, history=self.history, counts=self.counts)


def _start(run, start_checkpoint):
    """Set up the optimizer and the strategy state, or restore both and the loop's state from
    ``start_checkpoint``; returns the first iteration to train."""
    model = run.model
    if model.optimizer is None:
        model.training_setup(run.opt)
    if not start_checkpoint:
        run.stats = run.initial_stats(model.num_points, run.dev)
        return 1
    it, resumed, run.stats = load_checkpoint(start_checkpoint, model, run.role, run.opt, run.initial_stats)
    # the loop's own state: the remaining shuffled cameras, the running loss, the logs so far
    by_uid = {c.uid: c for c in run.train_cams}
    if any(u not in by_uid for u in resumed["stack"]):
        raise UserError(f"cannot resume from {getattr(start_checkpoint, 'path', start_checkpoint)}: its camera "
                        f"order names training views this scene does not have (another scene or --eval split)")
    run.stack = [by_uid[u] for u in resumed["stack"]]
    run.ema, run.history, run.counts = resumed["ema"], list(resumed["history"]), list(resumed["counts"])
    if torch.is_tensor(run.ema):  # (read onto the CPU)
        run.ema = run.ema.to(run.dev)
    return it + 1


def _drop_graph(run, it, error):
    """A capture failed: under --cuda_graphs on, stop with one line; under auto, say so once and train eagerly."""
    name = run.label or "model"
    if run.pipe.cuda_graphs == "on":
        raise UserError(f"--cuda_graphs on: capturing {name}'s training step as a CUDA graph failed at iteration "
                        f"{it} ({error}): pass --cuda_graphs off (or auto, which falls back to eager steps)")
    if run.lead:
        tqdm.write(f"[{name}] --cuda_graphs auto: capturing the training step failed at iteration {it} ({error}); "
                   f"eager steps from here")
    run.graph_failure = dict(run.graphed.summary(), failed_at=it, error=str(error))
    run.graphed = run.role.graphed = None


def _tally(run, cam, want_stats, out, loss, step_loss, visible, counted=False):
    """A stepped view's loss and visible Gaussians added to the step's (None before the first view: the step's loss
    is then this view's tensor, a graph's own buffer, which nothing changes in place), its render output given to the
    strategy's per-view statistics unless its graph ``counted`` them: (step loss, visible)."""
    if want_stats and not counted:
        run.strategy.observe(run.stats, out, cam)
    vis = out["visibility_filter"]
    return loss if step_loss is None else step_loss + loss, vis if visible is None else visible | vis


def _render_views(run, it, want_stats):
    """Render, score and back-propagate the step's views (data-parallel: this rank's share); returns (last render
    output, its camera, summed loss, Gaussians seen by any view: sparse_adam updates only these, whether the
    strategy's statistics of the step are counted). With --cuda_graphs, a view that qualifies
    (training/graph_step.py) replays a graph instead: the step's own for the first view this rank renders, the
    further views' graph (which adds to those gradients) for the others. With one view a step and one process the
    step's graph also adds the view's statistics, in place of the strategy's eager calls."""
    model, opt, role, timer, dev = run.model, run.opt, run.role, run.timer, run.dev
    step_loss = None  # (a zero made each step cost a small model's host more than the addition it spared)
    visible = None
    out = None
    counted = False
    stats = ((run.strategy, run.stats) if opt.views_per_step == 1 and run.sync is None and run.strategy.collects(it)
             else None)
    if run.pairs is not None:
        run.pairs.fit(model.num_points)  # (after the last step's densification)
    for j in range(opt.views_per_step):
        if not run.stack:
            run.stack = list(run.train_cams)
            random.shuffle(run.stack)
        cam = run.stack.pop()
        bgc = torch.rand(3, device=dev) if opt.random_background else run.bg
        mine = run.sync is None or run.sync.renders(j)  # (data-parallel: this rank renders its share of the views)
        if run.graphed is not None and mine:
            done = None
            if not run.graphed.applies(cam) or role.drops(it):
                pass  # (this view's depth map or dropout: rendered below)
            elif visible is None:  # (the step's first view here: its graph writes the gradients)
                try:
                    done = run.graphed.step(cam, want_stats, role.view_target(it, cam, dev), bgc, stats)
                    counted = stats is not None  # (step returns or raises)
                except GraphCaptureError as e:
                    _drop_graph(run, it, e)  # (then this view renders eagerly below)
            else:  # (a further view adds to them; eagerly, below, where the step's first view was eager)
                done = run.graphed.further_view(cam, want_stats, role.view_target(it, cam, dev), bgc)
            if done is not None:  # (its render output is the graph's: read before the next replay)
                out, loss = done
                step_loss, visible = _tally(run, cam, want_stats, out, loss, step_loss, visible, counted)
                continue
            if run.graphed is not None:
                run.graphed.ran_eagerly()
        opacity = role.render_opacity(it, model)  # (G_drop's random mask of this view)
        if not mine:  # (after the draws: every rank's RNG stays in step, and each view gets the draws it gets in one
            continue  # process; a view that can take the graph draws nothing)
        with timer("render"):
            out = (run.pairs.render if run.pairs else render)(cam, model, run.pipe, bgc, opacity=opacity,
                                                              return_stats=want_stats)
        with timer("loss"):
            gt = cam.original_image(dev)
            loss = photometric_loss(out["render"], gt, opt.lambda_dssim, role.view_target(it, cam, dev))
            if cam.depth is not None and cam.depth_reliable:
                w = log_linear(opt.depth_l1_weight_init, opt.depth_l1_weight_final, it, opt.iterations)
                loss = loss + w * (out["depth"] - cam.depth.to(dev)).abs().mean()
        with timer("backward"):
            backward_weighted(loss, run.view_weight)
        # (no autograd graph kept past the view: the further views' graph captured later in this step would meet
        # its parameters' AccumulateGrad nodes and fail, see without_graph)
        loss = loss.detach()
        with timer("statistics"):
            step_loss, visible = _tally(run, cam, want_stats, out, loss, step_loss, visible)
            if run.graphed is not None:  # (returned and kept past the next step: with its autograd graph, the next
                out = without_graph(out)  # capture after this eager step (a depth map, a dropout) would fail)
    if run.pairs is not None:
        run.pairs.poll(model.num_points)  # (the size these renders had)
    if step_loss is None:  # (data-parallel: this rank rendered none of the step's views)
        step_loss = torch.zeros((), device=dev)
    return out, cam, step_loss, visible, counted


def _report(run, it, step_loss):
    """The divergence check, progress bar, Gaussian counts, TensorBoard, test evaluation and PLY saves of
    iteration ``it`` (time spent evaluating and saving goes to run.io_seconds)."""
    model, opt, guard, label = run.model, run.opt, run.guard, run.label
    if it % guard.every == 0 or it in run.test_iterations or it in run.save_iterations or it == opt.iterations:
        loss_now = guard.check(it, model, run.ema, run.bar)  # waits for the GPU: only every guard.every steps
        if it % 10 == 0 and not run.quiet:
            run.bar.set_postfix(loss=f"{loss_now:.4f}", gaussians=model.num_points)
    if it % run.count_every == 0 or (it == run.first and not run.resumed):
        run.counts.append([it, model.num_points])
    if it % 10 == 0 and run.writer is not None:
        run.writer.add_scalar(f"{label}/loss", float(step_loss), it)
        run.writer.add_scalar(f"{label}/gaussians", model.num_points, it)
    t_io = time.time()
    if it in run.test_iterations:
        res = (evaluate(model, run.test_cams, run.pipe, run.bg)
               or evaluate(model, run.train_cams, run.pipe, run.bg, limit=8))
        split = "test" if run.test_cams else "train"
        res.update(iteration=it, split=split, gaussians=model.num_points)
        run.history.append(res)
        if run.lead:
            tqdm.write(f"[{label or 'model'} it {it}] {split} PSNR {res['psnr']:.2f} SSIM {res['ssim']:.4f} "
                       f"L1 {res['l1']:.4f} ({model.num_points} Gaussians)")
        if run.writer is not None:
            run.writer.add_scalar(f"{label}/{split}_psnr", res["psnr"], it)
    if it in run.save_iterations and run.lead:
        model.save_ply(os.path.join(run.out_dir, f"iteration_{it}", "point_cloud.ply"))
        guard.saved = it
    run.io_seconds += time.time() - t_io


def _checkpoint_if_due(run, it, meta):
    """Write chkpnt<label><it>.pth at --checkpoint_iterations, and an automatic one after a signal or when the
    time cadence is due; returns the signal number (or None). The signal flag is a Python value and the cadence
    reads the wall clock: neither waits for the device."""
    signum = STOP["signal"]
    auto = signum is not None or (run.every_s > 0 and it < run.opt.iterations
                                  and time.time() - run.last_auto >= run.every_s)
    if not run.lead or (it not in run.checkpoint_iterations and not auto):
        return signum
    t_io = time.time()
    run.guard.check(it, run.model, run.ema, run.bar)  # densification can overflow (a split of an infinite scale)
    for name in ([checkpoint_name(run.label, it)] if it in run.checkpoint_iterations else []) + (
            [checkpoint_name(run.label, it, auto=True)] if auto else []):
        run.guard.checkpoint = os.path.join(run.dataset.model_path, name)
        save_checkpoint(run.guard.checkpoint, run.model, run.stats, run.role, it, meta, run.loop_state())
    if auto:
        prune_auto_checkpoints(run.dataset.model_path, run.label, os.path.basename(run.guard.checkpoint))
        run.last_auto = time.time()
    run.io_seconds += time.time() - t_io
    return signum


def _finish(run, t_enter, t0):
    """Save the final PLY if the loop did not, write training_log.json and return the summary."""
    model, opt, dev = run.model, run.opt, run.dev
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.time() - t0
    steps = max(1, opt.iterations - run.first + 1)
    final_ply = os.path.join(run.out_dir, f"iteration_{opt.iterations}", "point_cloud.ply")
    if run.lead and not os.path.isfile(final_ply):
        run.guard.check(opt.iterations, model, run.ema)
        model.save_ply(final_ply)
    ply_mb = round(os.path.getsize(final_ply) / 1e6, 2) if run.lead else None  # (the writer's file)
    summary = dict(gaussians=model.num_points, ply_mb=ply_mb,
                   train_seconds=round(wall, 2),
                   setup_seconds=round(t0 - t_enter, 2),  # optimizer, logging, checkpoint: before the loop
                   ms_per_step=round(1000 * (wall - run.io_seconds) / steps, 2),
                   peak_memory_gib=round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 3) if dev.type == "cuda"
                   else None, history=run.history)
    graphs = run.graphed.summary() if run.graphed is not None else run.graph_failure
    if graphs is not None:
        summary["cuda_graphs"] = graphs
    if run.pairs is not None:
        summary["capacity_mode"] = run.pairs.summary()
    phases = run.timer.summary()
    if phases:
        summary["phase_ms"] = phases
        tqdm.write(f"[{run.label or 'model'}] mean ms per step: "
                   + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    if run.history:
        summary.update({k: run.history[-1][k] for k in ("psnr", "ssim", "split")})
    if run.lead:
        write_json(os.path.join(run.out_dir, "training_log.json"), dict(summary, gaussian_counts=run.counts))
    if run.writer is not None:
        run.writer.close()
    return summary


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
    run = _Run(scene, model, opt, pipe, dataset, out_dir, role or Role(), label, quiet)
    run.sync, run.lead = sync, sync is None or sync.is_writer
    run.test_iterations, run.save_iterations = test_iterations, save_iterations
    run.checkpoint_iterations = checkpoint_iterations
    run.first = _start(run, start_checkpoint)
    run.resumed = bool(start_checkpoint)
    role, strategy, dev = run.role, run.strategy, run.dev
    meta = dict(index=stage, label=label, iterations=opt.iterations)
    # checks where the loop reads values anyway: the progress bar every 10 steps, else densification's interval
    # (at most 100 steps apart, also after densification ends)
    run.guard = DivergenceGuard(label, 10 if not quiet else max(10, min(100, opt.densification_interval)),
                                getattr(start_checkpoint, "path", start_checkpoint))
    # opt-in: importing TensorBoard costs seconds, and each logged loss waits for the GPU
    if pipe.tensorboard and run.lead:
        from torch.utils.tensorboard import SummaryWriter  # train.py checked that the package is there
        run.writer = SummaryWriter(dataset.model_path)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    run.every_s, run.last_auto = 60.0 * checkpoint_every_minutes, time.time()
    run.timer = timer = PhaseTimer(dev, pipe.profile)
    if graphs_wanted(pipe, dev):  # (train.py refuses the flags that rule out every model under "on")
        why_not = graph_flag_conflict(pipe) or graph_ineligible(run.train_cams)
        if why_not is None:
            run.graphed = role.graphed = GraphedStep(model, opt, pipe, run.bg, run.view_weight)
        elif run.lead and pipe.cuda_graphs == "on":  # (auto takes the graph where it can, silently)
            tqdm.write(f"[{label or 'model'}] --cuda_graphs: eager steps ({why_not})")
    if capacity_mode_applies(pipe, dev):
        run.pairs = role.pairs = PairBudget(dev)
    t0 = time.time()
    run.bar = tqdm(range(run.first, opt.iterations + 1), desc=label or "training", disable=quiet or not run.lead,
                   dynamic_ncols=True)
    for it in run.bar:
        if step_hook is not None:
            step_hook(it)
        model.update_learning_rate(it)
        if it % opt.sh_increase_interval == 0:
            model.oneup_sh_degree()
        with timer("role events"):
            role.before_step(it, model, run.stats)
        out, cam, step_loss, visible, counted = _render_views(run, it, strategy.wants_stats(it))
        with timer("role events"):
            extra = role.step_loss(it, model)  # (on every rank: its random draws keep the ranks in step)
            if extra is not None and run.lead:  # (added once: the sum over the ranks has it)
                if extra.requires_grad:  # (else a graph's replay added its gradients)
                    extra.backward()
                step_loss = step_loss + extra.detach()  # (not in place: step_loss may be a graph's buffer)
            # (its autograd graph, kept to the next step, would hold the parameters' AccumulateGrad nodes made on
            # this stream: a capture's backward that meets them refuses the stale stream)
            extra = None
        if sync is not None:
            with timer("all-reduce"):
                step_loss, visible, out = sync.reduce_step(model, run.stats, step_loss, visible, out)
        with timer("optimizer"):
            model.optimizer_step(visible)
        if opt.views_per_step > 1:
            step_loss = step_loss / opt.views_per_step
        # 0.4 x this step's loss + 0.6 x the last: one launch, on the device (no sync); a copy at first, as
        # step_loss may be a graph's buffer, which the next replay overwrites
        run.ema = step_loss.clone() if run.ema is None else torch.lerp(run.ema, step_loss, 0.4)
        _report(run, it, step_loss)
        # densification and role events come after the report, so a test at an opacity-reset
        # iteration sees the trained model (as graphdeco's report precedes its densification); none
        # after the last iteration: its new Gaussians would never be trained, and the saved model and
        # the reported count are the evaluated model's
        with torch.no_grad():
            with timer("role events"):
                role.update_stats(it, run.stats, out)
            if it < opt.iterations:
                with timer("densification"):
                    strategy.step(model, run.stats, it, out, cam, counted)
            with timer("role events"):
                role.after_step(it, model, run.stats, out)
        if model.num_points == 0:  # (a shape: no wait) every later step would fail somewhere less clear
            run.bar.close()
            raise UserError(f"{label or 'model'}: no Gaussians left after iteration {it}: the prunes removed every "
                            f"one (too transparent, too large or of no importance); training stopped; check the "
                            f"scene's cameras and scale, or the prune flags (--min_opacity, --max_world_scale, "
                            f"--max_screen_size, --student_max_ratio)")
        timer.end_step()
        # after this iteration's edits, so a resume continues exactly
        signum = _checkpoint_if_due(run, it, meta)
        if signum is not None:
            run.bar.close()
            raise Interrupted(signum, run.guard.checkpoint, label, it)
    run.bar.close()
    return _finish(run, t_enter, t0)
