"""Optimizers for Gaussian parameters: Adam over all Gaussians, or over the Gaussians seen this step.

On CUDA, ``GaussianAdam`` updates every parameter group in one kernel launch (the per-step fixed cost of
torch's fused Adam is one launch and a step-count update per group); on the CPU it runs its PyTorch specification
(``adam_rows_torch``, torch's Adam to float rounding: tests/test_optim.py), and only a GPU without our extension
gets torch's fused Adam.

``--optimizer_type sparse_adam`` (graphdeco's name) updates only the rows (Gaussians) that were visible
in at least one view of the step; the others keep their value and Adam moments, so unseen Gaussians
are not dragged by stale momentum and the step costs less. It keeps the state layout of torch's Adam
(exp_avg, exp_avg_sq, step), so densification edits and checkpoints treat both alike.

``GaussianAdam`` is not a ``torch.optim.Optimizer``: the first of those a process makes imports torch._dynamo
(a tiny four-model run on a 2-core CPU machine took 6-7 s instead of 9-11 s without it), so no run with the default
optimizer pays it.
It has that class's ``param_groups`` and ``state`` and writes and reads its ``state_dict`` format, so
checkpoints of either optimizer load into the other.
"""
from collections import defaultdict
from itertools import chain

import torch

from gaussian_renderer import cuda_extension

OPTIMIZER_TYPES = ("default", "sparse_adam")


def adam_rows_torch(param, grad, exp_avg, exp_avg_sq, visible, lr, beta1, beta2, eps, step):
    """The specification of the CUDA kernel ``adam_rows_``: Adam on the visible rows, in place."""
    rows = visible.reshape(-1, *([1] * (param.dim() - 1)))
    m = torch.where(rows, beta1 * exp_avg + (1 - beta1) * grad, exp_avg)
    v = torch.where(rows, beta2 * exp_avg_sq + (1 - beta2) * grad * grad, exp_avg_sq)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    update = (lr / bc1) * m / (v.sqrt() / bc2 ** 0.5 + eps)
    param.sub_(torch.where(rows, update, torch.zeros_like(update)))
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)


class GaussianAdam:
    """Adam over the Gaussian parameter groups (one tensor each). On CUDA, one kernel launch updates
    every group (torch's fused Adam launches per group and keeps per-group step tensors); elsewhere the
    PyTorch specification ``adam_rows_torch``. ``step(visible)`` updates only the visible rows."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-15):
        self.defaults = dict(lr=lr, betas=betas, eps=eps)
        self.param_groups = [{**self.defaults, **group, "params": list(group["params"])} for group in params]
        self.state = defaultdict(dict)  # parameter -> {"step" (an int), "exp_avg", "exp_avg_sq"}
        self._every_row = None  # (adam_multi_'s "every row" mask, made once)

    def state_dict(self):
        """torch.optim.Optimizer's format: the state by parameter index (in group order), the groups' settings
        with their parameters' indices (tensors by reference, as torch's)."""
        index = {id(p): i for i, p in enumerate(chain.from_iterable(g["params"] for g in self.param_groups))}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        # (the step count as torch's: a float CPU tensor; the moments by reference)
        return dict(state={index[id(p)]: {**st, "step": torch.tensor(float(st["step"]))} if "step" in st else st
                           for p, st in self.state.items()}, param_groups=groups)

    def load_state_dict(self, state_dict):
        """Read torch.optim.Optimizer's format (ours, or torch's Adam's): the moments onto their parameter's device
        and dtype, the step counts as they are; the groups' saved settings."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("loaded state dict has a different number of parameter groups or parameters")
        params = dict(zip(chain.from_iterable(s["params"] for s in saved),
                          chain.from_iterable(g["params"] for g in self.param_groups)))
        self.state = defaultdict(dict)
        for i, st in state_dict["state"].items():
            p = params[i]
            self.state[p] = {k: (int(v) if k == "step" else v if not torch.is_tensor(v) else
                                 v.to(device=p.device, dtype=p.dtype if v.is_floating_point() else v.dtype))
                             for k, v in st.items()}
        self.param_groups = [{**s, "params": g["params"]} for s, g in zip(saved, self.param_groups)]

    @torch.no_grad()
    def step(self, visible=None):
        live = []  # (param, state, group) of the parameters that have a gradient this step
        for group in self.param_groups:
            (p,) = group["params"]
            if p.grad is None:
                continue
            st = self.state[p]
            if not st:
                st["step"] = 0
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            # a Python int (state_dict() gives torch's tensor): a CPU tensor's += and int() cost the host ~10 us a
            # group each, the most of a small model's step, whose GPU then waits for the host
            st["step"] += 1
            live.append((p, st, group))
        if not live:
            return
        (beta1, beta2), eps = live[0][2]["betas"], live[0][2]["eps"]
        dev = live[0][0].device
        ext = cuda_extension() if dev.type == "cuda" else None
        if ext and hasattr(ext._C, "adam_multi_"):
            if visible is None:
                if self._every_row is None or self._every_row.device != dev:
                    self._every_row = torch.empty(0, dtype=torch.bool, device=dev)  # (empty: every row)
                visible = self._every_row
            ext._C.adam_multi_([p.data for p, _, _ in live], [p.grad.contiguous() for p, _, _ in live],
                               [st["exp_avg"] for _, st, _ in live], [st["exp_avg_sq"] for _, st, _ in live],
                               visible.contiguous(), [g["lr"] for _, _, g in live], [st["step"] for _, st, _ in live],
                               beta1, beta2, eps)
            return
        for p, st, group in live:
            rows = visible if visible is not None else torch.ones(p.shape[0], dtype=torch.bool, device=p.device)
            args = (p.grad.contiguous(), st["exp_avg"], st["exp_avg_sq"], rows, group["lr"], beta1, beta2, eps,
                    st["step"])
            if ext:
                ext._C.adam_rows_(p.data, *args)
            else:
                adam_rows_torch(p.data, *args)


class SparseGaussianAdam(GaussianAdam):
    """Adam whose step(visible) updates only rows with visible[i]; hidden rows keep value and moments."""

    def step(self, visible):
        super().step(visible)


def load_optimizer_state(optimizer, state_dict):
    """``optimizer.load_state_dict(state_dict)``, the settings a saved group lacks taken from the optimizer's own
    groups: a checkpoint of one optimizer class resumes in another (a GPU run's GaussianAdam, whose groups hold
    lr, betas and eps only, on a CPU machine's torch Adam, which also needs weight_decay, amsgrad...)."""
    if len(state_dict["param_groups"]) == len(optimizer.param_groups):
        state_dict = dict(state_dict, param_groups=[{**{k: v for k, v in g.items() if k != "params"}, **s}
                                                    for g, s in zip(optimizer.param_groups,
                                                                    state_dict["param_groups"])])
    optimizer.load_state_dict(state_dict)


def make_optimizer(groups, optimizer_type, device):
    """Adam: GaussianAdam (on CUDA every group in one launch of our extension, on the CPU its PyTorch
    specification), torch's fused Adam on a GPU without the extension; or SparseGaussianAdam for
    --optimizer_type sparse_adam."""
    if optimizer_type == "sparse_adam":
        return SparseGaussianAdam(groups, lr=0.0, eps=1e-15)
    if optimizer_type != "default":
        raise ValueError(f"unknown optimizer type {optimizer_type}")
    on_cuda = torch.device(device).type == "cuda"
    ext = cuda_extension() if on_cuda else None
    if not on_cuda or (ext and hasattr(ext._C, "adam_multi_")):
        return GaussianAdam(groups, lr=0.0, eps=1e-15)
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=True)
