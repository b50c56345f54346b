"""--student_densify mcmc: growth by opacity-drawn copies, the random thinning of the start, the position noise
(distill/mcmc.py) and its events' schedule."""
import pytest
import torch

from arguments import DistillParams
from arguments.fields import scale_steps
from distill.mcmc import GROWTH, add_position_noise, relocate_and_grow, thin_to
from distill.relocate import add_by_opacity, split_opacity_and_scale
from distill.roles import mcmc_iterations
from scene.gaussian_model import PARAM_NAMES
from tests.test_relocate import _gen, _snapshot, _trained
from tests.test_training import opt_defaults
from utils.general_utils import inverse_sigmoid


def test_added_copies_share_their_sources_opacity_and_scale():
    m = _trained(n=60, dead=())
    before, moments = _snapshot(m)
    rows = {"grad": torch.arange(60.0) + 1}
    assert add_by_opacity(m, 9, 0.005, _gen(3), rows=rows) == 9
    assert m.num_points == 69 and rows["grad"].shape == (69,)
    xyz, op = m.get_xyz.detach(), m.get_opacity.detach().squeeze(1)
    op_before = torch.sigmoid(before["opacity"]).squeeze(1)
    copies = {}
    for c in range(60, 69):  # each copy sits on exactly one source, with all of its other parameters
        match = [s for s in range(60) if torch.equal(xyz[s], xyz[c])]  # (a source's position stays)
        assert len(match) == 1, c
        copies.setdefault(match[0], []).append(c)
    for s, cs in copies.items():
        n = len(cs) + 1
        assert float(1 - (1 - op[s].double()) ** n) == pytest.approx(float(op_before[s]), rel=1e-4)
        _, factor = split_opacity_and_scale(op_before[s:s + 1], torch.tensor([n]))
        for r in [s] + cs:
            for k in ("f_dc", "f_rest", "rotation"):
                assert torch.equal(m.params[k][r], before[k][s]), (k, r)
            torch.testing.assert_close(m.get_scaling[r], torch.exp(before["scaling"][s]) * factor)
            for st in ("exp_avg", "exp_avg_sq"):
                assert (m.optimizer.state[m.params["xyz"]][st][r] == 0).all()
            assert rows["grad"][r] == 0
    untouched = [i for i in range(60) if i not in copies]
    for k in PARAM_NAMES:
        assert torch.equal(m.params[k].detach()[untouched], before[k][untouched]), k
        assert torch.equal(m.optimizer.state[m.params[k]]["exp_avg"][untouched], moments[k]["exp_avg"][untouched])
    assert add_by_opacity(m, 0, 0.005, _gen(3)) == 0 and m.num_points == 69


def test_the_draws_follow_opacity():
    m = _trained(n=40, dead=())
    op = torch.full((40, 1), 0.01)
    op[7] = 0.99
    m.params["opacity"].data.copy_(inverse_sigmoid(op))
    add_by_opacity(m, 30, 0.005, _gen(0))
    on_seven = (m.get_xyz.detach()[40:] == m.get_xyz.detach()[7]).all(1).sum()
    assert on_seven >= 20  # (0.99 of a total 1.38: about 22 of the 30 expected)


def test_an_event_moves_the_transparent_then_grows_a_twentieth_up_to_the_target():
    m = _trained(n=100, dead=(1, 2, 3))
    assert relocate_and_grow(m, 1000, 0.005, _gen(1)) == (3, int(100 * GROWTH))
    assert m.num_points == 105 and (m.get_opacity >= 0.005 - 1e-7).all()
    assert relocate_and_grow(m, 107, 0.005, _gen(1)) == (0, 2) and m.num_points == 107
    assert relocate_and_grow(m, 107, 0.005, _gen(1)) == (0, 0) and m.num_points == 107
    assert relocate_and_grow(m, 50, 0.005, _gen(1)) == (0, 0) and m.num_points == 107  # never shrinks
    few = _trained(n=10, dead=())
    assert relocate_and_grow(few, 1000, 0.005, _gen(1)) == (0, 1) and few.num_points == 11  # (a twentieth of 10: 0)


def test_thinning_keeps_a_random_subset_in_order_reproducibly():
    kept = []
    for seed in (4, 4, 5):
        m = _trained(n=50, dead=())
        before = m.get_xyz.detach().clone()
        assert thin_to(m, 20, _gen(seed)) == 30 and m.num_points == 20
        idx = [int((before == x).all(1).nonzero()) for x in m.get_xyz.detach()]
        assert idx == sorted(idx)
        kept.append(idx)
    assert kept[0] == kept[1] != kept[2]
    m = _trained(n=10, dead=())
    assert thin_to(m, 20, _gen(4)) == 0 and m.num_points == 10


def _noise_model(opacities, scales):
    m = _trained(n=len(opacities), dead=())
    m.params["opacity"].data.copy_(inverse_sigmoid(torch.tensor(opacities)[:, None]))
    m.params["scaling"].data.copy_(torch.log(torch.tensor(scales)))
    m.params["rotation"].data.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(len(opacities), 1))
    return m


def _displacement(m, lr, seed=0):
    before = m.get_xyz.detach().clone()
    add_position_noise(m, lr, 5e5, 0.005, _gen(seed))
    return m.get_xyz.detach() - before


def test_the_noise_moves_the_transparent_along_their_shape_and_leaves_the_opaque():
    n = 400
    opacities = [0.9] * (n // 2) + [0.001] * (n // 2)
    scales = [[0.1, 0.001, 0.001]] * n  # long along x
    d = _displacement(_noise_model(opacities, scales), lr=1e-4)
    opaque, clear = d[: n // 2], d[n // 2:]
    assert opaque.abs().max() < 1e-12  # gate sigmoid(-100 x 0.895): ~1e-39
    # x: eps x 1e-4 x 5e5 x ~0.6 x 0.1^2 ~ 0.3 eps; y, z: 1e4 times smaller
    assert 0.1 < float(clear[:, 0].std()) < 0.6 and float(clear[:, 1:].abs().max()) < 1e-3
    twice = _displacement(_noise_model(opacities, scales), lr=2e-4)
    torch.testing.assert_close(twice, 2 * d)  # (the same draws: linear in the learning rate)


def test_the_noise_follows_the_rotation():
    m = _noise_model([0.001] * 200, [[0.1, 0.001, 0.001]] * 200)
    half = torch.tensor(0.5 ** 0.5)
    quarter_turn_z = torch.stack([half, 0 * half, 0 * half, half])  # (w, x, y, z): 90 degrees about z
    m.params["rotation"].data.copy_(quarter_turn_z[None].repeat(200, 1))
    d = _displacement(m, lr=1e-4)
    assert float(d[:, 1].std()) > 1e3 * float(d[:, 0].abs().max())  # the long axis is now y


def test_mcmc_events_run_from_densify_from_to_the_schedules_end():
    opt = opt_defaults(iterations=42_000)  # the student's: 30,000 and its 0.4 tail
    assert mcmc_iterations(opt, DistillParams.defaults()) == set()  # adc: none
    dp = DistillParams.defaults(student_densify="mcmc")
    assert mcmc_iterations(opt, dp) == set(range(600, 30_000, 100))
    quarter = scale_steps(opt_defaults(iterations=42_000), 0.25)
    assert mcmc_iterations(quarter, dp) == set(range(150, 7_500, 25))
