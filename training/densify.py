"""Adaptive density control (3DGS clone / split / prune / opacity reset) as a strategy object.

A strategy is its typed configuration and nothing else: the per-Gaussian statistics (view-space gradient sums,
counts, max screen radii, and whatever a subclass or a role adds) live in a state dict that the training loop
holds (``initialize_state``), that every edit of the model updates in the same call as the parameters and their
Adam moments (GaussianModel.edit_params with ``rows=state``), and that a checkpoint saves.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from scene.gaussian_model import PARAM_NAMES, check_rows
from utils.graphics_utils import quaternion_to_matrix


@dataclass(frozen=True)
class DensifyConfig:
    """What vanilla 3DGS densification reads, taken once from the optimisation flags (:meth:`from_opt`)."""
    extent: float  # scene radius: --percent_dense and --max_world_scale are fractions of it
    densify_from_iter: int
    densify_until_iter: int
    densification_interval: int
    opacity_reset_interval: int  # also when the large-Gaussian prune starts
    densify_grad_threshold: float
    percent_dense: float
    min_opacity: float
    max_screen_size: Optional[float]  # None: no screen-size prune (and no max-radius statistics)
    max_world_scale: float
    opacity_reset: bool = True  # False with --no_opacity_reset (and for the student)
    white_background: bool = False  # a white background also resets opacities at densify_from_iter (graphdeco)
    num_max: float = math.inf  # no clone/split growth at or above this many Gaussians

    @classmethod
    def from_opt(cls, opt, extent, white_background=False, **fields):
        """The config of the flags ``opt`` (OptimizationParams), with ``fields`` overriding any of them."""
        values = dict(extent=extent, densify_from_iter=opt.densify_from_iter,
                      densify_until_iter=opt.densify_until_iter, densification_interval=opt.densification_interval,
                      opacity_reset_interval=opt.opacity_reset_interval,
                      densify_grad_threshold=opt.densify_grad_threshold, percent_dense=opt.percent_dense,
                      min_opacity=opt.min_opacity, max_screen_size=opt.max_screen_size,
                      max_world_scale=opt.max_world_scale, opacity_reset=not opt.no_opacity_reset,
                      white_background=bool(white_background))
        values.update(fields)
        return cls(**values)


def accumulate_grad_norms(state, sum_key, count_key, out):
    """Add the view-space gradient norm of the Gaussians visible in ``out`` (a render whose backward ran) to
    state[sum_key] and count them in state[count_key]. Dense masked updates: boolean indexing would make the host
    wait for the GPU every step."""
    grad = out["viewspace_points"].grad
    if grad is None:
        return
    vis = out["visibility_filter"]
    state[sum_key] += torch.where(vis, grad[:, :2].norm(dim=-1), 0.0)
    state[count_key] += vis


def restart_stats(state):
    """Zero every per-Gaussian statistic of ``state`` in place of the old tensors: after a densification (as
    graphdeco's densification_postfix) and after the student's prunes."""
    for k, t in state.items():
        state[k] = torch.zeros_like(t)


class DensifyStrategy:
    """Vanilla 3DGS densification. Subclasses add statistics and split candidates (:meth:`extra_split_mask`)."""

    def __init__(self, config):
        self.config = config

    def initialize_state(self, n, device):
        """The statistics of ``n`` Gaussians before any view: the state dict the loop holds ([N] each)."""
        return dict(grad_accum=torch.zeros(n, device=device),  # summed view-space gradient norms
                    denom=torch.zeros(n, device=device),  # views that saw each Gaussian
                    max_radii2D=torch.zeros(n, device=device))  # largest screen radius (the screen-size prune)

    def wants_stats(self, iteration):
        """The per-Gaussian stats render() must return this step (render's return_stats)."""
        return ()

    def observe(self, state, out, camera):
        """Per-view hook for strategies that read the per-Gaussian stats of every view."""

    def count_view(self, state, out, camera, want_stats):
        """A view's statistics at once (observe where ``want_stats`` asked the render for any, then update_stats): a
        graphed step's, in its replay (training/graph_step.py); the eager loop calls the two apart."""
        if want_stats:
            self.observe(state, out, camera)
        self.update_stats(state, out)

    def collects(self, iteration):
        """Whether this step's view statistics count (update_stats; observe where wants_stats asks for any)."""
        return iteration < self.config.densify_until_iter

    def update_stats(self, state, out):
        """Accumulate the view-space gradient norm and max radius of one rendered view (in place: a CUDA graph's
        replay may be what runs this, on the tensors it was captured with)."""
        accumulate_grad_norms(state, "grad_accum", "denom", out)
        # only the screen-size prune reads the max radii (a hidden Gaussian's radius is 0: it keeps its maximum)
        if self.config.max_screen_size is not None and out["viewspace_points"].grad is not None:
            m = state["max_radii2D"]
            torch.maximum(m, torch.where(out["visibility_filter"], out["radii"].float(), 0.0), out=m)

    def step(self, model, state, iteration, out, camera, counted=False):
        """Called once per optimizer step (after it) with the last view's render output; ``counted``: its
        statistics were added already (by the graph the step replayed: training/graph_step.py)."""
        c = self.config
        if self.collects(iteration):
            check_rows(state, model.num_points)
            if not counted:
                self.update_stats(state, out)
            if iteration > c.densify_from_iter and iteration % c.densification_interval == 0:
                self.densify_and_prune(model, state, prune_large=iteration > c.opacity_reset_interval)
            if c.opacity_reset and (iteration % c.opacity_reset_interval == 0 or (
                    c.white_background and iteration == c.densify_from_iter)):
                model.reset_opacity()

    # ---- the edits ---------------------------------------------------------------------------
    def extra_split_mask(self, state):
        """Additional Gaussians to split (the student's blur split); None for vanilla 3DGS."""
        return None

    def densify_and_prune(self, model, state, prune_large=False):
        """Clone / split the Gaussians with high view-space gradients, then prune transparent ones and,
        with ``prune_large``, those above --max_world_scale (and --max_screen_size when it is set); the rows of
        ``state`` follow their Gaussians through both edits, then every statistic restarts."""
        c = self.config
        grads = torch.nan_to_num(state["grad_accum"] / state["denom"], nan=0.0)
        n0 = model.num_points
        big = model.get_scaling.max(dim=1).values > c.percent_dense * c.extent
        hot = grads >= c.densify_grad_threshold
        if n0 >= c.num_max:
            hot = torch.zeros_like(hot)
        clone = hot & ~big
        split = hot & big
        extra = self.extra_split_mask(state)
        if extra is not None and n0 < c.num_max:
            split |= extra
        clone_vals = {k: model.params[k].detach()[clone] for k in PARAM_NAMES}
        split_vals = split_values(model, split)
        model.append({k: torch.cat([clone_vals[k], split_vals[k]]) for k in PARAM_NAMES}, rows=state)
        n_new = model.num_points - n0
        # originals that were split go away, as do transparent (and, later, huge) Gaussians
        remove = torch.cat([split, torch.zeros(n_new, dtype=torch.bool, device=split.device)])
        remove |= (model.get_opacity < c.min_opacity).squeeze(1)
        if prune_large:
            if c.max_screen_size is not None:  # (the appended Gaussians' rows are zero)
                remove |= state["max_radii2D"] > c.max_screen_size
            remove |= model.get_scaling.max(dim=1).values > c.max_world_scale * c.extent
        model.prune(remove, rows=state)
        restart_stats(state)
        return dict(cloned=int(clone.sum()), split=int(split.sum()), pruned=int(remove.sum()))


def split_values(model, mask, n=2):
    """Raw parameters of ``n`` children per masked Gaussian: positions sampled from the Gaussian,
    scales divided by 0.8 n (1.6 for n = 2), everything else copied."""
    p = {k: model.params[k].detach()[mask] for k in PARAM_NAMES}
    if p["xyz"].shape[0] == 0:
        return p
    stds = torch.exp(p["scaling"]).repeat(n, 1)
    samples = torch.normal(torch.zeros_like(stds), stds)
    rots = quaternion_to_matrix(p["rotation"]).repeat(n, 1, 1)
    out = {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in p.items()}
    out["xyz"] = (rots @ samples[..., None]).squeeze(-1) + out["xyz"]
    out["scaling"] = torch.log(stds / (0.8 * n))
    return out
