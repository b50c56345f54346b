"""Adaptive density control (3DGS clone / split / prune / opacity reset) as a strategy object.

The strategy keeps its running statistics (view-space gradient sums, counts, max screen radii) and
edits the model through GaussianModel.append / prune, which keep the Adam state aligned.
"""
import torch

from scene.gaussian_model import PARAM_NAMES
from utils.graphics_utils import quaternion_to_matrix


class DensifyStrategy:
    """Vanilla 3DGS densification. Subclasses add split candidates via :meth:`extra_split_mask`."""

    def __init__(self, opt, extent, white_background=False):
        self.opt = opt
        self.extent = extent
        self.white_background = white_background
        self.opacity_reset = not opt.no_opacity_reset  # the student turns it off too
        self.num_max = float("inf")  # no clone/split growth at or above this many Gaussians
        self.grad_accum = self.denom = self.max_radii2D = None

    def wants_stats(self, iteration):
        """The per-Gaussian stats render() must return this step (render's return_stats)."""
        return ()

    def observe(self, model, out, camera):
        """Per-view hook for strategies that read the per-Gaussian stats of every view."""

    def reset_stats(self, n, device):
        self.grad_accum = torch.zeros(n, device=device)
        self.denom = torch.zeros(n, device=device)
        self.max_radii2D = torch.zeros(n, device=device)

    # the running statistics a checkpoint keeps (a resume mid-densification continues exactly)
    STATE = ("grad_accum", "denom", "max_radii2D")

    def state_dict(self):
        return {k: getattr(self, k) for k in self.STATE}

    def load_state_dict(self, state):
        missing = [k for k in self.STATE if k not in state]
        if missing:
            raise KeyError(f"densification statistics {', '.join(missing)}")
        for k in self.STATE:
            setattr(self, k, state[k])

    def _ensure(self, model):
        if self.grad_accum is None or self.grad_accum.shape[0] != model.num_points:
            self.reset_stats(model.num_points, model.device)

    def update_stats(self, model, out, camera):
        """Accumulate the view-space gradient norm and max radius of one rendered view."""
        self._ensure(model)
        vis = out["visibility_filter"]
        grad = out["viewspace_points"].grad
        if grad is None:
            return
        # dense masked updates: boolean indexing would make the host wait for the GPU every step
        self.grad_accum += torch.where(vis, grad[:, :2].norm(dim=-1), 0.0)
        self.denom += vis
        if self.opt.max_screen_size is not None:  # only the screen-size prune reads it
            self.max_radii2D = torch.where(vis, torch.maximum(self.max_radii2D, out["radii"].float()),
                                           self.max_radii2D)

    def step(self, model, iteration, out, camera):
        """Called once per optimizer step (after it) with the last view's render output."""
        o = self.opt
        if iteration < o.densify_until_iter:
            self.update_stats(model, out, camera)
            if iteration > o.densify_from_iter and iteration % o.densification_interval == 0:
                self.densify_and_prune(model, prune_large=iteration > o.opacity_reset_interval)
            if self.opacity_reset and (iteration % o.opacity_reset_interval == 0 or (
                    self.white_background and iteration == o.densify_from_iter)):
                model.reset_opacity()

    # ---- the edits ---------------------------------------------------------------------------
    def extra_split_mask(self, model):
        """Additional Gaussians to split (the student's blur split); None for vanilla 3DGS."""
        return None

    def densify_and_prune(self, model, prune_large=False):
        """Clone / split the Gaussians with high view-space gradients, then prune transparent ones and,
        with ``prune_large``, those above --max_world_scale (and --max_screen_size when it is set)."""
        self._ensure(model)
        o = self.opt
        grads = torch.nan_to_num(self.grad_accum / self.denom, nan=0.0)
        n0 = model.num_points
        max_scale = model.get_scaling.max(dim=1).values
        big = max_scale > o.percent_dense * self.extent
        hot = grads >= o.densify_grad_threshold
        if n0 >= self.num_max:
            hot = torch.zeros_like(hot)
        clone = hot & ~big
        split = hot & big
        extra = self.extra_split_mask(model)
        if extra is not None and n0 < self.num_max:
            split |= extra
        clone_vals = {k: model.params[k].detach()[clone] for k in PARAM_NAMES}
        split_vals = split_values(model, split)
        model.append({k: torch.cat([clone_vals[k], split_vals[k]]) for k in PARAM_NAMES})
        n_new = model.num_points - n0
        # originals that were split go away, as do transparent (and, later, huge) Gaussians
        remove = torch.cat([split, torch.zeros(n_new, dtype=torch.bool, device=split.device)])
        remove |= (model.get_opacity < o.min_opacity).squeeze(1)
        if prune_large:
            if o.max_screen_size is not None:
                radii = torch.cat([self.max_radii2D, torch.zeros(n_new, device=model.device)])
                remove |= radii > o.max_screen_size
            remove |= model.get_scaling.max(dim=1).values > o.max_world_scale * self.extent
        model.prune(remove)
        self.reset_stats(model.num_points, model.device)
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
