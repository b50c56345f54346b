"""The strategy state the loop holds: every edit of the model carries its rows (clone, split, prune, the student's
prune and re-initialisation), a count mismatch is an error, and checkpoints of version 2 convert to it."""
import numpy as np
import pytest
import torch

import training.densify
from arguments import DistillParams
from distill.roles import PerturbRole, StudentConfig, StudentStrategy, reinitialise
from scene.gaussian_model import PARAM_NAMES
from tests.test_training import opt_defaults, random_model
from training.densify import DensifyConfig, DensifyStrategy
from training.loop import _stats_of


def _marked(model, state):
    """Mark Gaussian i with i + 1 in xyz[:, 0] and in every row of ``state`` (0 is left for new rows)."""
    mark = torch.arange(1, model.num_points + 1, dtype=torch.float32)
    with torch.no_grad():
        model.params["xyz"][:, 0] = mark
    for k, t in state.items():
        state[k] = (mark % 2 == 1) if t.dtype == torch.bool else mark.clone()
    return mark


def _rows_follow(model, state):
    """Every row of ``state`` still holds the mark of the Gaussian it sits next to (0 for new Gaussians)."""
    mark = model.params["xyz"].detach()[:, 0]
    for k, t in state.items():
        assert t.shape[0] == model.num_points, k
        if t.dtype == torch.bool:
            continue
        old = t != 0
        assert torch.equal(t[old], mark[old]), k


def test_append_and_prune_carry_the_rows_with_their_gaussians():
    m = random_model(12)
    state = dict(a=torch.zeros(12), b=torch.zeros(12, 2))
    _marked(m, state)
    state["b"] = torch.stack([state["b"], -state["b"]], 1)  # a row of two values
    m.append({k: m.params[k].detach()[:3] + 100 for k in PARAM_NAMES}, rows=state)
    assert m.num_points == 15 and (state["a"][12:] == 0).all() and (state["b"][12:] == 0).all()
    remove = torch.zeros(15, dtype=torch.bool)
    remove[[0, 4, 13]] = True
    m.prune(remove, rows=state)
    kept = [i for i in range(15) if i not in (0, 4, 13)]
    assert state["a"].tolist() == [float(i + 1) if i < 12 else 0.0 for i in kept]
    assert torch.equal(state["b"][:, 1], -state["b"][:, 0])
    _rows_follow(m, {"a": state["a"]})


def _strategy(opt, cls=DensifyStrategy, config=None):
    return cls(config or DensifyConfig.from_opt(opt, extent=1.0))


def test_clone_split_and_prune_of_a_densification_keep_rows_aligned(monkeypatch):
    # the densification restarts every statistic at its end: without that restart, each surviving row is
    # still its Gaussian's, clones and split children start at zero
    torch.manual_seed(0)
    m = random_model(40)
    opt = opt_defaults()
    m.training_setup(opt)
    s = _strategy(opt)
    state = s.initialize_state(40, "cpu")
    mark = _marked(m, state)
    with torch.no_grad():
        m.params["scaling"][:5] = np.log(0.5)  # big: split
        m.params["scaling"][5:10] = np.log(0.001)  # small: clone
        m.params["opacity"][30] = -10  # transparent: pruned
    state["grad_accum"] = torch.where(torch.arange(40) < 10, 1e3 * mark, mark * 0)  # 0..9 hot
    state["denom"] = torch.where(torch.arange(40) < 10, 1e3 * mark, mark)
    before = {k: v.clone() for k, v in state.items()}
    restarted = []
    monkeypatch.setattr(training.densify, "restart_stats", lambda st: restarted.append(dict(st)))
    info = s.densify_and_prune(m, state)
    assert info == dict(cloned=5, split=5, pruned=6) and len(restarted) == 1
    keep = [i for i in range(5, 40) if i != 30]  # the split originals 0..4 and the transparent 30 went away
    assert m.num_points == len(keep) + 15  # then 5 clones and 10 split children
    for k, t in state.items():
        assert torch.equal(t[:len(keep)], before[k][keep]) and not t[len(keep):].any(), k
    _rows_follow(m, {"max_radii2D": state["max_radii2D"]})


