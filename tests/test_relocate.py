"""--student_relocate: transparent Gaussians moved onto live ones at a fixed count (distill/relocate.py)."""
import math

import pytest
import torch

from arguments import DistillParams
from arguments.fields import scale_steps
from distill.relocate import MAX_SHARE, relocate_transparent, split_opacity_and_scale
from distill.roles import relocate_iterations
from scene.gaussian_model import PARAM_NAMES
from tests.test_training import opt_defaults, random_model
from utils.general_utils import inverse_sigmoid


@pytest.mark.parametrize("o", [0.006, 0.3, 0.9, 0.999])
@pytest.mark.parametrize("n", [1, 2, 3, 7, MAX_SHARE])
def test_the_split_keeps_the_centre_opacity_and_the_profiles_integral(o, n):
    o_new, factor = split_opacity_and_scale(torch.tensor([o], dtype=torch.float64), torch.tensor([n]))
    o_new, factor = float(o_new), float(factor)
    assert 1 - (1 - o_new) ** n == pytest.approx(o, rel=1e-9)  # the n copies composite to o at the centre
    # along an axis through the centre, n coincident copies of scale factor x sigma (sigma = 1) composite to a
    # profile whose integral is the single Gaussian's, o x sqrt(2 pi): integrated here by the trapezoid rule
    x = torch.linspace(-14 * factor, 14 * factor, 200_001, dtype=torch.float64)
    profile = 1 - (1 - o_new * torch.exp(-0.5 * (x / factor) ** 2)) ** n
    assert float(torch.trapezoid(profile, x)) == pytest.approx(o * math.sqrt(2 * math.pi), rel=1e-6)
    if n == 1:
        assert (o_new, factor) == (pytest.approx(o), pytest.approx(1.0))


def _trained(n=60, dead=(3, 10, 11, 40, 59), device="cpu"):
    """A model whose Adam moments are non-zero, with the Gaussians ``dead`` below an opacity of 0.005."""
    m = random_model(n, seed=4)
    m.device = torch.device(device)
    m.params = {k: torch.nn.Parameter(v.detach().to(device)) for k, v in m.params.items()}
    m.training_setup(opt_defaults())
    g = torch.Generator().manual_seed(6)
    for p in m.params.values():
        p.grad = torch.randn(p.shape, generator=g).to(device)
    m.optimizer_step(torch.ones(n, dtype=torch.bool, device=device))
    op = torch.rand(n, 1, generator=torch.Generator().manual_seed(5)) * 0.8 + 0.1
    op[list(dead)] = 0.001
    m.params["opacity"].data.copy_(inverse_sigmoid(op).to(device))
    return m


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _snapshot(m):
    return ({k: p.detach().clone() for k, p in m.params.items()},
            {k: {s: m.optimizer.state[p][s].clone() for s in ("exp_avg", "exp_avg_sq")} for k, p in m.params.items()})


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_relocation_moves_the_transparent_onto_live_ones_in_place(device):
    dead = [3, 10, 11, 40, 59]
    m = _trained(dead=dead, device=device)
    (before, moments), ptrs = _snapshot(m), {k: p.data_ptr() for k, p in m.params.items()}
    rows = {"grad": torch.arange(60.0, device=device) + 1, "blur": torch.ones(60, dtype=torch.bool, device=device)}
    assert relocate_transparent(m, 0.005, _gen(7), rows=rows) == 5
    after = {k: {s: m.optimizer.state[p][s].cpu() for s in ("exp_avg", "exp_avg_sq")} for k, p in m.params.items()}
    assert m.num_points == 60 and {k: p.data_ptr() for k, p in m.params.items()} == ptrs  # in place: graphs hold
    m = m.to("cpu")  # (the checks below on the CPU)
    before, rows = {k: v.cpu() for k, v in before.items()}, {k: v.cpu() for k, v in rows.items()}
    moments = {k: {s: v.cpu() for s, v in d.items()} for k, d in moments.items()}
    xyz, op_before = m.get_xyz.detach(), torch.sigmoid(before["opacity"]).squeeze(1)
    # each dead row now sits on a live source; a source with c copies shares its opacity c + 1 ways
    sources = {}
    for d in dead:
        match = [s for s in range(60) if s not in dead and torch.equal(xyz[s], xyz[d])]
        assert len(match) == 1, d
        sources.setdefault(match[0], []).append(d)
    op = m.get_opacity.detach().squeeze(1)
    assert (op >= 0.005 - 1e-7).all()
    for s, copies in sources.items():
        share = op[s].double()
        assert float(1 - (1 - share) ** (len(copies) + 1)) == pytest.approx(float(op_before[s]), rel=1e-4)
        _, factor = split_opacity_and_scale(op_before[s:s + 1], torch.tensor([len(copies) + 1]))
        for r in [s] + copies:
            for k in ("f_dc", "f_rest", "rotation"):
                assert torch.equal(m.params[k][r], before[k][s]), (k, r)
            torch.testing.assert_close(m.get_scaling[r], torch.exp(before["scaling"][s]) * factor)
    touched = sorted(set(sources) | set(dead))
    untouched = [i for i in range(60) if i not in touched]
    for k, p in m.params.items():
        assert torch.equal(p.detach()[untouched], before[k][untouched]), k
        for s in ("exp_avg", "exp_avg_sq"):
            st = after[k][s]
            assert (st[touched] == 0).all() and torch.equal(st[untouched], moments[k][s][untouched]), (k, s)
    assert (rows["grad"][touched] == 0).all()
    assert torch.equal(rows["grad"][untouched], torch.arange(60.0)[untouched] + 1)
    assert not rows["blur"][touched].any() and rows["blur"][untouched].all()


def test_relocation_is_reproducible_by_seed():
    results = []
    for seed in (7, 7, 8):
        m = _trained(n=200, dead=range(0, 200, 5))
        relocate_transparent(m, 0.005, _gen(seed))
        results.append(m.get_xyz.detach())
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])


@pytest.mark.parametrize("dead", [(), tuple(range(60))])
def test_nothing_moves_without_a_transparent_or_a_live_gaussian(dead):
    m = _trained(dead=dead)
    before, _ = _snapshot(m)
    assert relocate_transparent(m, 0.005, _gen(1)) == 0
    assert all(torch.equal(m.params[k].detach(), before[k]) for k in PARAM_NAMES)


def test_relocation_runs_after_the_last_cut_until_the_schedule_ends():
    opt = opt_defaults(iterations=42_000)  # the student's: 30,000 and its 0.4 tail
    assert relocate_iterations(opt, DistillParams.defaults()) == set()  # off by default
    dp = DistillParams.defaults(student_relocate=100)  # cuts at 16,000 / 17,000 / 18,000
    assert relocate_iterations(opt, dp) == set(range(18_100, 30_000, 100))
    assert relocate_iterations(opt, DistillParams.defaults(student_relocate=100, student_init="std")) == \
        set(range(100, 30_000, 100))
    quarter = scale_steps(DistillParams.defaults(student_relocate=100), 0.25)  # --steps_scale scales it too
    assert relocate_iterations(scale_steps(opt_defaults(iterations=42_000), 0.25), quarter) == \
        set(range(4_525, 7_500, 25))
