"""PyTorch Gaussian rasterizer: the executable specification of the rasterizer contract.

Same API as the CUDA package ``diff_gaussian_rasterization`` (METHOD.md section 4), the fast path on the CPU.
The package's per-stage reference (reference.py) states the semantics, after graphdeco's rasterizer; this file
and the CUDA kernels are tested against it. In short:

* cull p_view.z <= 0.2 and anything non-finite; 2D mean = ((ndc + 1) * S - 1) / 2 in pixels;
* EWA 2D covariance with the Jacobian's x/z, y/z clamped to 1.3 tan(fov), dilated by 0.3 px;
  det <= 0 culls; antialiasing scales opacity by sqrt(max(2.5e-5, det_before / det_after));
* radius = ceil(3 sqrt(lambda_max)); a Gaussian only reaches the 16x16 tiles of its screen rect;
* per pixel, front to back by view z: alpha = min(0.99, o exp(power)), skipped if power > 0 or
  alpha < 1/255; the pixel stops (without this contribution) when T (1 - alpha) < 1e-4;
* colour += c alpha T, inverse depth += alpha T / z, colour += T_final bg.

How it is computed (none of this changes the results beyond float rounding):

* compositing works on SUB x SUB sub-tiles of the 16x16 tiles. A Gaussian is paired with the
  sub-tiles of its 16x16-tile rect that its alpha >= 1/255 region reaches: alpha >= 1/255 needs
  o exp(power) >= 1/255, i.e. d^T conic d <= 2 ln(255 o) (no pairs at all when o < 1/255), so a
  sub-tile whose pixel centres all lie outside that ellipse (box test, then exact ellipse-box
  test, with margins for rounding) can only get skipped entries from it;
* sub-tiles of similar pair counts are batched into chunks of at most CHUNK_ELEMENTS
  (Gaussian, pixel) entries, so memory stays bounded; a sub-tile with more pairs than a chunk
  holds is split along depth and its log-transmittance carried from one chunk to the next;
* a custom autograd Function blends all chunks: its forward keeps only the per-Gaussian inputs and
  the chunk plan, its backward recomputes each chunk and applies the analytic gradient (as the
  CUDA backward does), back to front over the chunks of a split sub-tile.
"""
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from gaussian_renderer.cuda_package import contract, reference
from utils.graphics_utils import quaternion_to_matrix

# the contract (settings, kernel constants, checks) and the reference's small helpers, re-exported: other
# backends and the tests take them from here
GaussianRasterizationSettings = contract.GaussianRasterizationSettings
TILE, NEAR_Z, ALPHA_MIN, ALPHA_MAX, T_MIN = contract.TILE, contract.NEAR_Z, contract.ALPHA_MIN, contract.ALPHA_MAX, \
    contract.T_MIN
COLOR_MAX = contract.COLOR_MAX
check_image_size, check_settings, sh_features = contract.check_image_size, contract.check_settings, \
    contract.sh_features
covariance_3d, cov_from_upper = reference.covariance_3d, reference.cov_from_upper

LOG_T_MIN = math.log(T_MIN)
# (Gaussian, pixel) entries of one chunk; bounds the compositing's peak memory (~20 float tensors of
# this size). Measured on 2 CPU threads: 2^18 fastest (2^17 with one thread; 2^19 slower: cache)
CHUNK_ELEMENTS = 1 << 18
# cap of -power before exp: exp(-60) o < 1/255 for any o < 4e23, and exp(-60) is no subnormal
Q_CAP = 60.0
# log T given to entries past the pixel's stop, and the T below which it is zeroed (exp(-80) is
# a normal float; float32 exp is ~100x slower where it underflows)
LOG_FLOOR = -80.0
T_ZERO = 1e-30
# side of the square sub-tiles the compositing works on (divides TILE); 8 measured faster than 4, 16
SUB = 8


def _bmm_2x3_3x3(A, B):
    """A [P, 2, 3] @ B [P, 3, 3] as three broadcast products."""
    return A[:, :, 0:1] * B[:, None, 0] + A[:, :, 1:2] * B[:, None, 1] + A[:, :, 2:3] * B[:, None, 2]


def _finite_rows(*tensors):
    """Rows finite in every given tensor (None entries ignored). Returns bool [P]."""
    ok = None
    for t in tensors:
        if t is None:
            continue
        # x * 0 is 0 exactly when x is finite (NaN for inf / NaN); one pass, no overflow
        f = (t.flatten(1) * 0).sum(dim=1) == 0 if t.dim() > 1 else t * 0 == 0
        ok = f if ok is None else ok & f
    return ok


