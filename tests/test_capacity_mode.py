"""The CUDA rasterizer's capacity mode (settings.pair_capacity > 0): no host-device sync in the forward, so that a
CUDA graph can hold a training step. Its outputs must equal the exact mode's whenever the pairs fit; skipped
without CUDA."""
import pytest
import torch

from tests.raster_helpers import assert_close_up_to_atomics, atomics_noise, look_at_settings, random_gaussians

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEV = "cuda"


def _dgr():
    from gaussian_renderer import cuda_extension  # noqa: PLC0415
    dgr = cuda_extension()
    if not dgr:
        pytest.skip("the diff_gaussian_rasterization extension is not built")
    return dgr


def _scene(P=3000, W=200, H=150, seed=0, eye=(0.0, 0.0, -4.0)):
    s = look_at_settings(W=W, H=H, eye=eye, sh_degree=3, device=DEV)
    g = random_gaussians(P, seed=seed, sh_degree=3, device=DEV)
    g["means3D"][::8, 2] = eye[2] - 2.0  # every eighth behind the camera: culled, so the compaction matters (V < P)
    return s, g


def _settings(s, capacity=0, meta=None):
    return _dgr().GaussianRasterizationSettings(*s[:13], pair_capacity=capacity, pair_meta=meta)


def _render(s, g, capacity=0, meta=None, grad=True):
    """color, invdepth, radii and the gradients of a fixed weighted sum of color and invdepth."""
    dgr = _dgr()
    leaves = {k: v.detach().clone().requires_grad_(grad) for k, v in g.items()}
    means2D = torch.zeros_like(leaves["means3D"], requires_grad=grad)
    color, radii, invdepth = dgr.GaussianRasterizer(_settings(s, capacity, meta))(
        leaves["means3D"], means2D, leaves["opacities"], shs=leaves["shs"], scales=leaves["scales"],
        rotations=leaves["rotations"])
    grads = {}
    if grad:
        w = torch.linspace(0.5, 1.5, color.numel(), device=DEV).reshape(color.shape)
        ((color * w).sum() + 0.1 * invdepth.sum()).backward()
        grads = {k: v.grad for k, v in leaves.items()} | {"means2D": means2D.grad}
    return color.detach(), invdepth.detach(), radii, grads


def _pairs(s, g):
    """The number of visible Gaussians and of (tile, Gaussian) pairs, from the preprocessing stage alone."""
    out = _dgr().stage_outputs(_settings(s), g["means3D"], g["opacities"], shs=g["shs"], scales=g["scales"],
                               rotations=g["rotations"])
    drawn = out["radii"] > 0
    return int(drawn.sum()), int(out["tiles_touched"][drawn].sum())


@pytest.mark.parametrize("size", [(200, 150), (4112, 4112)], ids=["16-bit tile keys", "32-bit tile keys"])
def test_capacity_mode_equals_the_exact_mode_when_the_pairs_fit(size):
    W, H = size
    P = 3000 if W < 1000 else 400
    s, g = _scene(P=P, W=W, H=H)
    V, R = _pairs(s, g)
    assert 0 < V < P and R > V
    color, invdepth, radii, grads = _render(s, g)
    for capacity in (R, 2 * R + 7):  # an exact fit, and room to spare (sentinel entries after the pairs)
        meta = torch.full((3,), -5, dtype=torch.int32, device=DEV)
        c2, d2, r2, g2 = _render(s, g, capacity, meta)
        assert meta.tolist() == [V, R, 0]
        # the same pairs in the same order: the images are bit for bit the exact mode's
        assert torch.equal(c2, color) and torch.equal(d2, invdepth) and torch.equal(r2, radii)
        assert_close_up_to_atomics(grads, g2)  # (the backward adds with atomics: float order only)


