"""Spatial-distribution (structure) loss between student and teacher Gaussian positions.

The 3-D soft histogram of each point set is the outer product of its three per-axis marginals, so
cos(H_s, H_t) = prod_axis cos(h_s_axis, h_t_axis): computed per axis in O(N x bins), never 256^3.
"""
import torch


def joint_box(a, b, margin=0.01):
    """Axis-aligned box around both point sets, widened by ``margin`` x its size on each side."""
    lo = torch.minimum(a.min(0).values, b.min(0).values)
    hi = torch.maximum(a.max(0).values, b.max(0).values)
    pad = (hi - lo).clamp_min(1e-6) * margin
    return lo - pad, hi + pad


def axis_histograms(points, lo, hi, bins=256, sigma=0.5, chunk=65536):
    """Soft per-axis histograms [3, bins]: each point adds exp(-(u - g)^2 / (2 sigma^2)) to cell g,
    u = its continuous cell coordinate in [0, bins - 1]."""
    u = (points - lo) / (hi - lo) * (bins - 1)  # [N, 3]
    cells = torch.arange(bins, device=points.device, dtype=points.dtype)
    hist = points.new_zeros(3, bins)
    for i in range(0, points.shape[0], chunk):
        d = u[i:i + chunk, :, None] - cells  # [n, 3, bins]
        hist = hist + torch.exp(-d * d / (2 * sigma * sigma)).sum(0)
    return hist


def structure_loss(student_xyz, teacher_xyz, bins=256, sigma=0.5, margin=0.01):
    """1 - cosine similarity of the two 3-D soft histograms (gradient flows to the student)."""
    teacher_xyz = teacher_xyz.detach()
    lo, hi = joint_box(student_xyz.detach(), teacher_xyz, margin)
    hs = axis_histograms(student_xyz, lo, hi, bins, sigma)
    ht = axis_histograms(teacher_xyz, lo, hi, bins, sigma)
    cos = torch.nn.functional.cosine_similarity(hs, ht, dim=1, eps=1e-12)  # [3]
    return 1.0 - cos.prod()
