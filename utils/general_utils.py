"""Small numeric helpers shared by the model and the training loop."""
import math

import numpy as np
import torch


def inverse_sigmoid(x):
    return torch.log(x / (1 - x))


def exponential_lr(lr_init, lr_final, max_steps):
    """Log-linear decay from lr_init to lr_final over max_steps (the 3DGS position schedule)."""
    return lambda step: log_linear(lr_init, lr_final, step, max_steps) if lr_init > 0 else 0.0


def log_linear(w_init, w_final, step, max_steps):
    """Weight going log-linearly from w_init to w_final (the position LR and depth-loss weight schedules). A zero end
    gives zero everywhere but at the other end itself (the limit; NumPy's log gave NaN there). (math, not NumPy:
    called every step, NumPy's scalar calls cost ~10 us each.)"""
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    if w_init <= 0 or w_final <= 0:
        return float(w_init) if t == 0 else float(w_final) if t == 1 else 0.0
    return math.exp(math.log(w_init) * (1 - t) + math.log(w_final) * t)


def to_staging(t, device):
    """``t`` on ``device``; a CPU copy is pinned when a GPU exists, so per-step uploads
    (``.to("cuda", non_blocking=True)``) overlap with the GPU's work instead of blocking. A GPU tensor's CPU copy is
    queued on the current stream, not waited for: an upload on that stream comes after it, but the host must
    synchronise before it reads the copy itself."""
    if t.is_cuda and torch.device(device).type == "cpu":
        return torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
    t = t.to(device)
    if t.device.type == "cpu" and torch.cuda.is_available():
        t = t.pin_memory()
    return t


def seed_all(*key):
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators from a tuple of integers, e.g. (seed,
    model index): each model of a run gets its own stream, so a model trained alone (train.py --start K)
    draws the same numbers as in the uninterrupted run."""
    import random
    s = int(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in key]).generate_state(1)[0])
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s


def nonfinite_rows(arrays):
    """Which rows (Gaussians) hold NaN or infinite values, for named arrays of N rows each (NumPy, or tensors
    on any device): (bool [N] mask, names of the arrays with such rows)."""
    bad = {}
    for name, a in arrays.items():
        a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
        bad[name] = ~np.isfinite(a).reshape(len(a), -1).all(axis=1) if len(a) else np.zeros(0, dtype=bool)
    rows = np.logical_or.reduce(list(bad.values())) if bad else np.zeros(0, dtype=bool)
    return rows, [k for k, m in bad.items() if m.any()]
