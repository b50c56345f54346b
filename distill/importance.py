"""Per-Gaussian importance from the rasterizer's stats, and the student's two importance prunes."""
import torch

from gaussian_renderer import render
from training.pair_budget import QueuedRenders


@torch.no_grad()
def gaussian_importance(model, cameras, pipe, bg, metric="indoor", sync=None, strongest_rule=True):
    """Importance over all ``cameras`` (with ``sync``, a data_parallel.StepSync: this rank's share, summed over the
    ranks).

    indoor: sum over views of accum_weights (sum of alpha T over the Gaussian's pixels);
    outdoor: over views where area_max > 0, sum of accum_weights / area_proj.
    With ``strongest_rule`` (the reference's), Gaussians that are never the strongest contributor of any pixel
    (area_max summed = 0) get 0.
    """
    imp = torch.zeros(model.num_points, device=model.device)
    area_max_total = torch.zeros_like(imp)
    mine = list(cameras if sync is None else sync.share(cameras))
    queue = QueuedRenders(model.device, pipe, len(mine))

    def add(out, ok):  # (ok: 0 leaves out a view whose render overflowed; it is rendered again below)
        w, proj, amax = out["accum_weights"], out["area_proj"], out["area_max"]
        if metric != "indoor":
            w = torch.where(amax > 0, w / proj.clamp_min(1), torch.zeros_like(w))
        if ok is None:
            imp.add_(w)
            area_max_total.add_(amax)
        else:
            imp.addcmul_(w, ok)
            area_max_total.addcmul_(amax, ok)

    for i, cam in enumerate(mine):
        add(*queue.render(i, cam, model, pipe, bg, return_stats=True))
    for i in queue.overflowed():
        add(render(mine[i], model, pipe, bg, return_stats=True), None)
    if sync is not None:
        sync.sum_([imp, area_max_total], "the all-reduce of the importance scores")
    if strongest_rule:
        imp[area_max_total == 0] = 0
    return imp


def sample_by_importance(imp, factor, generator=None):
    """First prune: keep int(N x factor x fraction with importance > 0) Gaussians sampled without
    replacement with probability proportional to importance. Returns a bool keep mask."""
    n = imp.shape[0]
    positive = int((imp > 0).sum())
    return sample_kept(imp, int(n * factor * positive / max(n, 1)), generator)


def sample_kept(imp, count, generator=None):
    """A bool keep mask of min(``count``, the Gaussians of importance > 0) Gaussians drawn without replacement with
    probability proportional to importance (none of importance 0)."""
    k = min(int((imp > 0).sum()), count)
    keep = torch.zeros(imp.shape[0], dtype=torch.bool, device=imp.device)
    if k > 0:
        idx = torch.multinomial(imp.double().cpu(), k, replacement=False, generator=generator)
        keep[idx.to(imp.device)] = True
    return keep


def prune_least_important(imp, fraction=0.01, max_keep=None):
    """Second prune: remove mask of the least important Gaussians holding ``fraction`` of the total;
    with ``max_keep``, also the next least important until at most that many remain."""
    order = torch.argsort(imp)
    cum = torch.cumsum(imp[order].double(), 0)
    total = float(cum[-1]) if cum.numel() else 0.0
    remove_sorted = cum <= fraction * total
    if max_keep is not None and imp.numel() > max_keep:
        remove_sorted[:imp.numel() - max_keep] = True
    remove = torch.zeros_like(imp, dtype=torch.bool)
    remove[order[remove_sorted]] = True
    return remove
