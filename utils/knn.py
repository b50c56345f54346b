"""Mean squared distance to the 3 nearest neighbours (the 3DGS initial scale).

Uses our CUDA ``simple_knn`` for CUDA tensors when it is built, else scipy's cKDTree.
"""
import numpy as np
import torch


def mean_sq_dist_3nn(points):
    """points [N, 3] -> [N] mean squared distance to the 3 nearest other points."""
    n = points.shape[0]
    if n == 0:
        return points.new_zeros(0)
    if points.is_cuda:
        try:
            from simple_knn._C import distCUDA2
            return distCUDA2(points.float().contiguous())
        except ImportError:
            pass
    from scipy.spatial import cKDTree
    pts = points.detach().cpu().double().numpy()
    k = min(4, n)
    d, _ = cKDTree(pts).query(pts, k=k)
    d = np.asarray(d).reshape(n, k)[:, 1:]
    if d.shape[1] == 0:
        out = np.zeros(n)
    else:
        out = (d ** 2).mean(axis=1)
    return torch.from_numpy(out).to(points.device, torch.float32)
