"""Fused image loss of the training step (csrc/loss.cu): one kernel for the forward, one for the backward.

    loss = sum_k weights[k] * ((1 - lambda_dssim) * L1(render, targets[k]) + lambda_dssim * (1 - SSIM(render, targets[k])))

for a render [3, H, W] (float32, CUDA) and 1 or 2 targets of its shape, SSIM with an 11x11 Gaussian window
(sigma 1.5) and zero padding 'same'. utils/loss_utils.py::photometric_loss is its specification. Only the
render gets a gradient; the targets are constants.
"""
import torch

from . import _C  # None where the package was not built

HAS_FUSED_LOSS = hasattr(_C, "fused_loss_forward") and hasattr(_C, "fused_loss_backward")


class _FusedPhotometricLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, render, weights, lambda_dssim, with_stats, *targets):
        need_grad = ctx.needs_input_grad[0]
        loss, stats, maps = _C.fused_loss_forward(render, list(targets), list(weights), lambda_dssim, need_grad,
                                                  with_stats)
        ctx.weights, ctx.lambda_dssim = list(weights), lambda_dssim
        if need_grad:
            ctx.save_for_backward(render, maps, *targets)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, grad_stats):
        render, maps, *targets = ctx.saved_tensors
        d_render = _C.fused_loss_backward(grad_loss, render, targets, ctx.weights, ctx.lambda_dssim, maps)
        return (d_render, None, None, None) + (None,) * len(targets)


def fused_photometric_loss(render, targets, weights, lambda_dssim, return_stats=False):
    """The scalar loss; with return_stats also the per-target L1 means [K] and SSIM means [K] (no extra
    pass: a sum over the kernel's per-block partials)."""
    targets = list(targets)
    weights = [float(w) for w in weights]
    if not 1 <= len(targets) <= 2 or len(weights) != len(targets):
        raise ValueError(f"fused_photometric_loss takes 1 or 2 targets and one weight each, got "
                         f"{len(targets)} targets and {len(weights)} weights")
    if render.dim() != 3 or render.shape[0] != 3 or render.dtype != torch.float32 or not render.is_cuda:
        raise ValueError(f"render must be a float32 CUDA tensor [3, H, W], got {render.dtype} "
                         f"{tuple(render.shape)} on {render.device}")
    for t in targets:
        if t.shape != render.shape or t.device != render.device:
            raise ValueError(f"targets must have the render's shape {tuple(render.shape)} and device, got "
                             f"{tuple(t.shape)} on {t.device}")
    # an fp16 (teacher) target is widened here, once: the kernels read float32
    targets = [t.detach().float().contiguous() for t in targets]
    loss, stats = _FusedPhotometricLoss.apply(render.contiguous(), tuple(weights), float(lambda_dssim),
                                              bool(return_stats), *targets)
    if return_stats:
        return loss, stats[0], stats[1]
    return loss