def _zero_bad(t, ok):
    """Replace rows that are not ``ok`` by zeros so no NaN reaches the math (or its gradient)."""
    if t is None or bool(ok.all()):
        return t
    mask = ok.reshape(-1, *([1] * (t.dim() - 1)))
    return torch.where(mask, t, torch.zeros_like(t))


def preprocess(s, means3D, means2D, opacities, shs, colors_precomp, scales, rotations, cov3D_precomp, _cull=None):
    """Project Gaussians. Returns a dict of per-Gaussian screen-space quantities and ``radii``.

    Rows with a NaN or infinite input are culled and computed from zeros (so no NaN reaches their gradients);
    so are rows whose finite inputs overflow on the way (a huge scale or position): found on a first pass,
    they are zeroed in a second one (``_cull``), since 0 * inf in the backward pass would give NaN.
    """
    P = means3D.shape[0]
    H, W = int(s.image_height), int(s.image_width)
    dev, dt = means3D.device, means3D.dtype
    ok = _finite_rows(means3D, opacities, shs, colors_precomp, scales, rotations, cov3D_precomp)
    if _cull is not None:
        ok = ok & ~_cull
    means3D, opacities = _zero_bad(means3D, ok), _zero_bad(opacities, ok)
    shs, colors_precomp = _zero_bad(shs, ok), _zero_bad(colors_precomp, ok)
    scales, rotations, cov3D_precomp = _zero_bad(scales, ok), _zero_bad(rotations, ok), _zero_bad(cov3D_precomp, ok)

    viewmatrix = s.viewmatrix.to(dt)
    projmatrix = s.projmatrix.to(dt)
    p_hom = torch.cat([means3D, torch.ones(P, 1, device=dev, dtype=dt)], dim=1)
    p_view = p_hom @ viewmatrix  # [P, 4]
    p_proj = p_hom @ projmatrix
    z = p_view[:, 2]
    in_front = z > NEAR_Z
    z_safe = torch.where(in_front, z, torch.ones_like(z))
    w_inv = 1.0 / (p_proj[:, 3] + 1e-7)
    ndc = p_proj[:, :2] * w_inv[:, None] + means2D[:, :2]  # means2D carries dL/dndc
    size = torch.tensor([W, H], device=dev, dtype=dt)
    mean2d = ((ndc + 1.0) * size - 1.0) * 0.5  # [P, 2] pixels

    fx = W / (2.0 * s.tanfovx)
    fy = H / (2.0 * s.tanfovy)
    limx, limy = contract.JACOBIAN_CLAMP * s.tanfovx, contract.JACOBIAN_CLAMP * s.tanfovy
    tx = (p_view[:, 0] / z_safe).clamp(-limx, limx) * z_safe
    ty = (p_view[:, 1] / z_safe).clamp(-limy, limy) * z_safe
    zero = torch.zeros_like(z_safe)
    J = torch.stack([fx / z_safe, zero, -fx * tx / (z_safe * z_safe),
                     zero, fy / z_safe, -fy * ty / (z_safe * z_safe)], dim=-1).reshape(P, 2, 3)
    Wr = viewmatrix[:3, :3].T  # rotation block of world-to-camera (stored transposed)
    T = J @ Wr  # [P, 2, 3]
    # cov2d = T Sigma T^T, with elementwise products (batched 3x3 matmuls are slow on the CPU)
    if cov3D_precomp is not None:
        TS, TR = _bmm_2x3_3x3(T, cov_from_upper(cov3D_precomp)), T  # T Sigma
    else:  # Sigma = M M^T, M = R S: cov2d = (T M) (T M)^T
        TS = TR = _bmm_2x3_3x3(T, quaternion_to_matrix(rotations) * (scales * s.scale_modifier)[:, None, :])
    a0 = (TS[:, 0] * TR[:, 0]).sum(-1)
    b = (TS[:, 0] * TR[:, 1]).sum(-1)
    c0 = (TS[:, 1] * TR[:, 1]).sum(-1)
    a, c = a0 + contract.DILATION, c0 + contract.DILATION
    det = a * c - b * b
    if P:
        with torch.no_grad():
            over = ok & ~_finite_rows(p_view, p_proj, mean2d, torch.stack([a0, b, c0, det, a0 * c0], dim=1))
        if bool(over.any()):
            return preprocess(s, means3D, means2D, opacities, shs, colors_precomp, scales, rotations, cov3D_precomp,
                              _cull=over if _cull is None else _cull | over)
    good = in_front & ok & (det > 0) & torch.isfinite(det) & torch.isfinite(mean2d).all(dim=1)
    det_safe = torch.where(good, det, torch.ones_like(det))
    conic = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    opacity = opacities.reshape(-1)
    if s.antialiasing:
        det0 = a0 * c0 - b * b
        opacity = opacity * torch.sqrt(torch.clamp(det0 / det_safe, min=contract.AA_MIN_RATIO))

    radii, good, rect, grid = _radii_and_tiles(a, c, det, mean2d, conic, good, W, H)

    color = colors_precomp if colors_precomp is not None else _sh_colour(s, means3D, shs)
    if P:
        with torch.no_grad():  # huge colours (SH coefficients) would overflow the blending's gradients
            over = ok & ~(color.detach().abs() <= COLOR_MAX).all(dim=1)
        if bool(over.any()):
            return preprocess(s, means3D, means2D, opacities, shs, colors_precomp, scales, rotations,
                              cov3D_precomp, _cull=over if _cull is None else _cull | over)
    return dict(mean2d=mean2d, conic=conic, opacity=opacity, color=color, inv_z=1.0 / z_safe, z=z,
                cov_diag=torch.stack([a, c], dim=1).detach(), visible=good, radii=radii,
                rect=rect, grid=grid)