def test_pairs_past_the_capacity_are_dropped_and_flagged():
    s, g = _scene()
    V, R = _pairs(s, g)
    color = _render(s, g, grad=False)[0]
    meta = torch.zeros(3, dtype=torch.int32, device=DEV)
    c2, _, _, g2 = _render(s, g, R // 2, meta)
    assert meta.tolist() == [V, R, 1]  # the true counts, and the overflow flag
    assert torch.isfinite(c2).all() and not torch.equal(c2, color)
    assert all(torch.isfinite(v).all() for v in g2.values())
    _render(s, g, R, meta, grad=False)  # the flag is the call's own: cleared when the next one fits
    assert meta.tolist() == [V, R, 0]


def test_no_gaussian_in_view():
    s, g = _scene(P=50)
    g["means3D"] = g["means3D"] - torch.tensor([0.0, 0.0, 10.0], device=DEV)  # all behind the camera
    meta = torch.full((3,), 9, dtype=torch.int32, device=DEV)
    color, _, radii, _ = _render(s, g, 64, meta)
    assert meta.tolist() == [0, 0, 0] and int(radii.abs().sum()) == 0
    assert torch.allclose(color, s.bg.reshape(3, 1, 1).expand_as(color))


def test_the_capacity_mode_does_not_synchronise():
    s, g = _scene()
    _, R = _pairs(s, g)
    meta = torch.zeros(3, dtype=torch.int32, device=DEV)
    _render(s, g, 2 * R, meta)  # (first calls load kernels and allocate)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _render(s, g, 2 * R, meta)  # forward and backward
        with pytest.raises(RuntimeError):
            _render(s, g, grad=False)  # the exact mode reads the pair count back: the check is armed
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_cuda_graph_holds_forward_and_backward():
    """Captured once at one camera, replayed at another after copying its matrices into the static settings:
    the image and gradients of an eager exact-mode render at that camera."""
    dgr = _dgr()
    s, g = _scene()
    s_other = look_at_settings(W=200, H=150, eye=(0.6, -0.3, -3.7), sh_degree=3, device=DEV)
    _, R = _pairs(s, g)
    meta = torch.zeros(3, dtype=torch.int32, device=DEV)
    settings = _settings(s, 3 * R, meta)  # its view, proj, campos and bg are the graph's static inputs
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in g.items()}
    means2D = torch.zeros_like(leaves["means3D"], requires_grad=True)
    w = torch.linspace(0.5, 1.5, 3 * 150 * 200, device=DEV).reshape(3, 150, 200)

    def step():
        color, _, invdepth = dgr.GaussianRasterizer(settings)(
            leaves["means3D"], means2D, leaves["opacities"], shs=leaves["shs"], scales=leaves["scales"],
            rotations=leaves["rotations"])
        ((color * w).sum() + 0.1 * invdepth.sum()).backward()
        return color

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch's graph examples do
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    for t in list(leaves.values()) + [means2D]:
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        color = step()
    for dst, src in ((s.viewmatrix, s_other.viewmatrix), (s.projmatrix, s_other.projmatrix),
                     (s.campos, s_other.campos)):
        dst.copy_(src)
    graph.replay()
    want_color, _, _, want_grads = _render(s_other, g)
    assert meta.tolist()[2] == 0
    assert torch.equal(color, want_color)
    assert_close_up_to_atomics(want_grads, {k: v.grad for k, v in leaves.items()} | {"means2D": means2D.grad})


def test_capacity_mode_needs_its_meta_tensor():
    s, g = _scene(P=20)
    with pytest.raises(RuntimeError, match="pair_meta"):
        _render(s, g, 100, None, grad=False)
    with pytest.raises(RuntimeError, match="pair_meta"):
        _render(s, g, 100, torch.zeros(3, dtype=torch.int64, device=DEV), grad=False)


# (log-scales for a mix of Gaussians within 32 tiles and far beyond at each size: a 60-degree view at ~4 units spans
# ~130 px per unit of scale at 200 px wide, ~2,700 at 4,112; the third queues more Gaussians than the second kernel
# has warps, 8,192, so that its warps take several each)
@pytest.mark.parametrize("W, H, P, scale, queued", [(200, 150, 1500, (-3.5, 0.0), 20),
                                                    (4112, 4112, 600, (-7.0, -1.0), 20),
                                                    (200, 150, 30000, (-2.5, -0.3), 8193)],
                         ids=["16-bit tile keys", "32-bit tile keys", "more queued than warps"])
def test_the_warp_emission_writes_the_threads_pairs(monkeypatch, W, H, P, scale, queued):
    """The warp emission (the default; DGR_EMIT=warp): a Gaussian of more than 32 pairs is queued and written by one
    warp of a second kernel, row by row. The pairs are the one-thread walk's (DGR_EMIT=thread), in the same places:
    the renders are bit for bit equal, in the exact mode, in the capacity mode with room to spare and past the
    capacity (the same pairs dropped); the gradients differ by the atomics' float order only (the gap of two runs of
    one emission)."""
    s = look_at_settings(W=W, H=H, eye=(0.0, 0.0, -4.0), sh_degree=3, device=DEV)
    g = random_gaussians(P, seed=5, sh_degree=3, scale=scale, device=DEV)
    out = _dgr().stage_outputs(_settings(s), g["means3D"], g["opacities"], shs=g["shs"], scales=g["scales"],
                               rotations=g["rotations"])
    touched = out["tiles_touched"][out["radii"] > 0]
    assert int((touched > 32).sum()) >= queued and int((touched <= 32).sum()) >= 20  # (both paths, in many warps)
    V, R = _pairs(s, g)
    runs = {}
    for emit in ("thread", "warp"):
        monkeypatch.setenv("DGR_EMIT", emit)
        runs[emit] = [_render(s, g)]
        for capacity in (2 * R + 7, R // 2):
            meta = torch.zeros(3, dtype=torch.int32, device=DEV)
            runs[emit].append(_render(s, g, capacity, meta))
            assert meta.tolist() == [V, R, int(capacity < R)], (emit, capacity)
    monkeypatch.setenv("DGR_EMIT", "thread")
    # (three runs compared below: the noise of three repeats; with one a run of 32-bit keys once fell outside 4x it)
    noise = atomics_noise(runs["thread"][0][3], *(_render(s, g)[3] for _ in range(3)))
    for k, (a, b) in enumerate(zip(runs["thread"], runs["warp"])):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]), k
        assert_close_up_to_atomics(a[3], b[3], noise)
    monkeypatch.setenv("DGR_EMIT", "warps")
    with pytest.raises(RuntimeError, match="DGR_EMIT must be thread or warp, not 'warps'"):
        _render(s, g, grad=False)
