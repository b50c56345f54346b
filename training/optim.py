"""Optimizers for Gaussian parameters: torch's Adam, or Adam over the Gaussians seen this step.

``--optimizer_type sparse_adam`` (graphdeco's name) updates only the rows (Gaussians) that were visible
in at least one view of the step; the others keep their value and Adam moments, so unseen Gaussians
are not dragged by stale momentum and the step costs less. It keeps the state layout of torch's Adam
(exp_avg, exp_avg_sq, step), so densification edits and checkpoints treat both alike.
"""
import torch
# torch's optimizers import torch._dynamo when the first one is made (about 1 s on a CPU machine, more on
# the GPU one). Importing it here puts that one-time cost in start-up, like `import torch`, instead of in
# the first model's training time.
import torch._dynamo  # noqa: F401

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


class SparseGaussianAdam(torch.optim.Optimizer):
    """Adam whose step(visible) updates only rows with visible[i]; one tensor per parameter group."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-15):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, visible):
        for group in self.param_groups:
            (p,) = group["params"]
            if p.grad is None:
                continue
            st = self.state[p]
            if not st:
                st["step"] = torch.tensor(0.0)
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            st["step"] += 1
            args = (p.grad.contiguous(), st["exp_avg"], st["exp_avg_sq"], visible, group["lr"], *group["betas"],
                    group["eps"], int(st["step"]))
            ext = cuda_extension() if p.is_cuda else None
            if ext:
                ext._C.adam_rows_(p.data, *args)
            else:
                adam_rows_torch(p.data, *args)


def make_optimizer(groups, optimizer_type, device):
    """torch's Adam (fused on CUDA: one kernel for all groups) or SparseGaussianAdam."""
    if optimizer_type == "sparse_adam":
        return SparseGaussianAdam(groups, lr=0.0, eps=1e-15)
    if optimizer_type != "default":
        raise ValueError(f"unknown optimizer type {optimizer_type}")
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=torch.device(device).type == "cuda")