@torch.no_grad()
def _radii_and_tiles(a, c, det, mean2d, conic, good, W, H):
    """The kernels' screen radius (3 sigma along the larger eigenvalue of the 2D covariance) and tile rectangle
    [P, 4] (x0, y0, x1, y1); rows with an empty rectangle or non-finite values are not drawn (radius 0)."""
    mid = 0.5 * (a + c)
    disc = torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
    radius = torch.ceil(3.0 * torch.sqrt(torch.maximum(mid + disc, mid - disc)))
    good = good & torch.isfinite(radius) & torch.isfinite(conic).all(dim=1)
    radius = torch.where(good, radius, torch.zeros_like(radius))
    m = torch.where(good[:, None], mean2d, torch.zeros_like(mean2d))
    gx, gy = (W + TILE - 1) // TILE, (H + TILE - 1) // TILE
    # float -> int truncation toward zero, then clamp, as the CUDA getRect
    x0 = torch.clamp(((m[:, 0] - radius) / TILE).to(torch.int64), 0, gx)
    x1 = torch.clamp(((m[:, 0] + radius + TILE - 1) / TILE).to(torch.int64), 0, gx)
    y0 = torch.clamp(((m[:, 1] - radius) / TILE).to(torch.int64), 0, gy)
    y1 = torch.clamp(((m[:, 1] + radius + TILE - 1) / TILE).to(torch.int64), 0, gy)
    good = good & ((x1 - x0) * (y1 - y0) > 0)
    radii = torch.where(good, radius, torch.zeros_like(radius)).to(torch.int32)
    return radii, good, torch.stack([x0, y0, x1, y1], dim=1), (gx, gy)


def _sh_colour(s, means3D, shs):
    """RGB [P, 3] from the SH coefficients at the degree the kernels use, for the view direction, + 0.5, >= 0."""
    P, dev, dt = means3D.shape[0], means3D.device, means3D.dtype
    dirs = means3D - s.campos.to(dt)[None]
    dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # the basis [P, K] of the degree the kernels use: eval_sh as a product and one GEMM
    basis = reference.sh_basis(contract.sh_degree_used(s.sh_degree, shs.shape[1]), dirs)
    K = basis.shape[1]
    prod = (shs[:, :K] * basis[:, :, None]).reshape(P, 3 * K)
    return torch.clamp_min(prod @ torch.eye(3, device=dev, dtype=dt).repeat(K, 1) + 0.5, 0.0)


