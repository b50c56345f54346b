"""SparseGaussianAdam: torch's Adam on the visible rows, untouched hidden rows; CUDA kernel == spec."""
import io
import os
import subprocess
import sys

import pytest
import torch

from training.densify import DensifyConfig, DensifyStrategy
from training.optim import SparseGaussianAdam, adam_rows_torch, load_optimizer_state
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
    s = DensifyStrategy(DensifyConfig.from_opt(opt, extent=1.0))
    state = s.initialize_state(40, "cpu")
    state["grad_accum"][:10] = 1.0
    state["denom"][:] = 1.0
    s.densify_and_prune(m, state)
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


def test_gaussian_adam_equals_torch_adam_on_cpu():
    """GaussianAdam (the CUDA default) on the CPU spec path: torch's Adam, groups with their own lr."""
    from training.optim import GaussianAdam  # noqa: PLC0415
    params, grads = _pairs(), _grads(5)
    ref, ref_opt = _run(torch.optim.Adam, params, grads, [None] * 5)
    got, got_opt = _run(GaussianAdam, params, grads, [None] * 5)
    for r, o in zip(ref, got):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_opt.state[o]["exp_avg_sq"], ref_opt.state[r]["exp_avg_sq"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_multi_tensor_step_matches_spec(sparse):
    """adam_multi_ (one launch for every group, each with its lr and step count) == adam_rows_torch per group."""
    import diff_gaussian_rasterization as dgr  # noqa: PLC0415
    g = torch.Generator(device="cuda").manual_seed(1)
    n = 70_001
    shapes = [(n, 3), (n, 1, 3), (n, 15, 3), (n, 1), (n, 3), (n, 4)]
    ps, gs, ms = ([torch.randn(s, device="cuda", generator=g) for s in shapes] for _ in range(3))
    vs = [torch.rand(s, device="cuda", generator=g) for s in shapes]
    vis = torch.rand(n, device="cuda", generator=g) > 0.3
    rows = vis if sparse else torch.ones(n, dtype=torch.bool, device="cuda")
    lrs, steps = [1e-3 * (k + 1) for k in range(6)], [3, 3, 3, 3, 1, 9]
    want = [[t.clone() for t in trio] for trio in zip(ps, ms, vs)]
    for (p, m, v), gr, lr, st in zip(want, gs, lrs, steps):
        adam_rows_torch(p, gr, m, v, rows, lr, 0.9, 0.999, 1e-15, st)
    dgr._C.adam_multi_(ps, gs, ms, vs, vis if sparse else torch.empty(0, dtype=torch.bool, device="cuda"), lrs,
                       steps, 0.9, 0.999, 1e-15)
    for got, w in zip(zip(ps, ms, vs), want):
        for a, b in zip(got, w):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_default_optimizer_tracks_torch_adam():
    """The CUDA default (GaussianAdam) against torch's fused Adam over a few steps of a model."""
    from training.optim import GaussianAdam, make_optimizer  # noqa: PLC0415
    torch.manual_seed(0)
    vals = [torch.randn(s, device="cuda") for s in SHAPES]
    runs = []
    for make in (lambda gr: make_optimizer(gr, "default", "cuda"),
                 lambda gr: torch.optim.Adam(gr, lr=0.0, eps=1e-15, fused=True)):
        ps = [torch.nn.Parameter(v.clone()) for v in vals]
        opt = make([{"params": [p], "lr": 0.01 * (i + 1)} for i, p in enumerate(ps)])
        for step in range(4):
            for k, p in enumerate(ps):
                p.grad = torch.sin(p.detach() * (step + k + 1))
            opt.step()
        runs.append((opt, ps))
    assert isinstance(runs[0][0], GaussianAdam)
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gaussian_adam_reads_and_writes_torch_optimizer_state_dicts():
    """Checkpoints hold optimizer.state_dict(): GaussianAdam's is torch's format, and either loads into the other
    and continues the same run."""
    from training.optim import GaussianAdam  # noqa: PLC0415
    params, grads = _pairs(), _grads(6)
    for first, second in ((torch.optim.Adam, GaussianAdam), (GaussianAdam, torch.optim.Adam),
                          (GaussianAdam, SparseGaussianAdam)):
        ref, _ = _run(first, params, grads, [None] * 6)
        half, opt = _run(first, params, grads[:3], [None] * 3)
        sd = opt.state_dict()
        assert sorted(sd) == ["param_groups", "state"] and sorted(sd["state"]) == [0, 1, 2, 3]
        # the step count as torch's (a tensor), whatever the optimizer holds it as between steps
        assert all(torch.is_tensor(st["step"]) and float(st["step"]) == 3 for st in sd["state"].values())
        assert [g["params"] for g in sd["param_groups"]] == [[0], [1], [2], [3]]
        ps = [torch.nn.Parameter(p.detach().clone()) for p in half]
        cont = second([{"params": [p], "lr": 0.0} for p in ps], eps=1e-15)
        load_optimizer_state(cont, torch.load(_saved(sd), weights_only=False))  # (as a checkpoint: a copy)
        assert [g["lr"] for g in cont.param_groups] == [0.01 * (i + 1) for i in range(4)]  # the saved settings
        for grads_k in grads[3:]:
            for p, gr in zip(ps, grads_k):
                p.grad = gr.clone()
            cont.step() if second is not SparseGaussianAdam else cont.step(torch.ones(30, dtype=torch.bool))
        for a, b in zip(ps, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="different number"):
        GaussianAdam([{"params": [torch.nn.Parameter(torch.zeros(2))]}]).load_state_dict(sd)


def _saved(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_gaussian_adam_does_not_import_torch_dynamo():
    """A torch Optimizer imports torch._dynamo (seconds of start-up); the default optimizer is not one, on the CPU
    either."""
    code = "\n".join([
        "import sys, torch",
        "from training.optim import GaussianAdam, SparseGaussianAdam, make_optimizer",
        "p = torch.nn.Parameter(torch.zeros(4, 3))",
        "p.grad = torch.ones(4, 3)",
        "d = make_optimizer([{'params': [p], 'lr': 0.1, 'name': 'xyz'}], 'default', 'cpu')",
        "assert type(d) is GaussianAdam, type(d)",
        "d.step()",
        "o = SparseGaussianAdam([{'params': [p], 'lr': 0.1, 'name': 'xyz'}])",
        "o.step(torch.ones(4, dtype=torch.bool))",
        "GaussianAdam([{'params': [p], 'lr': 0.1}]).load_state_dict(o.state_dict())",
        "print('torch._dynamo' in sys.modules)"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
