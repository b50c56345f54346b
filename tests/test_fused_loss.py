"""Fused L1 + SSIM loss (csrc/loss.cu) against its specification, utils/loss_utils.photometric_loss.

CPU tests (run everywhere): a PyTorch emulation of the kernels' algorithm (separable blur over tiles with a
5-pixel halo and zero padding, the per-pixel partial derivatives of the forward and the blurred backward)
against autograd of the spec, which documents and proves the backward formula; and the dispatcher's
fallback to the spec for CPU tensors. GPU tests (skipped without CUDA or without the compiled function):
the kernels' loss and render gradient against the spec evaluated in float64.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from utils import loss_utils
from utils.loss_utils import C1, C2, photometric_loss

HALO = 5
TILE_W, TILE_H = 32, 16  # the kernels' output tile (loss.cu)


def _window_1d(dtype):
    # the 1D factor of the spec's 11x11 window: float64 Gaussian, normalised, then cast
    x = torch.arange(2 * HALO + 1, dtype=torch.float64) - HALO
    g = torch.exp(-x ** 2 / (2 * 1.5 ** 2))
    return (g / g.sum()).to(dtype)


def _blur(m):
    """Zero-padded 'same' 11x11 Gaussian blur of [..., H, W] as the kernels do it: a horizontal pass over
    the padded rows (halo rows included), then a vertical pass."""
    g = _window_1d(m.dtype)
    H, W = m.shape[-2:]
    p = F.pad(m, (HALO, HALO, HALO, HALO))  # [..., H+10, W+10], zeros outside the image
    h = sum(g[j] * p[..., :, j:j + W] for j in range(2 * HALO + 1))  # [..., H+10, W]
    return sum(g[i] * h[..., i:i + H, :] for i in range(2 * HALO + 1))  # [..., H, W]


def _blur_tiled(m):
    """_blur with the kernels' index arithmetic: per output tile of TILE_W x TILE_H pixels, an input tile
    of (TILE_H+10) x (TILE_W+10) with zeros outside the image, horizontal pass into (TILE_H+10) x TILE_W,
    vertical pass into the tile's pixels inside the image."""
    g = _window_1d(m.dtype)
    C, H, W = m.shape
    out = torch.zeros_like(m)
    in_h, in_w = TILE_H + 2 * HALO, TILE_W + 2 * HALO
    r = torch.arange(in_h)[:, None]
    c = torch.arange(in_w)[None, :]
    for by in range((H + TILE_H - 1) // TILE_H):
        for bx in range((W + TILE_W - 1) // TILE_W):
            x0, y0 = bx * TILE_W, by * TILE_H
            gy, gx = y0 - HALO + r, x0 - HALO + c  # [in_h, 1], [1, in_w]
            inside = (gx >= 0) & (gx < W) & (gy >= 0) & (gy < H)
            tile = torch.where(inside, m[:, gy.clamp(0, H - 1), gx.clamp(0, W - 1)], torch.zeros((), dtype=m.dtype))
            h = sum(g[j] * tile[:, :, j:j + TILE_W] for j in range(2 * HALO + 1))  # [C, in_h, TILE_W]
            v = sum(g[i] * h[:, i:i + TILE_H, :] for i in range(2 * HALO + 1))  # [C, TILE_H, TILE_W]
            ph, pw = min(TILE_H, H - y0), min(TILE_W, W - x0)
            out[:, y0:y0 + ph, x0:x0 + pw] = v[:, :ph, :pw]
    return out


def emulate_forward(x, ys, ws, lam, blur=_blur):
    """The forward kernel's algorithm: loss, per-target (L1 mean, SSIM mean), and the maps the backward
    blurs: A = sum_k c_k dS_k/dmu1, B = sum_k c_k dS_k/de11, C_k = c_k dS_k/de12 with c_k = -lam w_k / N
    (dL/dS_k at each pixel). x, y_k: [3, H, W]; mu = blur(x), e11 = blur(x^2), e12 = blur(x y_k)."""
    N = x.numel()
    mu1, e11 = blur(x), blur(x * x)
    loss = 0.0
    stats = []
    A = torch.zeros_like(x)
    B = torch.zeros_like(x)
    Cs = []
    for y, w in zip(ys, ws):
        mu2, e22, e12 = blur(y), blur(y * y), blur(x * y)
        mu12 = mu1 * mu2
        a1 = 2 * mu12 + C1
        a2 = 2 * (e12 - mu12) + C2
        b1 = mu1 * mu1 + mu2 * mu2 + C1
        b2 = (e11 - mu1 * mu1) + (e22 - mu2 * mu2) + C2
        den = b1 * b2
        S = a1 * a2 / den
        inv = 1 / den
        l1 = (x - y).abs()
        loss = loss + w * ((1 - lam) * l1.sum() / N + lam * (1 - S.sum() / N))
        stats.append((l1.mean(), S.mean()))
        c = -lam * w / N
        # S = a1 a2 / (b1 b2) with a1' = 2 mu2, a2' = -2 mu2, b1' = 2 mu1, b2' = -2 mu1 along mu1
        A = A + c * (2 * mu2 * (a2 - a1) * inv - 2 * mu1 * S * (1 / b1 - 1 / b2))
        B = B + c * (-S / b2)  # only b2 holds e11
        Cs.append(c * 2 * a1 * inv)  # only a2 holds e12, with factor 2
    return loss, stats, (A, B, Cs)


def emulate_backward(x, ys, ws, lam, maps, grad_out=1.0, blur=_blur):
    """The backward kernel: dL/dx = blur(A) + 2 x blur(B) + sum_k y_k blur(C_k) + sum_k (1-lam) w_k / N
    sign(x - y_k), times the upstream gradient. The blur is its own adjoint: the window is symmetric and
    the zero padding drops exactly the out-of-image terms of the forward sums."""
    A, B, Cs = maps
    N = x.numel()
    g = blur(A) + 2 * x * blur(B)
    for y, w, C in zip(ys, ws, Cs):
        g = g + y * blur(C) + (1 - lam) * w / N * torch.sign(x - y)
    return grad_out * g


def _spec(x, ys, ws, lam):
    extra = None if len(ys) == 1 else (ys[1], ws[1])
    assert ws[0] == 1.0
    return photometric_loss(x, ys[0], lam, extra)


def _spec_with_grad(x, ys, ws, lam):
    xr = x.detach().clone().requires_grad_(True)
    loss = _spec(xr, ys, ws, lam)
    loss.backward()
    return loss.detach(), xr.grad


def _structured(H, W, seed, dtype=torch.float64, device="cpu"):
    """A render and two targets in [0, 1] with strong structure at the image borders (edges, a bright
    frame, a checkerboard corner) and some pixels where render == target exactly (the L1 kink)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, H, W, generator=gen, dtype=torch.float64)
    x[:, 0, :] = 1.0
    x[:, :, -1] = 0.0
    if H > 2 and W > 2:
        x[1, :3, :3] = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])[:min(3, H), :min(3, W)]
    y0 = (x + 0.2 * torch.randn(3, H, W, generator=gen, dtype=torch.float64)).clamp(0, 1)
    y0[:, -1, :] = 0.9
    y1 = torch.rand(3, H, W, generator=gen, dtype=torch.float64)
    eq = torch.rand(3, H, W, generator=gen) < 0.1
    y0[eq] = x[eq]
    # float32-representable values, so that a float64 reference sees exactly the kernels' inputs (else
    # two values that round to the same float give a different L1 subgradient)
    return tuple(t.float().to(device, dtype) for t in (x, y0, y1))


SIZES = [(1, 1), (7, 13), (17, 5), (16, 32), (33, 65), (40, 29)]
CASES = [(1, (1.0,)), (2, (1.0, 0.7))]


# ---- CPU: the algorithm against autograd of the spec (float64, so only the formulas are compared) ----

@pytest.mark.parametrize("H,W", SIZES)
@pytest.mark.parametrize("lam", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("K,ws", CASES)
def test_emulation_matches_spec_cpu(H, W, lam, K, ws):
    x, y0, y1 = _structured(H, W, seed=H * 100 + W)
    ys = [y0, y1][:K]
    ref_loss, ref_grad = _spec_with_grad(x, ys, ws, lam)
    loss, stats, maps = emulate_forward(x, ys, ws, lam)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-14)
    assert torch.isclose(stats[0][1], loss_utils.ssim(x, y0), rtol=1e-12)
    g = emulate_backward(x, ys, ws, lam, maps, grad_out=1.7)
    torch.testing.assert_close(g, 1.7 * ref_grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("H,W", [(1, 1), (16, 32), (17, 33), (40, 70), (5, 100)])
def test_tiled_blur_index_math_cpu(H, W):
    m = torch.rand(2, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(H + W))
    w2 = _window_1d(torch.float64)
    ref = F.conv2d(m[:, None], (w2[:, None] * w2[None, :])[None, None], padding=HALO)[:, 0]
    torch.testing.assert_close(_blur(m), ref, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(_blur_tiled(m), ref, rtol=1e-12, atol=1e-15)


def test_emulation_target_equal_to_render_cpu():
    x, _, y1 = _structured(19, 23, seed=3)
    for ys, ws in (([x.clone()], (1.0,)), ([x.clone(), y1], (1.0, 0.5))):
        ref_loss, ref_grad = _spec_with_grad(x, ys, ws, 0.2)
        loss, stats, maps = emulate_forward(x, ys, ws, 0.2, blur=_blur_tiled)
        torch.testing.assert_close(stats[0][1], torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-14)
        g = emulate_backward(x, ys, ws, 0.2, maps, blur=_blur_tiled)
        torch.testing.assert_close(g, ref_grad, rtol=1e-9, atol=1e-14)


def test_emulation_float32_error_is_small_cpu():
    """The kernels compute in float32; the same algorithm in float32 stays within the GPU tests' tolerances
    of the float64 spec (so these tolerances are attainable, and tight enough to catch a wrong term)."""
    x, y0, y1 = _structured(61, 47, seed=7)
    ys, ws, lam = [y0, y1], (1.0, 0.7), 0.2
    ref_loss, ref_grad = _spec_with_grad(x, ys, ws, lam)
    loss, _, maps = emulate_forward(x.float(), [y.float() for y in ys], ws, lam)
    g = emulate_backward(x.float(), [y.float() for y in ys], ws, lam, maps)
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * abs(float(ref_loss))
    _assert_grad_close(g.double(), ref_grad)


def _assert_grad_close(g, ref):
    # per-pixel gradients scale with 1 / (3HW): compare them in units of that
    n = ref.numel()
    torch.testing.assert_close(g * n, ref * n, rtol=1e-4, atol=1e-5)


# ---- CPU: the dispatcher keeps the spec for CPU tensors ----

class _NoFused:
    HAS_FUSED_LOSS = True

    @staticmethod
    def fused_photometric_loss(*a, **k):
        raise AssertionError("the fused path must not be taken for CPU tensors")


def test_cpu_tensors_use_the_pytorch_spec(monkeypatch):
    import gaussian_renderer  # noqa: PLC0415
    monkeypatch.setattr(gaussian_renderer, "_cuda_module", _NoFused)
    x, y0, y1 = _structured(9, 12, seed=1, dtype=torch.float32)
    x.requires_grad_(True)
    for extra in (None, (y1, 0.5)):
        loss = photometric_loss(x, y0, 0.2, extra)
        ys, ws = ([y0], (1.0,)) if extra is None else ([y0, y1], (1.0, 0.5))
        ref, _, _ = emulate_forward(x.detach().double(), [y.double() for y in ys], ws, 0.2)
        assert abs(loss.item() - ref.item()) < 1e-6
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None


# ---- GPU: the kernels against the spec ----

def _fused_module():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (the fused loss is a CUDA kernel)")
    import gaussian_renderer  # noqa: PLC0415
    mod = gaussian_renderer.cuda_extension()
    if not mod:
        pytest.skip("the diff_gaussian_rasterization extension is not built")
    if not getattr(mod, "HAS_FUSED_LOSS", False):
        pytest.skip("the built diff_gaussian_rasterization extension has no fused loss (rebuild it)")
    return mod


def _check_fused(H, W, K, ws, lam, seed=0, equal_target=False):
    mod = _fused_module()
    x, y0, y1 = _structured(H, W, seed=seed, dtype=torch.float32, device="cuda")
    if equal_target:
        y0 = x.clone()
    ys = [y0, y1][:K]
    ref_loss, ref_grad = _spec_with_grad(x.double(), [y.double() for y in ys], ws, lam)
    xr = x.clone().requires_grad_(True)
    loss = mod.fused_photometric_loss(xr, ys, ws, lam)
    assert loss.shape == () and loss.dtype == torch.float32
    assert math.isclose(float(loss.detach()), float(ref_loss), rel_tol=1e-5, abs_tol=1e-6)
    loss.backward()
    assert xr.grad.shape == x.shape and torch.isfinite(xr.grad).all()
    _assert_grad_close(xr.grad.double(), ref_grad)


@pytest.mark.parametrize("H,W", [(1, 1), (7, 13), (17, 5), (16, 32), (33, 65), (533, 800)])
@pytest.mark.parametrize("lam", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("K,ws", CASES)
def test_fused_matches_spec_gpu(H, W, lam, K, ws):
    _check_fused(H, W, K, ws, lam, seed=H + 7 * W)


@pytest.mark.parametrize("K,ws", CASES)
def test_fused_target_equal_to_render_gpu(K, ws):
    _check_fused(45, 77, K, ws, 0.2, equal_target=True)
    _check_fused(45, 77, K, ws, 1.0, equal_target=True)


def test_fused_stats_and_upstream_gradient_gpu():
    mod = _fused_module()
    x, y0, y1 = _structured(37, 50, seed=5, dtype=torch.float32, device="cuda")
    xr = x.clone().requires_grad_(True)
    loss, l1s, ssims = mod.fused_photometric_loss(xr, [y0, y1], (1.0, 0.3), 0.2, return_stats=True)
    for k, y in enumerate((y0, y1)):
        assert math.isclose(float(l1s[k]), float((x.double() - y.double()).abs().mean()), rel_tol=1e-5)
        assert math.isclose(float(ssims[k]), float(loss_utils.ssim(x.double(), y.double())), rel_tol=1e-5)
    (2.5 * loss).backward()
    _, ref_grad = _spec_with_grad(x.double(), [y0.double(), y1.double()], (1.0, 0.3), 0.2)
    _assert_grad_close(xr.grad.double(), 2.5 * ref_grad)


def test_fused_half_teacher_target_gpu():
    mod = _fused_module()
    x, y0, y1 = _structured(21, 34, seed=9, dtype=torch.float32, device="cuda")
    y1h = y1.half()
    loss = mod.fused_photometric_loss(x, [y0, y1h], (1.0, 0.5), 0.2)
    ref = _spec(x.double(), [y0.double(), y1h.double()], (1.0, 0.5), 0.2)
    assert math.isclose(float(loss), float(ref), rel_tol=1e-5)


def test_fused_is_deterministic_gpu():
    mod = _fused_module()
    x, y0, y1 = _structured(533, 800, seed=11, dtype=torch.float32, device="cuda")
    out = []
    for _ in range(2):
        xr = x.clone().requires_grad_(True)
        loss = mod.fused_photometric_loss(xr, [y0, y1], (1.0, 0.5), 0.2)
        loss.backward()
        out.append((loss.detach(), xr.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_dispatcher_uses_fused_on_cuda_gpu(monkeypatch):
    mod = _fused_module()
    calls = []
    real = mod.fused_photometric_loss

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(mod, "fused_photometric_loss", spy)
    x, y0, y1 = _structured(30, 41, seed=2, dtype=torch.float32, device="cuda")
    xr = x.clone().requires_grad_(True)
    loss = photometric_loss(xr, y0, 0.2, (y1, 0.4))
    assert calls == [1]
    ref_loss, ref_grad = _spec_with_grad(x.double(), [y0.double(), y1.double()], (1.0, 0.4), 0.2)
    assert math.isclose(float(loss.detach()), float(ref_loss), rel_tol=1e-5)
    loss.backward()
    _assert_grad_close(xr.grad.double(), ref_grad)
    # anything but a float32 [3, H, W] render against constant targets goes to the spec
    calls.clear()
    loss64 = photometric_loss(x.double(), y0.double(), 0.2)
    assert calls == [] and loss64.dtype == torch.float64
    y0r = y0.clone().requires_grad_(True)
    photometric_loss(x, y0r, 0.2).backward()
    assert calls == [] and y0r.grad is not None


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_a_weighted_backward_gives_the_gradients_of_the_weighted_loss(device):
    """backward_weighted(loss, w) (the step's backward; no multiplication at a weight of 1) leaves the gradients
    (weight * loss).backward() leaves, bit for bit."""
    from utils.loss_utils import backward_weighted  # noqa: PLC0415
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 20, 24, generator=g).to(device).requires_grad_()
    y = torch.rand(3, 20, 24, generator=g).to(device)
    for w in (1.0, 0.6, 0.35):
        x.grad = None
        (w * photometric_loss(x * x, y, 0.2)).backward()
        want = x.grad.clone()
        x.grad = None
        backward_weighted(photometric_loss(x * x, y, 0.2), w)
        assert torch.equal(x.grad, want), w