def _reach(pre, vis):
    """Where Gaussians ``vis`` can reach alpha >= 1/255, in float64: (mean [n, 2], conic [n, 3],
    r2 [n], ext [n, 2], exact [n]).

    alpha >= 1/255 needs o G >= 1/255, i.e. d^T conic d <= r2 = 2 ln(255 o); over that ellipse
    |dx| <= sqrt(r2 cov_xx), |dy| <= sqrt(r2 cov_yy) (cov = the dilated 2D covariance): ext is that
    plus 1% and one pixel. ``exact`` marks conics conditioned well enough (cond <= 1e4) that the
    float evaluation of the power is within 0.5% of d^T conic d / 2, so these margins (and the 5% of
    the ellipse test) cover its rounding; the others keep their whole 16x16-tile rect.
    """
    o = pre["opacity"].detach()[vis].double()
    r2 = 2.0 * torch.log(torch.clamp(255.0 * o, min=1.0))
    con = pre["conic"].detach()[vis].double()
    A, B, C = con.unbind(1)
    half_tr = 0.5 * (A + C)
    disc = torch.sqrt(torch.clamp(half_tr * half_tr - (A * C - B * B), min=0.0))
    exact = (half_tr + disc) <= 1e4 * (half_tr - disc)
    ext = torch.sqrt(r2[:, None] * pre["cov_diag"][vis].double()) * 1.01 + 1.0
    ext = torch.where(exact[:, None], torch.nan_to_num(ext, nan=1e9, posinf=1e9), torch.full_like(ext, 1e9))
    return pre["mean2d"].detach()[vis].double(), con, r2, ext, exact


def _rect_min_q(dx0, dx1, dy0, dy1, A, B, C):
    """min of A x^2 + 2 B x y + C y^2 (positive definite) over the box [dx0, dx1] x [dy0, dy1]."""
    def q(x, y):
        return A * x * x + 2.0 * B * x * y + C * y * y
    best = None
    for x in (dx0, dx1):  # on a vertical edge the minimum is at y = -B x / C, clamped
        v = q(x, torch.minimum(torch.maximum(-B * x / C, dy0), dy1))
        best = v if best is None else torch.minimum(best, v)
    for y in (dy0, dy1):
        best = torch.minimum(best, q(torch.minimum(torch.maximum(-B * y / A, dx0), dx1), y))
    inside = (dx0 <= 0) & (dx1 >= 0) & (dy0 <= 0) & (dy1 >= 0)
    return torch.where(inside, torch.zeros_like(best), best)


def _subtile_pairs(pre, sgx, sgy):
    """(sub-tile, gaussian) pairs sorted by sub-tile, then view depth. Returns (gauss_ids, counts).

    Sub-tiles are SUB x SUB pixels; a Gaussian gets the sub-tiles inside its 16x16-tile rect (the
    contract) that its alpha >= 1/255 ellipse reaches (box, then exact ellipse-box test, both with
    margins). Gaussians with opacity < 1/255 never blend and get none.
    """
    f = TILE // SUB
    dev = pre["z"].device
    o = pre["opacity"].detach()
    vis = torch.nonzero(pre["visible"] & (o >= ALPHA_MIN)).squeeze(1)
    # front to back (stable: equal depths keep index order), so a stable sort by sub-tile is enough
    vis = vis[torch.sort(pre["z"].detach()[vis], stable=True)[1]]
    rect = pre["rect"][vis] * f
    m, con, r2, ext, exact = _reach(pre, vis)
    lo = torch.floor(((m - ext) / SUB).clamp(-1e9, 1e9)).to(torch.int64)
    hi = torch.floor(((m + ext) / SUB).clamp(-1e9, 1e9)).to(torch.int64) + 1
    x0 = torch.maximum(rect[:, 0], lo[:, 0])
    x1 = torch.minimum(rect[:, 2], hi[:, 0]).clamp_max(sgx)
    y0 = torch.maximum(rect[:, 1], lo[:, 1])
    y1 = torch.minimum(rect[:, 3], hi[:, 1]).clamp_max(sgy)
    w = (x1 - x0).clamp_min(0)
    n = w * (y1 - y0).clamp_min(0)
    gi = torch.repeat_interleave(torch.arange(vis.shape[0], device=dev), n)
    local = torch.arange(gi.shape[0], device=dev) - (torch.cumsum(n, 0) - n).index_select(0, gi)
    wr = w.index_select(0, gi)
    row = torch.div(local, wr, rounding_mode="floor")
    sx = x0.index_select(0, gi) + (local - row * wr)
    sy = y0.index_select(0, gi) + row
    # exact test: the ellipse reaches the box of the sub-tile's pixel centres
    px0 = (sx * SUB).double() - m[:, 0].index_select(0, gi)
    py0 = (sy * SUB).double() - m[:, 1].index_select(0, gi)
    A, B, C = (con[:, i].index_select(0, gi) for i in range(3))
    qmin = _rect_min_q(px0, px0 + (SUB - 1), py0, py0 + (SUB - 1), A, B, C)
    keep = (qmin <= r2.index_select(0, gi) * 1.05 + 1e-2) | ~exact.index_select(0, gi)
    gi, sub = gi[keep], (sy * sgx + sx)[keep]
    key = sub.to(torch.int32) if sgx * sgy < 2 ** 31 else sub
    order = torch.sort(key, stable=True)[1]
    counts = torch.bincount(sub, minlength=sgx * sgy)
    return vis.index_select(0, gi.index_select(0, order)), counts


