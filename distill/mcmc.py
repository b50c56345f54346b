"""--student_densify mcmc: the student reaches and keeps its --student_max_ratio count as 3DGS-MCMC (Kheradmand et
al. 2024) places Gaussians, instead of clone / split / importance cuts: its start is drawn down to the target at
random, each event moves the transparent Gaussians onto live ones and adds a twentieth more (drawn by opacity) while
it is below the target, and every step noise moves the nearly transparent ones, scaled by their covariance and the
position learning rate, so that they explore instead of idling (the Langevin step of the paper)."""
import torch

from distill.relocate import add_by_opacity, relocate_transparent
from utils.graphics_utils import quaternion_to_matrix

GROWTH = 0.05  # each event adds up to this fraction of the count (3DGS-MCMC's 5%), until the target
GATE_SHARPNESS = 100.0  # the noise gate sigmoid(-k (opacity - threshold)): 3DGS-MCMC's k


@torch.no_grad()
def thin_to(model, count, generator):
    """Keep ``count`` of ``model``'s Gaussians drawn uniformly at random (by ``generator``, a CPU torch.Generator),
    in their order; nothing when it has at most that many. Returns how many went."""
    n = model.num_points
    if n <= count:
        return 0
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=generator)[:count]] = True
    model.prune(~keep.to(model.device))
    return n - count


@torch.no_grad()
def relocate_and_grow(model, target, threshold, generator, rows=None):
    """One event: the Gaussians below ``threshold`` move onto live ones, then min(target, 1.05 x count) - count are
    added (at least one while below the target: a start of fewer than 20 would never grow), both drawn by opacity
    (distill/relocate.py). Returns (moved, added)."""
    moved = relocate_transparent(model, threshold, generator, rows)
    n = model.num_points
    added = add_by_opacity(model, min(target, max(n + 1, int(n * (1.0 + GROWTH)))) - n, threshold, generator, rows)
    return moved, added


@torch.no_grad()
def add_position_noise(model, lr, noise_lr, threshold, generator):
    """Move every Gaussian by Sigma (eps x lr x noise_lr x sigmoid(-k (opacity - threshold))), eps ~ N(0, I) drawn by
    ``generator`` (a torch.Generator on the model's device), Sigma its covariance R S^2 R^T: the opaque ones stay where
    the gradients put them, the transparent ones wander along their own shape. In place (a graphed step keeps its
    graph)."""
    xyz = model.params["xyz"]
    gate = torch.sigmoid(-GATE_SHARPNESS * (model.get_opacity - threshold))  # [N, 1]
    eps = torch.randn(xyz.shape, generator=generator, device=xyz.device, dtype=xyz.dtype) * gate * (lr * noise_lr)
    rot = quaternion_to_matrix(model.params["rotation"].detach())  # [N, 3, 3]
    local = torch.einsum("nji,nj->ni", rot, eps) * model.get_scaling.square()  # S^2 R^T eps
    xyz.data.add_(torch.einsum("nij,nj->ni", rot, local))