def test_a_densification_restarts_every_statistic_and_prunes_by_the_right_radius():
    m = random_model(20)
    opt = opt_defaults(max_screen_size=10)
    m.training_setup(opt)
    s = _strategy(opt)
    state = {**s.initialize_state(20, "cpu"), **PerturbRole(DistillParams.defaults(), opt, 1.0).initialize_state(
        20, "cpu")}
    with torch.no_grad():
        m.params["scaling"][:] = np.log(0.001)
    state["max_radii2D"][7] = 50.0  # above --max_screen_size: pruned (and no other)
    state["perturb_grad"] += 1.0
    s.densify_and_prune(m, state, prune_large=True)
    assert m.num_points == 19
    assert all(t.shape[0] == 19 and not t.any() for t in state.values())


def test_student_blur_rows_follow_the_edits():
    dp = DistillParams.defaults()
    s = StudentStrategy(StudentConfig.from_flags(opt_defaults(), 1.0, False, dp))
    m = random_model(10)
    state = s.initialize_state(10, "cpu")
    state["blur"][[2, 5]] = True
    remove = torch.zeros(10, dtype=torch.bool)
    remove[[0, 3]] = True
    m.prune(remove, rows=state)
    assert state["blur"].nonzero().flatten().tolist() == [1, 3]  # Gaussians 2 and 5, now at 1 and 3
    assert s.extra_split_mask(state) is state["blur"]


def test_student_reinitialise_and_fresh_optimizer_carry_the_rows():
    m = random_model(30)
    opt = opt_defaults()
    m.training_setup(opt)
    state = _strategy(opt, StudentStrategy, StudentConfig.from_flags(opt, 1.0, False, DistillParams.defaults())
                      ).initialize_state(30, "cpu")
    sum((p ** 2).sum() for p in m.params.values()).backward()
    m.optimizer.step()  # Adam moments to carry
    _marked(m, state)
    keep = torch.zeros(30, dtype=torch.bool)
    keep[::3] = True
    reinitialise(m, keep, state)
    assert m.num_points == 10 and torch.equal(state["grad_accum"], torch.arange(1, 31, 3, dtype=torch.float32))
    assert state["blur"].tolist() == [True, False] * 5  # Gaussians 0, 3, 6, ... were marked 1, 4, 7, ...
    _rows_follow(m, state)
    assert all(m.optimizer.state[m.params[k]]["exp_avg"].shape == m.params[k].shape for k in PARAM_NAMES)
    m.restart_optimizer(opt, 700)
    assert not m.optimizer.state  # no Adam moments after the student's prune
    lr = next(g["lr"] for g in m.optimizer.param_groups if g["name"] == "xyz")
    assert lr == m._xyz_lr(700)


def test_a_count_mismatch_is_an_error_not_a_reset():
    m = random_model(10)
    s = _strategy(opt_defaults())
    state = s.initialize_state(9, "cpu")
    with pytest.raises(AssertionError, match="grad_accum"):
        m.prune(torch.zeros(10, dtype=torch.bool), rows=state)
    out = dict(visibility_filter=torch.ones(10, dtype=torch.bool), viewspace_points=torch.zeros(10, 3))
    with pytest.raises(AssertionError, match="9 rows for 10 Gaussians"):
        s.step(m, state, 1, out, None)


def test_version_2_statistics_convert_and_version_3_must_match():
    n = 6
    fresh = {**_strategy(opt_defaults()).initialize_state(n, "cpu"),
             **PerturbRole(DistillParams.defaults(), opt_defaults(), 1.0).initialize_state(n, "cpu")}
    grad = torch.arange(n, dtype=torch.float32)
    role = dict(grad=grad, count=torch.ones(n + 2), log=[(16, 0)])  # a stale count: what a step reset to zeros
    v2 = dict(version=2, strategy=dict(grad_accum=grad + 1, denom=None, max_radii2D=torch.ones(n)))
    stats = _stats_of(v2, fresh, role)
    assert set(stats) == set(fresh) and role == dict(log=[(16, 0)])
    assert torch.equal(stats["perturb_grad"], grad) and torch.equal(stats["grad_accum"], grad + 1)
    assert not stats["perturb_count"].any() and not stats["denom"].any()
    v3 = dict(version=3, strategy=dict(grad_accum=grad, denom=grad, max_radii2D=grad))
    with pytest.raises(ValueError, match="perturb_count"):
        _stats_of(v3, fresh, {})