def _chunk_plan(counts, budget):
    """Group sub-tiles (by descending count) into chunks of B sub-tiles x K Gaussians, B K <= budget.

    Sub-tiles share a chunk only when their counts are within 3/4 of its largest (bounded padding).
    Yields (subtile_ids, k0, k1); a sub-tile with more Gaussians than the budget is split along K into
    consecutive chunks, front to back.
    """
    order = torch.argsort(counts, descending=True, stable=True)
    cnt = counts[order].tolist()
    i, n = 0, len(cnt)
    while n > 0 and cnt[n - 1] == 0:
        n -= 1
    while i < n:
        kmax = cnt[i]
        if kmax > budget:
            pieces = -(-kmax // budget)
            step = -(-kmax // pieces)
            for k0 in range(0, kmax, step):
                yield order[i:i + 1], k0, min(kmax, k0 + step)
            i += 1
            continue
        lim = min(n, i + max(1, budget // kmax))
        j = i + 1
        while j < lim and 4 * cnt[j] >= 3 * kmax:
            j += 1
        yield order[i:j], 0, kmax
        i = j


def _below(value, dt):
    """Largest ``dt`` number x with (x >= value) False, as torch compares: keep = t > _below(v) <=> t >= v."""
    x = torch.tensor(value, dtype=dt)
    if bool(x >= value):
        x = torch.nextafter(x, torch.tensor(-math.inf, dtype=dt))
    return float(x)


class _Consts:
    """Per-dtype constants of the compositing kernels."""
    _cache = {}

    def __new__(cls, dt, dev):
        key = (dt, str(dev), SUB)
        c = cls._cache.get(key)
        if c is None:
            c = super().__new__(cls)
            ly, lx = torch.meshgrid(torch.arange(SUB, dtype=dt), torch.arange(SUB, dtype=dt), indexing="ij")
            c.lx = torch.arange(SUB, dtype=dt, device=dev).view(1, 1, SUB, 1)  # pixel x in a sub-tile row
            c.ly = torch.arange(SUB, dtype=dt, device=dev).view(1, SUB, 1, 1)  # pixel y in a column
            h = 0.5 * (SUB - 1)  # moments about the sub-tile centre (small numbers, little cancellation)
            px, py = lx.reshape(-1) - h, ly.reshape(-1) - h
            # [6, SUB^2]: 1, x, y, xx, yy, xy per pixel
            c.basis = torch.stack([torch.ones_like(px), px, py, px * px, py * py, px * py]).to(dev)
            c.half = h
            c.q_keep = -torch.finfo(dt).tiny  # power <= 0  <=>  q = -power > -tiny (no subnormal q)
            c.a_keep = _below(ALPHA_MIN, dt)
            c.t_keep = _below(LOG_T_MIN, dt)
            c.amax = float(torch.tensor(ALPHA_MAX, dtype=dt))
            cls._cache[key] = c
        return c


class _Plan:
    """What the compositing needs besides the per-Gaussian tensors: the chunks and their states."""

    def __init__(self, n_sub, chunks, return_stats, n_gauss, pix_ok):
        self.n_sub, self.chunks = n_sub, chunks
        self.return_stats, self.n_gauss, self.pix_ok = return_stats, n_gauss, pix_ok
        self.stats = None


def _gather(tab, idx):
    """Rows of the Gaussian table for idx [B, K], as [10, B, K] (each quantity contiguous along K)."""
    return tab.index_select(0, idx.reshape(-1)).t().contiguous().view(tab.shape[1], *idx.shape)


def _front(tg, x0, y0, carry_all, c, need_bwd):
    """Recompute one chunk front to back. tg [10, B, K] gathered Gaussian rows (dummy rows: o = 0).

    Layout [B, SUB^2, K] (K last: cumsum along it is fast). Returns (w, cum, T, h, om): w = alpha T
    and cum = log T after each entry; with need_bwd also T (transmittance before each entry, 0 off
    the accepted entries), h = o G where o G >= 1/255 (else 0) and om = 1 - alpha.
    """
    B, K = tg.shape[1], tg.shape[2]
    mx = (tg[0] - x0[:, None])[:, None, None, :]  # [B, 1, 1, K], relative to the sub-tile origin
    my = (tg[1] - y0[:, None])[:, None, None, :]
    a2, b, c2, o = (tg[i][:, None, None, :] for i in (2, 3, 4, 5))
    dx = mx - c.lx  # [B, 1, SUB, K]: a row of pixels
    dy = my - c.ly  # [B, SUB, 1, K]: a column
    # q = -power = 0.5 a dx^2 + 0.5 c dy^2 + b dx dy; squares on rows / columns, one product full size
    q = torch.add(dx.square().mul_(a2), dy.square().mul_(c2)).addcmul_(dy.mul_(b), dx).view(B, -1, K)
    del dx, dy
    # power > 0 (rounding) is skipped: q -> Q_CAP -> o G < 1/255 -> alpha = 0 (as alpha < 1/255 is);
    # capping q keeps exp() out of subnormal numbers, which are very slow on x86
    h = F.threshold_(q.clamp_max_(Q_CAP), c.q_keep, Q_CAP).neg_().exp_().mul_(o.view(B, 1, K))
    F.threshold_(h, c.a_keep, 0.0)
    alpha = h.clamp_max(ALPHA_MAX) if need_bwd else h.clamp_max_(ALPHA_MAX)
    om = torch.sub(1.0, alpha)  # 1 - alpha: log T sums its logs (rounding as the CUDA T * (1 - alpha))
    log1m = torch.log(om) if need_bwd else om.log_()
    cum = torch.cumsum(log1m, dim=2)  # log T after each Gaussian
    if carry_all is not None:
        cum += carry_all[:, :, None]
    # accepted: T after this Gaussian >= T_MIN (pixel not done); the others get T = 0 -> weight 0
    # (via exp(LOG_FLOOR - log1m), a tiny normal number, then zeroed: exp must not underflow)
    T = F.threshold(cum, c.t_keep, LOG_FLOOR).sub_(log1m).exp_()
    F.threshold_(T, T_ZERO, 0.0)
    del log1m
    if need_bwd:
        return T * alpha, cum, T, h, om
    return T.mul_(alpha), cum, None, None, None


def _forward_chunks(plan, tab, c, dt):
    dev = tab.device
    n_sub, S2 = plan.n_sub, SUB * SUB
    out4 = torch.zeros(n_sub, S2, 4, device=dev, dtype=dt)
    log_t = torch.zeros(n_sub, S2, device=dev, dtype=dt)
    st = None
    if plan.return_stats:
        P = plan.n_gauss
        st = dict(accum_weights=torch.zeros(P + 1, device=dev), area_proj=torch.zeros(P + 1, device=dev),
                  area_max=torch.zeros(P, device=dev))
        best_w = torch.zeros(n_sub, S2, device=dev)
        best_g = torch.full((n_sub, S2), -1, device=dev, dtype=torch.int64)
    carry = None
    for ch in plan.chunks:
        subs, idx = ch["subs"], ch["idx"]
        if ch["k0"] == 0:
            carry = None
        ch["carry_all"] = carry[0] if carry is not None else None
        tg = _gather(tab, idx)
        w, cum, _, _, _ = _front(tg, ch["x0"], ch["y0"], ch["carry_all"], c, False)
        out4.index_add_(0, subs, torch.bmm(w, tg[6:10].permute(1, 2, 0)))
        last = cum[:, :, -1].clone()
        # log T of the accepted part: the last accepted cum (cum is non-increasing), else the carry
        acc = F.threshold_(cum, c.t_keep, 0.0).amin(dim=2)
        if carry is not None:
            acc = torch.minimum(acc, carry[1])
        log_t[subs] = acc
        carry = (last, acc)
        if st is not None:
            with torch.no_grad():
                wgt = (w if plan.pix_ok is None else w * plan.pix_ok[subs][:, :, None]).float()
                flat = idx.reshape(-1)
                st["accum_weights"].index_add_(0, flat, wgt.sum(dim=1).reshape(-1))
                st["area_proj"].index_add_(0, flat, (wgt > 0).sum(dim=1).reshape(-1).float())
                cmax, carg = wgt.max(dim=2)  # first maximum = front-most on ties
                gbest = torch.gather(idx, 1, carg)
                better = cmax > best_w[subs]
                best_w[subs] = torch.where(better, cmax, best_w[subs])
                best_g[subs] = torch.where(better, gbest, best_g[subs])
    if st is not None:
        hit = best_g >= 0
        st["area_max"].index_add_(0, best_g[hit], torch.ones(int(hit.sum()), device=dev))
        st["accum_weights"] = st["accum_weights"][:-1]
        st["area_proj"] = st["area_proj"][:-1]
        st["max_contributor"] = best_g  # (sub-tile layout: rasterize puts it in image layout)
        plan.stats = st
    return out4, torch.exp(log_t)


class _Composite(torch.autograd.Function):
    """Front-to-back blending of all chunks; outputs sum(w [c, 1/z]) per pixel and T_final.

    Forward keeps only the per-Gaussian inputs and the chunk plan; backward recomputes each chunk
    and applies the analytic gradient (as the CUDA backward), so memory stays at one chunk.
    """

    @staticmethod
    def forward(ctx, plan, mean2d, conic, opacity, color, inv_z):
        dt, dev = mean2d.dtype, mean2d.device
        c = _Consts(dt, dev)
        # one row per Gaussian: mean (2), conic a/2, b, c/2, opacity, colour (3), 1/z; padding of the
        # chunks points at an extra all-zero row P: opacity 0, so alpha 0 and no contribution
        tab = torch.cat([mean2d, conic[:, :1] * 0.5, conic[:, 1:2], conic[:, 2:3] * 0.5, opacity[:, None],
                         color, inv_z[:, None]], dim=1)
        tab = torch.cat([tab, torch.zeros(1, 10, dtype=dt, device=dev)])
        out4, t_final = _forward_chunks(plan, tab, c, dt)
        ctx.plan, ctx.tab = plan, tab
        ctx.save_for_backward(t_final)
        return out4, t_final

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out4, g_t):
        plan, tab = ctx.plan, ctx.tab
        (t_final,) = ctx.saved_tensors
        dt, dev = tab.dtype, tab.device
        c = _Consts(dt, dev)
        P = plan.n_gauss
        if g_out4 is None:
            g_out4 = torch.zeros(plan.n_sub, SUB * SUB, 4, dtype=dt, device=dev)
        g_out4 = g_out4.contiguous()
        tgt = (t_final * g_t) if g_t is not None else torch.zeros_like(t_final)
        s_carry = None
        per_pair, pair_idx, pair_org = [], [], []
        for ch in reversed(plan.chunks):
            subs, idx = ch["subs"], ch["idx"]
            tg = _gather(tab, idx)
            w, _, T, h, om = _front(tg, ch["x0"], ch["y0"], ch["carry_all"], c, True)
            g4 = g_out4[subs]  # [B, P, 4]
            f = torch.bmm(g4, tg[6:10].transpose(0, 1))  # dL/d(weight) per entry: c . gC + gD / z
            wf = w * f
            s = wf.flip(2).cumsum_(2).flip(2)  # sum_{j >= k} w_j f_j
            if ch["k1"] < ch["n"]:  # the later K-chunks of this sub-tile, processed just before
                s += s_carry[:, :, None]
            if ch["k0"] > 0:
                s_carry = s[:, :, 0].clone()
            # dL/dalpha_k = T_k f_k - (S_after_k + T_final gT) / (1 - alpha_k) on accepted entries
            # (T_k = 0 off them, so T masks the first term and sign(T) the second)
            s.sub_(wf).add_(tgt[subs][:, :, None]).mul_(torch.sign(T).div_(om))
            dalpha = f.mul_(T).sub_(s)
            del s, wf, f, T, om
            # alpha = min(0.99, o G): only unclamped (o G < 0.99) entries with alpha >= 1/255 pass
            dalpha.mul_(F.threshold_(h.neg_(), -c.amax, 0.0))  # -dL/dpower = dalpha * -(o G)
            mom = torch.matmul(c.basis, dalpha)  # [B, 6, K]: sums over pixels of -dL/dpower (1, x, y, ...)
            gcz = torch.bmm(w.transpose(1, 2), g4)  # [B, K, 4]
            per_pair.append(torch.cat([mom.transpose(1, 2), gcz], dim=2).reshape(-1, 10))
            pair_idx.append(idx.reshape(-1))
            org = torch.stack([ch["x0"], ch["y0"]], 1)[:, None, :]
            pair_org.append(org.expand(-1, idx.shape[1], 2).reshape(-1, 2))
        grads = torch.zeros(P + 1, 10, dtype=dt, device=dev)
        if per_pair:
            pp, idx, org = torch.cat(per_pair), torch.cat(pair_idx), torch.cat(pair_org)
            tg = tab.index_select(0, idx)
            # moments of -dL/dpower over d = mean - pixel = (ml - px, ml - py), about the sub-tile centre
            ml = tg[:, 0:2] - org - c.half
            mx, my = ml.unbind(1)
            s0, sx, sy, sxx, syy, sxy = pp[:, :6].unbind(1)
            sdx = mx * s0 - sx
            sdy = my * s0 - sy
            sdxx = mx * mx * s0 - 2 * mx * sx + sxx
            sdyy = my * my * s0 - 2 * my * sy + syy
            sdxy = mx * my * s0 - mx * sy - my * sx + sxy
            A, B_, C_, o = 2 * tg[:, 2], tg[:, 3], 2 * tg[:, 4], tg[:, 5]
            # power = -0.5 (A dx^2 + C dy^2) - B dx dy; dL/do = sum dL/dpower / o (o > 0 on real pairs)
            g = torch.stack([A * sdx + B_ * sdy, C_ * sdy + B_ * sdx, 0.5 * sdxx, sdxy, 0.5 * sdyy,
                             -s0 / torch.where(o > 0, o, torch.ones_like(o))], dim=1)
            grads.index_add_(0, idx, torch.cat([g, pp[:, 6:]], dim=1))
        grads = grads[:P]
        return (None, grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, 6:9], grads[:, 9])


def rasterize(s, pre, return_stats=False):
    H, W = int(s.image_height), int(s.image_width)
    dev, dt = pre["mean2d"].device, pre["mean2d"].dtype
    P = pre["mean2d"].shape[0]
    sgx, sgy = (W + SUB - 1) // SUB, (H + SUB - 1) // SUB
    n_sub = sgx * sgy
    gauss, counts = _subtile_pairs(pre, sgx, sgy)
    offsets = torch.cumsum(counts, 0) - counts
    gauss_ext = torch.cat([gauss, torch.tensor([P], device=dev)])  # padding -> dummy Gaussian P
    n_pairs = gauss.shape[0]
    sx0 = (torch.arange(n_sub, device=dev) % sgx) * SUB
    sy0 = (torch.arange(n_sub, device=dev) // sgx) * SUB
    pix_ok = None  # pixels of the sub-tiles inside the image (for the stats; the image is cropped)
    if return_stats and (W % SUB or H % SUB):
        ly, lx = torch.meshgrid(torch.arange(SUB, device=dev), torch.arange(SUB, device=dev), indexing="ij")
        pix_ok = ((sx0[:, None] + lx.reshape(1, -1)) < W) & ((sy0[:, None] + ly.reshape(1, -1)) < H)
    budget = max(1, CHUNK_ELEMENTS // (SUB * SUB))
    chunks = []
    for subs, k0, k1 in _chunk_plan(counts, budget):
        kk = torch.arange(k0, k1, device=dev)
        cnt = counts[subs]
        pos = torch.where(kk[None, :] < cnt[:, None], offsets[subs][:, None] + kk[None, :], n_pairs)
        chunks.append(dict(subs=subs, idx=gauss_ext[pos], k0=k0, k1=k1, n=int(cnt[0]),
                           x0=sx0[subs].to(dt), y0=sy0[subs].to(dt)))
    plan = _Plan(n_sub, chunks, return_stats, P, pix_ok)
    out4, t_final = _Composite.apply(plan, pre["mean2d"], pre["conic"], pre["opacity"], pre["color"],
                                     pre["inv_z"])

    def untile(x):  # [sub-tiles, SUB^2, C] -> [C, H, W]
        C = x.shape[-1]
        x = x.reshape(sgy, sgx, SUB, SUB, C).permute(4, 0, 2, 1, 3).reshape(C, sgy * SUB, sgx * SUB)
        return x[:, :H, :W]

    img = untile(out4)
    t_img = untile(t_final[..., None])
    rgb = img[:3] + t_img * s.bg.to(dt)[:, None, None]
    if plan.stats is not None:
        plan.stats["max_contributor"] = untile(plan.stats["max_contributor"][..., None])[0]
    return rgb, img[3:4], plan.stats


class GaussianRasterizer(contract.RasterizerModule):
    def forward(self, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None,
                rotations=None, cov3D_precomp=None, return_stats=False):
        s = self.raster_settings
        contract.check_inputs(shs, colors_precomp, scales, rotations, cov3D_precomp)
        check_settings(s)
        pre = preprocess(s, means3D, means2D, opacities, shs if shs is None else sh_features(shs), colors_precomp,
                         scales, rotations, cov3D_precomp)
        names, _ = contract.stats_request(return_stats)
        color, invdepth, stats = rasterize(s, pre, bool(names))
        if names:
            return color, pre["radii"], invdepth, {n: stats[n] for n in names}
        return color, pre["radii"], invdepth
