"""The student's relocation at a fixed count (--student_relocate): after its last cut the student no longer densifies,
so a Gaussian whose opacity falls below --relocate_opacity would hold a place of the 12% budget while rendering nothing.
Relocation moves each such Gaussian onto a live one (drawn with probability proportional to opacity) and splits
that one's opacity and scale over it and its new copies, so that together they render about as it did and the
optimisation can pull them apart (the relocation of 3DGS as Markov Chain Monte Carlo, Kheradmand et al. 2024).
--student_densify mcmc grows the same way (add_by_opacity; distill/mcmc.py)."""
import torch

from utils.general_utils import inverse_sigmoid

MAX_SHARE = 51  # at most this many Gaussians share one source's opacity (more copies of one source keep this split)


def split_opacity_and_scale(opacity, copies):
    """For a Gaussian of ``opacity`` (o) shared by ``copies`` (n >= 1) coincident Gaussians: the opacity o' each gets,
    1 - (1 - o)^(1/n), which composites back to o at the centre, and the factor on its scale that keeps the
    composited profile's integral along any axis equal to o's: o / sum_{k=1..n} C(n, k) (-1)^(k-1) o'^k / sqrt(k)
    (expand 1 - (1 - o' g)^n by powers of the Gaussian g and integrate each; 3DGS-MCMC writes the same sum as a double
    sum over i <= n and k < i, which the hockey-stick identity folds). Float64 inside: the alternating sum cancels.
    Returns (o', factor), both of ``opacity``'s dtype."""
    o = opacity.double()
    n = copies.to(o.device).double().clamp(1, MAX_SHARE)
    o_new = 1.0 - (1.0 - o).pow(1.0 / n)
    k = torch.arange(1, MAX_SHARE + 1, dtype=torch.float64, device=o.device)[None, :]
    nn = n[:, None]
    log_binom = torch.lgamma(nn + 1) - torch.lgamma(k + 1) - torch.lgamma((nn - k).clamp_min(0) + 1)
    terms = torch.where(k <= nn, torch.exp(log_binom), torch.zeros_like(log_binom))
    terms = terms * torch.where(k % 2 == 1, 1.0, -1.0) * o_new[:, None].pow(k) / k.sqrt()
    return o_new.to(opacity.dtype), (o / terms.sum(1)).to(opacity.dtype)


def _shares(model, candidates, n, threshold, generator):
    """Draw ``n`` sources among the Gaussians ``candidates`` (an index) with probability proportional to opacity, with
    replacement (by ``generator``, a CPU torch.Generator). Returns (sources: each drawn one once, of: the i-th draw's
    place in sources, values: raw parameters for the sources, each with its opacity and scale shared with its copies
    by split_opacity_and_scale)."""
    opacity = model.get_opacity.squeeze(1)
    drawn = torch.multinomial(opacity[candidates].double().cpu(), n, replacement=True, generator=generator)
    sources, of, taken = torch.unique(candidates[drawn.to(candidates.device)], return_inverse=True,
                                      return_counts=True)
    o_new, factor = split_opacity_and_scale(opacity[sources], taken + 1)  # (the source itself and its copies)
    values = {k: p.detach()[sources] for k, p in model.params.items()}
    values["opacity"] = inverse_sigmoid(o_new.clamp(threshold, 1.0 - 1e-6))[:, None]
    values["scaling"] = values["scaling"] + torch.log(factor)[:, None]
    return sources, of, values


@torch.no_grad()
def relocate_transparent(model, threshold, generator, rows=None):
    """Move every Gaussian of ``model`` below the opacity ``threshold`` onto a live one drawn with probability
    proportional to its opacity (by ``generator``, a CPU torch.Generator); the drawn source and its copies share its
    opacity and scale by split_opacity_and_scale, and take every other parameter of it. Their Adam moments and
    ``rows`` (the strategy state) restart at zero. The tensors are written in place (a graphed step keeps its graph).
    Returns how many Gaussians moved (0 when none is transparent, or all)."""
    dead = model.get_opacity.squeeze(1) < threshold  # (densification's prune test, at the relocation's own threshold)
    n_dead = int(dead.sum())  # (a sync, once a relocation)
    if n_dead == 0 or n_dead == dead.numel():
        return 0
    sources, of, values = _shares(model, (~dead).nonzero().squeeze(1), n_dead, threshold, generator)
    to = torch.cat([sources, dead.nonzero().squeeze(1)])
    model.overwrite_rows(to, {k: torch.cat([v, v[of]]) for k, v in values.items()}, rows)
    return n_dead


@torch.no_grad()
def add_by_opacity(model, n, threshold, generator, rows=None):
    """Add ``n`` Gaussians to ``model`` as 3DGS-MCMC grows: each a copy of a source drawn with probability
    proportional to opacity (by ``generator``), the source and its copies sharing its opacity and scale as in
    relocate_transparent (the sources' Adam moments and ``rows`` restart at zero, the copies' start there). Returns
    how many were added (0 when ``n`` <= 0 or the model is empty)."""
    if n <= 0 or model.num_points == 0:
        return 0
    sources, of, values = _shares(model, torch.arange(model.num_points, device=model.device), n, threshold,
                                  generator)
    model.overwrite_rows(sources, values, rows)
    model.append({k: v[of] for k, v in values.items()}, rows)
    return n
