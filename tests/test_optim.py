"""SparseGaussianAdam: torch's Adam on the visible rows, untouched hidden rows; CUDA kernel == spec."""
import pytest
import torch

from training.densify import DensifyStrategy
from training.optim import SparseGaussianAdam, adam_rows_torch
from tests.test_training import opt_defaults, random_model

SHAPES = [(30, 3), (30, 1, 3), (30, 15, 3), (30, 1)]


def _pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in SHAPES]


def _run(opt_cls, params, grads_per_step, visible_per_step, **kw):
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = opt_cls([{"params": [p], "lr": 0.01 * (i + 1)} for i, p in enumerate(ps)], eps=1e-15, **kw)
    for grads, vis in zip(grads_per_step, visible_per_step):
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        opt.step() if vis is None else opt.step(vis)
    return ps, opt


def _grads(steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(steps)]


def test_all_visible_equals_torch_adam():
    params, grads = _pairs(), _grads(6)
    ref, ref_opt = _run(torch.optim.Adam, params, grads, [None] * 6)
    got, got_opt = _run(SparseGaussianAdam, params, grads, [torch.ones(30, dtype=torch.bool)] * 6)
    for r, o in zip(ref, got):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(got_opt.state[o][key], ref_opt.state[r][key])


def test_hidden_rows_keep_value_and_moments():
    params, grads = _pairs(), _grads(4)
    vis = torch.zeros(30, dtype=torch.bool)
    vis[::3] = True  # the same rows are visible every step
    got, got_opt = _run(SparseGaussianAdam, params, grads, [vis] * 4)
    # visible rows follow Adam on their own rows; hidden rows never moved and have zero moments
    ref, _ = _run(torch.optim.Adam, [p[vis] for p in params], [[gr[vis] for gr in step] for step in grads],
                  [None] * 4)
    for p0, o, r in zip(params, got, ref):
        torch.testing.assert_close(o[vis], r, rtol=1e-5, atol=1e-6)
        assert torch.equal(o.detach()[~vis], p0[~vis])
        assert (got_opt.state[o]["exp_avg"][~vis] == 0).all()
        assert (got_opt.state[o]["exp_avg_sq"][~vis] == 0).all()


def test_densification_edits_sparse_adam_state():
    m = random_model(40)
    opt = opt_defaults(optimizer_type="sparse_adam")
    m.training_setup(opt)
    assert isinstance(m.optimizer, SparseGaussianAdam)
    for _ in range(2):
        sum((p ** 2).sum() for p in m.params.values()).backward()
        m.optimizer_step(torch.ones(m.num_points, dtype=torch.bool))
    s = DensifyStrategy(opt, extent=1.0)
    s.reset_stats(40, "cpu")
    s.grad_accum[:10] = 1.0
    s.denom[:] = 1.0
    s.densify_and_prune(m)
    sum((p ** 2).sum() for p in m.params.values()).backward()
    m.optimizer_step(torch.ones(m.num_points, dtype=torch.bool))  # shapes still line up
    for p in m.params.values():
        assert m.optimizer.state[p]["exp_avg"].shape == p.shape
        assert int(m.optimizer.state[p]["step"]) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_kernel_matches_spec():
    import diff_gaussian_rasterization as dgr  # noqa: PLC0415 (only importable where it was built)
    g = torch.Generator(device="cuda").manual_seed(0)
    for shape in [(100_003, 3), (5000, 15, 3), (7, 1)]:
        p, gr, m = (torch.randn(shape, device="cuda", generator=g) for _ in range(3))
        v = torch.rand(shape, device="cuda", generator=g)
        vis = torch.rand(shape[0], device="cuda", generator=g) > 0.4
        want = [t.clone() for t in (p, m, v)]
        adam_rows_torch(want[0], gr, want[1], want[2], vis, 0.003, 0.9, 0.999, 1e-15, 7)
        dgr._C.adam_rows_(p, gr, m, v, vis, 0.003, 0.9, 0.999, 1e-15, 7)
        for got, w in zip((p, m, v), want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)
