"""--student_init std: the student starts from G_std's most important Gaussians and is fine-tuned without growth;
the student's own schedule (--student_steps_scale)."""
import json
import math
import os
import random
import shutil

import pytest
import torch

import distill.pipeline
import distill.roles
import render
import train
import training.pair_budget
from arguments import DistillParams, PipelineParams, final_iteration, scale_steps
from distill.roles import (AGREEMENT_SPREAD, StudentConfig, StudentStrategy, combine_renders, cut_count,
                           depth_reinit_iterations, fine_tune_schedule,
                           novel_view_start, prune_cut_iterations, StudentRole, prune_fraction, prunes_unseen,
                           schedule_end, student_from_std, unseen_prune_iterations)
from distill.student_schedule import stage_schedule
from gaussian_renderer import render as render_view
from scene import Scene
from scene.gaussian_model import PARAM_NAMES, GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.test_resume import _only_checkpoint
from tests.test_training import opt_defaults, random_model
from utils.errors import UserError, run_cli
from utils.general_utils import exponential_lr
from utils.run_models import discover_models

RATIO = 0.15
# (the runs here are compared byte for byte after a resume and row by row with CPU tensors: on the CPU on any machine)
CPU_ONLY = True


def test_student_from_std_keeps_the_most_important_rows_with_all_parameters():
    std = random_model(40)
    std.active_sh_degree = 1
    before = {k: v.detach().clone() for k, v in std.params.items()}
    imp = torch.arange(40, dtype=torch.float32).flip(0)  # row 0 the most important, row 39 zero
    s = student_from_std(std, imp, 6, spatial_lr_scale=3.0)
    assert s.num_points == 6 and s.active_sh_degree == s.max_sh_degree == 3 and s.spatial_lr_scale == 3.0
    for k in PARAM_NAMES:
        torch.testing.assert_close(s.params[k].detach(), before[k][:6], rtol=0, atol=0)
        torch.testing.assert_close(std.params[k].detach(), before[k], rtol=0, atol=0)  # G_std untouched
    # a Gaussian of importance 0 is never kept, even below the target
    assert student_from_std(std, imp, 100, 1.0).num_points == 39


def test_no_growth_strategy_only_prunes():
    m = random_model(30)
    m.training_setup(opt_defaults())
    dp = DistillParams.defaults(student_init="std")
    st = StudentStrategy(StudentConfig.from_flags(opt_defaults(), 1.0, False, dp, num_max=10 ** 6, grow=False))
    assert st.config.num_max == 0 and st.wants_stats(1) == ()
    state = st.initialize_state(30, m.device)
    state["grad_accum"] += 1.0  # every Gaussian hot, half of them "big" (split candidates), all blurred
    state["denom"] += 1.0
    state["blur"][:] = True
    with torch.no_grad():
        m.params["opacity"][:5] = -10.0  # transparent
    st.densify_and_prune(m, state)
    assert m.num_points == 25


@pytest.mark.parametrize("flag, random_start, grow, resets", [
    ("off", True, True, False), ("on", False, True, True), ("auto", True, True, True), ("auto", False, True, False),
    ("on", True, False, False)])
def test_the_student_resets_its_opacities_with_the_flag_or_a_random_start(flag, random_start, grow, resets):
    opt = opt_defaults(densify_from_iter=10, densify_until_iter=1000, opacity_reset_interval=100,
                       densification_interval=1000)
    dp = DistillParams.defaults(student_opacity_reset=flag)
    st = StudentStrategy(StudentConfig.from_flags(opt, 1.0, False, dp, num_max=10 ** 6, grow=grow,
                                                  random_start=random_start))
    assert st.config.opacity_reset is resets
    m = random_model(30)
    m.training_setup(opt)
    with torch.no_grad():
        m.params["opacity"][:] = 2.0  # sigmoid 0.88
    state = st.initialize_state(30, m.device)
    out = {"viewspace_points": torch.zeros(30, 3), "visibility_filter": torch.ones(30, dtype=torch.bool),
           "radii": torch.ones(30)}
    st.step(m, state, 99, out, None)  # not a reset iteration
    assert float(m.get_opacity.detach().min()) > 0.8
    st.step(m, state, 100, out, None)
    assert (float(m.get_opacity.detach().max()) <= 0.01 + 1e-6) is resets


def test_fine_tune_schedule_starts_where_g_std_ended():
    # (opt: a student copy without the --student_tail, which test_the_tail_keeps_the_schedules_last_position_lr adds)
    opt = opt_defaults(iterations=7500, position_lr_max_steps=7500)
    g_std_end = exponential_lr(opt.position_lr_init, opt.position_lr_final, 7500)(7500)
    fine_tune_schedule(opt, DistillParams.defaults(student_init="std", student_tail=0))
    assert opt.position_lr_init == pytest.approx(g_std_end) and opt.position_lr_init == pytest.approx(1.6e-6)
    assert opt.position_lr_max_steps == 7500
    m = random_model(10)  # spatial_lr_scale 2: the LR is per extent
    m.training_setup(opt)
    assert m.update_learning_rate(1) == pytest.approx(1.6e-6 * 2) == pytest.approx(m.update_learning_rate(7500))
    # a G_std whose decay had not finished (30000 steps over 7500 iterations), and the explicit flag
    opt = fine_tune_schedule(opt_defaults(iterations=7500), DistillParams.defaults(student_init="std", student_tail=0))
    assert opt.position_lr_init == pytest.approx(exponential_lr(1.6e-4, 1.6e-6, 30000)(7500))
    opt = fine_tune_schedule(opt_defaults(iterations=100),
                             DistillParams.defaults(student_position_lr_init=1e-5, student_tail=0))
    m.training_setup(opt)
    assert m.update_learning_rate(0) == pytest.approx(2e-5) and m.update_learning_rate(100) == pytest.approx(3.2e-6)


def _argv(scene, out, init="std"):
    # 150 iterations a model (the student too: its stretched schedule and its tail are tested on their own below);
    # teachers never clone or split (a high gradient threshold), so stages are quick
    return ["-s", scene, "-m", out, "--eval", "--num_models", "4", "--views_per_step", "1", "--quiet",
            "--steps_scale", "0.005", "--densification_interval", "2000", "--densify_grad_threshold", "1.0",
            "--opacity_reset_interval", "100000", "--test_iterations", "30000", "--student_init", init,
            "--student_max_ratio", str(RATIO), "--student_steps_scale", "1", "--student_tail", "0"]


def _watch_student(monkeypatch, seen):
    """Record the student's model when its training starts and its count after every step."""
    real_train, real_step = distill.pipeline.train_model, StudentStrategy.step

    def train_model(scene, model, opt, *a, **kw):
        if kw.get("label") == "student":
            seen["start"] = {k: v.detach().clone() for k, v in model.params.items()}
            seen["sh"] = model.active_sh_degree
            seen["lr"] = opt.position_lr_init
        return real_train(scene, model, opt, *a, **kw)

    def step(self, model, *a, **kw):
        r = real_step(self, model, *a, **kw)
        seen.setdefault("counts", []).append(model.num_points)
        return r
    monkeypatch.setattr(distill.pipeline, "train_model", train_model)
    monkeypatch.setattr(StudentStrategy, "step", step)


def _ply(out, i):
    return GaussianModel(3).load_ply(os.path.join(out, f"point_cloud_{i}", "iteration_150", "point_cloud.ply"))


def _check_subset(start, std):
    """Every start row is a row of G_std (all parameters), no row twice."""
    flat = lambda p: torch.cat([p[k].detach().reshape(p["xyz"].shape[0], -1) for k in PARAM_NAMES], 1)  # noqa
    a, b = flat(start), flat(std.params)
    match = (a[:, None, :] == b[None, :, :]).all(-1)  # [n_student, n_std]
    assert (match.sum(1) >= 1).all()
    assert len(set(match.float().argmax(1).tolist())) == a.shape[0]


@pytest.fixture(scope="module")
def std_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdinit")
    scene = make_synthetic_scene(str(root / "scene"), num_views=8, width=32, height=24, num_points=300, seed=1)
    out = str(root / "out")
    seen = {}
    with pytest.MonkeyPatch.context() as mp:
        _watch_student(mp, seen)
        summary = train.main(_argv(scene, out))
    return scene, out, summary, seen


def test_std_start_is_a_pruned_copy_of_g_std_and_never_grows(std_run):
    scene, out, summary, seen = std_run
    std = _ply(out, 2)  # G_std as trained (the in-memory model the student was cut from)
    target = int(RATIO * std.num_points)
    assert target > 0
    start = seen["start"]
    assert start["xyz"].shape[0] == target and seen["sh"] == 3
    _check_subset(start, std)
    assert seen["counts"] and max(seen["counts"]) <= target
    assert seen["lr"] == pytest.approx(1.6e-6)  # G_std's schedule (150 of 150 steps) had reached the final LR
    s = summary["models"]["student"]
    assert s["init"] == "std" and s["init_gaussians"] == target and 0 < s["gaussians"] <= target
    assert s["events"] == [] and s["num_max_effective"] == 0  # no second prune, no growth
    assert os.path.isfile(os.path.join(out, "point_cloud_3", "iteration_150", "point_cloud.ply"))
    on_disk = json.load(open(os.path.join(out, "distill.json")))["models"]["student"]
    assert on_disk["init"] == "std" and on_disk["init_gaussians"] == target


def test_start_3_std_from_the_plys(std_run, monkeypatch):
    scene, out, _, _ = std_run
    teachers = [os.path.join(out, f"point_cloud_{i}", "iteration_150", "point_cloud.ply") for i in range(3)]
    stamps = [os.path.getmtime(f) for f in teachers]
    seen = {}
    _watch_student(monkeypatch, seen)
    summary = train.main(_argv(scene, out) + ["--start", "3", "--student_max_ratio", "0.1",
                                              "--student_position_lr_init", "1e-5"])
    assert [os.path.getmtime(f) for f in teachers] == stamps
    std = _ply(out, 2)
    target = int(0.1 * std.num_points)
    _check_subset(seen["start"], std)
    assert seen["start"]["xyz"].shape[0] == target and max(seen["counts"]) <= target
    assert seen["lr"] == 1e-5
    s = json.load(open(os.path.join(out, "distill.json")))["models"]["student"]
    assert s == json.loads(json.dumps(summary["models"]["student"]))
    assert s["init"] == "std" and s["init_gaussians"] == target and s["init_position_lr"] == 1e-5
    assert _ply(out, 3).num_points == s["gaussians"] <= target


def test_start_3_sfm_records_its_start(std_run):
    scene, out, _, _ = std_run
    # (--num_max: the blur split of this tiny scene would otherwise double the student at each densification)
    summary = train.main(_argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600"])
    s = summary["models"]["student"]
    assert s["init"] == "sfm" and s["init_gaussians"] == 300 and "init_position_lr" not in s
    assert s["prune_unseen"] is False and s["opacity_reset"] is False  # auto: the scene has SfM points
    assert s["depth_reinit"] == [] and not [e for e in s["events"] if e["kind"] == "depth_reinit"]


@pytest.mark.parametrize("flags, message", [
    (["--student_init", "teacher"], "--student_init teacher is unknown"),
    (["--student_init", "std", "--student_max_ratio", "0"], "needs --student_max_ratio > 0"),
    (["--student_init", "std", "--firstPrune"], "cannot be combined with --firstPrune"),
    (["--student_init", "sfm", "--student_position_lr_init", "1e-5"], "applies only to --student_init std"),
    (["--student_init", "std", "--student_position_lr_init", "-1"], "must be >= 0"),
    (["--student_init", "std", "--student_prune_unseen", "on"], "applies only to --student_init sfm"),
    (["--student_init", "std", "--student_max_ratio", "0.12", "--student_opacity_reset", "on"],
     "--student_opacity_reset on applies only to --student_init sfm"),
    (["--student_prune_unseen", "yes"], "--student_prune_unseen yes is unknown: use auto, on or off"),
    (["--prune_stages", "2", "--student_max_ratio", "0"], "--prune_stages 2 needs --student_max_ratio > 0"),
    (["--prune_stages", "0"], "--prune_stages 0 must be at least 1"),
    (["--prune_stages", "5", "--prune_stage_interval", "4000"], "the last cut, at iteration 32000, is not before"),
    (["--second_prune_iter", "29000"], "--prune_stages 3 (the default with --student_max_ratio) x --prune_stage_"),
    (["--never_strongest_at", "last", "--prune_stages", "1"], "--never_strongest_at last needs more than one cut"),
    (["--student_max_ratio", "0.5"], "--student_max_ratio 0.5 is above the growth cap --num_max_ratio 0.4"),
    (["--distill_start", "42000"], "--distill_start 42000 is not before the student's last iteration (42000"),
    (["--novel_view_start", "42000"], "--novel_view_start 42000 is not before the student's last iteration (42000"),
    (["--cut_selection", "sample", "--student_max_ratio", "0"], "--cut_selection sample needs --student_max_ratio"),
    (["--cut_selection", "sample", "--prune_importance_fraction", "0.01"], "applies to --cut_selection top"),
    (["--cut_selection", "random"], "--cut_selection random is unknown"),
    (["--relocate_opacity_reg", "0.01"], "--relocate_opacity_reg 0.01 needs --student_relocate"),
    (["--depth_reinit", "on", "--student_depth_reinit", "5000", "16000"],
     "--student_depth_reinit: iteration 16000 (after the step scales) is not before the student's first cut (16000)"),
    (["--depth_reinit", "on", "--student_init", "std"], "--depth_reinit on applies to --student_init sfm"),
    (["--depth_reinit", "always"], "--depth_reinit always is unknown: use auto, on or off"),
    (["--student_depth_reinit", "0"], "--student_depth_reinit 0 must be at least 1"),
    (["--depth_reinit", "off", "--depth_reinit_colour", "strongest"],
     "--depth_reinit_colour strongest needs the depth re-initialisation"),
    (["--student_depth_reinit", "5000", "--depth_reinit_colour", "sh"], "--depth_reinit_colour sh is unknown"),
    (["--student_densify", "mcmc", "--student_init", "std"], "--student_densify mcmc applies to --student_init sfm"),
    (["--student_densify", "mcmc", "--student_max_ratio", "0"], "--student_densify mcmc needs --student_max_ratio > 0"),
    (["--student_densify", "mcmc", "--student_relocate", "100"], "--student_relocate 100 applies to --student_densify "
                                                                 "adc"),
    (["--student_densify", "mcmc", "--firstPrune"], "--firstPrune applies to --student_densify adc"),
    (["--student_densify", "ssd"], "--student_densify ssd is unknown: use adc or mcmc"),
    (["--student_densify", "mcmc", "--mcmc_noise_lr", "-1"], "--mcmc_noise_lr -1"),
    (["--second_prune_iter", "12000"], "--second_prune_iter 12000: the student's first cut (iteration 12000 after "
                                       "the step scales) comes before its densification ends (--densify_until_iter "
                                       "15000 after them)"),
    (["--second_prune_iter", "12000", "--steps_scale", "0.25"], "first cut (iteration 3000 after the step scales) "
                                                                "comes before its densification ends "
                                                                "(--densify_until_iter 3750 after them)"),
    (["--student_prune_unseen", "on", "--opacity_reset_interval", "20000"],
     "--student_prune_unseen on: no multiple of --opacity_reset_interval (20000 after the step scales) lies inside "
     "the student's densification window (500 to 15000)"),
    (["--student_relocate", "15000"], "--student_relocate: its interval (15000 iterations after the step scales) "
                                      "leaves no relocation between the student's last cut (iteration 18000) and its "
                                      "schedule's end (30000)"),
])
def test_bad_combinations_stop_before_training(tmp_path, capsys, flags, message):
    scene = make_synthetic_scene(str(tmp_path / "s"), num_views=4, width=16, height=12, num_points=20, seed=0)
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, ["-s", scene, "-m", str(tmp_path / "o"), "--num_models", "4", "--quiet",
                             "--views_per_step", "6", "--student_max_ratio", "0.15"] + flags)
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not os.path.isdir(os.path.join(tmp_path, "o", "point_cloud_0"))


def test_cut_counts_fall_geometrically_to_the_target():
    assert [cut_count(j, 3, 1000, 125) for j in range(3)] == [500, 250, 125]
    assert [cut_count(j, 1, 1000, 125) for j in range(1)] == [125]  # one cut: the target at once (the reference's)
    assert cut_count(0, 2, 100, 125) == 125  # already at or below the target
    assert cut_count(0, 3, 1000, None) is None  # no cap: no count (the importance fraction alone)
    dp = DistillParams.defaults(second_prune_iter=16000, prune_stages=3, prune_stage_interval=1000)
    assert prune_cut_iterations(dp) == [16000, 17000, 18000]
    # the default: three cuts under a cap for a growing student, else the reference's one
    assert prune_cut_iterations(DistillParams.defaults()) == [16000, 17000, 18000]
    assert prune_cut_iterations(DistillParams.defaults(student_max_ratio=None)) == [16000]
    assert prune_cut_iterations(DistillParams.defaults(student_init="std")) == [16000]
    assert prune_cut_iterations(DistillParams.defaults(prune_stages=1)) == [16000]


def test_a_sampled_cut_keeps_its_count_drawn_by_importance():
    from distill.importance import gaussian_importance, prune_least_important
    from tests.test_novel_views import _ring
    cams = _ring(4)
    g = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(150, 3, generator=g) * 0.4,  # in every view
                        torch.randn(30, 3, generator=g) + torch.tensor([0.0, 0.0, 60.0])])  # above all of them
    pipe, bg = PipelineParams.defaults(backend="torch"), torch.zeros(3)
    opt = scale_steps(opt_defaults(), 0.01)
    targets = {c.uid: torch.rand(3, 24, 32).half() for c in cams}
    kept = {}
    for how in ("top", "sample"):
        model = GaussianModel(0)
        model.create_from_points(points, torch.rand(180, 3, generator=torch.Generator().manual_seed(1)), 1.0)
        dp = DistillParams.defaults(cut_selection=how, prune_stages=1, second_prune_iter=100, student_max_ratio=0.1)
        role = StudentRole(dp, opt, pipe, bg, targets, torch.zeros(400, 3), cams)  # (G_std's 400: a cap of 40)
        imp = gaussian_importance(model, cams, pipe, bg, dp.imp_metric)
        state = {"rows": torch.arange(180.0)}
        random.seed(3)
        role.after_step(100, model, state, None)
        assert model.num_points == 40 and state["rows"].shape == (40,)
        kept[how] = torch.cdist(model.get_xyz.detach(), points).argmin(1)  # (the points are distinct)
        assert (imp[kept[how]] > 0).all()
    top = set((~prune_least_important(imp, 0.0, 40)).nonzero().squeeze(1).tolist())
    assert set(kept["top"].tolist()) == top
    assert set(kept["sample"].tolist()) != top  # a sparse cover: some below the 40 most important are kept
    assert imp[kept["sample"]].mean() > imp[imp > 0].mean()  # drawn by importance, not uniformly


def _copy_of(std_run, tmp_path):
    """(the scene, a copy of std_run's folder): a student of its own on the module's teachers."""
    scene, out, _, _ = std_run
    d = str(tmp_path / "run")
    shutil.copytree(out, d)
    return scene, d


def _resume_from(d, tmp_path, checkpoint):
    """Resume the run in ``d`` from its ``checkpoint`` alone, in a copy (as the run stood when it was written): its
    student's last PLY is byte for byte the uninterrupted run's."""
    r = _only_checkpoint(d, str(tmp_path / "resumed"), checkpoint)
    shutil.rmtree(os.path.join(r, "point_cloud_3"))
    train.main(["-m", r, "--resume"])
    with open(os.path.join(r, "point_cloud_3", "iteration_150", "point_cloud.ply"), "rb") as a, \
            open(os.path.join(d, "point_cloud_3", "iteration_150", "point_cloud.ply"), "rb") as b:
        assert a.read() == b.read()


def test_a_staged_second_prune_cuts_to_the_target_and_resumes_between_cuts(std_run, tmp_path):
    scene, d = _copy_of(std_run, tmp_path)
    # cuts at 16000, 18000 and 20000 x 0.005 = 80, 90, 100; a checkpoint between the first two
    summary = train.main(_argv(scene, d, "sfm") + ["--start", "3", "--num_max", "600", "--prune_stages", "3",
                                                   "--prune_stage_interval", "2000", "--checkpoint_iterations",
                                                   "17000", "--checkpoint_every_minutes", "0"])
    cuts = summary["models"]["student"]["events"]
    assert [(e["kind"], e["iteration"]) for e in cuts] == [("second", 80), ("second", 90), ("second", 100)]
    target = int(RATIO * _ply(d, 2).num_points)
    first = cuts[0]["before"]
    assert first > target
    for j, e in enumerate(cuts):  # each keeps at most its geometric count (Gaussians of no importance go anyway)
        assert e["after"] <= cut_count(j, 3, first, target) and (j == 0 or e["before"] == cuts[j - 1]["after"])
    assert cuts[0]["after"] > target and 0 < cuts[-1]["after"] <= target
    assert _ply(d, 3).num_points == cuts[-1]["after"]
    _resume_from(d, tmp_path, "chkpntstudent85.pth")  # the later cuts' counts come from the first cut's logged count


def test_relocation_keeps_the_count_after_the_cuts_and_resumes_exactly(std_run, tmp_path):
    scene, d = _copy_of(std_run, tmp_path)
    # cuts at 80, 85, 90; relocations every 2000 x 0.005 = 10 iterations from 100 to 140, the transparent ones
    # those below an opacity of 0.15 (high, so that the toy student has some); a checkpoint at 95, after the cuts,
    # before the relocations
    summary = train.main(_argv(scene, d, "sfm") + ["--start", "3", "--num_max", "600", "--student_relocate", "2000",
                                                   "--relocate_opacity", "0.15", "--checkpoint_iterations", "19000",
                                                   "--checkpoint_every_minutes", "0"])
    events = summary["models"]["student"]["events"]
    moves = [e for e in events if e["kind"] == "relocate"]
    assert moves and {e["iteration"] for e in moves} <= set(range(100, 150, 10))
    last_cut = [e for e in events if e["kind"] == "second"][-1]
    assert all(e["before"] == e["after"] == last_cut["after"] and e["moved"] > 0 for e in moves)
    assert _ply(d, 3).num_points == last_cut["after"]
    assert json.load(open(os.path.join(d, "cfg_args.json")))["student_relocate"] == 2000  # (as given, unscaled)
    _resume_from(d, tmp_path, "chkpntstudent95.pth")  # the later relocations draw what the uninterrupted run drew


def test_depth_reinit_recreates_the_growing_student_on_its_surfaces_and_resumes_exactly(std_run, tmp_path):
    """--student_depth_reinit: at its iterations (before the first cut) the student's Gaussians are re-created, as
    many, at points of its rendered surfaces (fresh opacity 0.1), its optimizer restarts; a resumed run draws the
    same points."""
    scene, d = _copy_of(std_run, tmp_path)
    seen = []
    real = StudentRole._depth_reinit

    def watch(self, it, model, state):
        real(self, it, model, state)
        seen.append((it, model.num_points, model.get_opacity.detach().clone(), state["grad_accum"].clone(),
                     model.optimizer.state.get(model.params["xyz"])))
    # reinits at 8000 and 12000 x 0.005 = 40 and 60, cuts from 80; a checkpoint at 50, between the two
    argv = _argv(scene, d, "sfm") + ["--start", "3", "--num_max", "600", "--depth_reinit", "on",
                                     "--student_depth_reinit", "8000", "12000",
                                     "--checkpoint_iterations", "10000", "--checkpoint_every_minutes", "0"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StudentRole, "_depth_reinit", watch)
        summary = train.main(argv)
    events = summary["models"]["student"]["events"]
    reinits = [e for e in events if e["kind"] == "depth_reinit"]
    assert [e["iteration"] for e in reinits] == [40, 60] and [it for it, *_ in seen] == [40, 60]
    assert summary["models"]["student"]["depth_reinit"] == [40, 60]
    for e, (_, n, opacity, grads, adam) in zip(reinits, seen):
        assert e["points"] == e["after"] == n > 0 and e["after"] <= e["before"]  # (as many, or every opaque pixel)
        assert torch.allclose(opacity, torch.full_like(opacity, 0.1)) and not grads.any() and not adam
    assert [e["kind"] for e in events].index("second") > [e["kind"] for e in events].index("depth_reinit")
    assert json.load(open(os.path.join(d, "cfg_args.json")))["student_depth_reinit"] == [8000, 12000]
    _resume_from(d, tmp_path, "chkpntstudent50.pth")


def test_depth_reinit_colour_strongest_keeps_the_contributors_sh_at_the_same_points(std_run, tmp_path):
    """--depth_reinit_colour strongest: the same points as the photo's colouring (same seed, same teachers), each with
    every SH band of its strongest contributor: higher bands the photo's colouring leaves at zero."""
    seen = {}
    real = StudentRole._depth_reinit

    for colour in ("photo", "strongest"):
        def watch(self, it, model, state, colour=colour):
            before = {k: model.params[k].detach().clone() for k in ("f_dc", "f_rest")}
            real(self, it, model, state)
            seen[colour] = (before, model.get_xyz.detach().clone(), model.params["f_dc"].detach().clone(),
                            model.params["f_rest"].detach().clone())
        scene, d = _copy_of(std_run, tmp_path / colour)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(StudentRole, "_depth_reinit", watch)
            train.main(_argv(scene, d, "sfm") + ["--start", "3", "--num_max", "600", "--depth_reinit", "on",
                                                 "--student_depth_reinit", "8000", "--depth_reinit_colour", colour])
    (_, xyz_p, dc_p, rest_p), (before_s, xyz_s, dc_s, rest_s) = seen["photo"], seen["strongest"]
    assert torch.equal(xyz_p, xyz_s) and not rest_p.any() and rest_s.abs().sum() > 0
    assert not torch.equal(dc_p, dc_s)
    # every new Gaussian's SH is a row of the student's before the re-initialisation
    rows = torch.cat([before_s["f_dc"], before_s["f_rest"]], 1).flatten(1)
    new = torch.cat([dc_s, rest_s], 1).flatten(1)
    assert (new[:, None, :] == rows[None, :, :]).all(dim=2).any(dim=1).all()


def test_the_opacity_regularisation_gives_the_relocation_more_to_move(std_run, tmp_path):
    """--relocate_opacity_reg: between the last cut and the last relocation the student's opacities are pulled down,
    so more of them fall below --relocate_opacity than on the same run without it (same seed, same teachers)."""
    moved = {}
    for reg in ("0", "0.5"):
        scene, d = _copy_of(std_run, tmp_path / f"reg{reg}")
        summary = train.main(_argv(scene, d, "sfm") + ["--start", "3", "--num_max", "600", "--student_relocate",
                                                       "2000", "--relocate_opacity", "0.08",
                                                       "--relocate_opacity_reg", reg])
        moves = [e for e in summary["models"]["student"]["events"] if e["kind"] == "relocate"]
        moved[reg] = (sum(e["moved"] for e in moves), _ply(d, 3).get_opacity.median().item())
    # (the toy's 50 regularised steps: without it none falls below 0.08, the median opacity ~0.34)
    assert moved["0.5"][0] > 2 * moved["0"][0] and moved["0.5"][1] < 0.8 * moved["0"][1], moved


def test_an_mcmc_student_keeps_its_target_count_without_cuts_and_resumes_exactly(std_run, tmp_path):
    """--student_densify mcmc: the SfM start thinned to the target, relocations at its events (no clone, split or
    cut), the count never above the target; the position noise and the draws continue exactly after a resume."""
    scene, d = _copy_of(std_run, tmp_path)
    seen = []
    real = StudentRole._mcmc

    def watch(self, it, model, state):
        before = model.get_xyz.detach().clone()
        real(self, it, model, state)
        seen.append((it, model.num_points, bool((model.get_xyz.detach() - before).abs().max() > 0)))
    # events every 2000 x 0.005 = 10 iterations before the schedule's end (150); --relocate_opacity 0.02 and a strong
    # opacity regularisation: the toy's Gaussians (opacity 0.1 at the start) fall below it within its 150 steps
    argv = _argv(scene, d, "sfm") + ["--start", "3", "--student_densify", "mcmc", "--relocate_opacity", "0.02",
                                     "--mcmc_opacity_reg", "0.5", "--checkpoint_iterations", "15000",
                                     "--checkpoint_every_minutes", "0"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StudentRole, "_mcmc", watch)
        summary = train.main(argv)
    s = summary["models"]["student"]
    target = int(RATIO * _ply(d, 2).num_points)
    assert s["densify"] == "mcmc" and s["init_gaussians"] == target < 300 and s["num_max_effective"] == target
    assert s["opacity_reset"] is False and s["prune_unseen"] is False
    events = s["events"]
    assert events[0] == dict(iteration=0, kind="mcmc", before=300, after=target, moved=0, added=0)
    assert {e["kind"] for e in events} == {"mcmc"} and any(e["moved"] for e in events[1:])  # (the 0.5 regularisation)
    assert {e["iteration"] for e in events[1:]} <= set(range(10, 150, 10))
    assert [it for it, _, _ in seen] == list(range(1, 151)) and all(n == target for _, n, _ in seen)
    assert all(moved for _, _, moved in seen)  # (the noise: some Gaussian is near the threshold every step)
    assert _ply(d, 3).num_points == target
    _resume_from(d, tmp_path, "chkpntstudent75.pth")


@pytest.mark.parametrize("init, extra", [("sfm", ["--student_densify", "mcmc"]), ("sfm", []), ("std", [])],
                         ids=["mcmc", "cuts", "std"])
def test_a_student_of_no_gaussians_stops_before_anything_is_written(std_run, tmp_path, capsys, init, extra):
    """A --student_max_ratio that leaves no Gaussian of G_std's 300 (the mcmc budget, the cuts' target, the std
    start) stops --start 3 with one line before it deletes the earlier student."""
    scene, d = _copy_of(std_run, tmp_path)
    before = sorted(os.listdir(d))
    summary = open(os.path.join(d, "distill.json")).read()
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, _argv(scene, d, init) + ["--start", "3", "--student_max_ratio", "0.001"] + extra)
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "--student_max_ratio 0.001 of G_std's 300 Gaussians leaves the student none" in err[0]
    assert sorted(os.listdir(d)) == before and "point_cloud_3" in before  # (the earlier student kept)
    assert open(os.path.join(d, "distill.json")).read() == summary


def test_a_student_of_no_gaussians_stops_at_its_stage_when_g_std_was_trained_in_the_run(tmp_path, capsys):
    """Without --start 3 G_std's count is known only once it is trained: the pipeline stops before the student."""
    scene = make_synthetic_scene(str(tmp_path / "scene"), num_views=4, width=16, height=12, num_points=60, seed=3)
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, _argv(scene, out, "sfm") + ["--student_max_ratio", "0.001"])
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "Gaussians leaves the student none: raise --student_max_ratio" in err[0]
    assert not os.path.exists(os.path.join(out, "point_cloud_3"))


def test_start_3_with_a_fine_tuning_tail(std_run):
    """--student_tail: the stretched schedule, then a tail with no events at the schedule's last position LR."""
    scene, out, _, _ = std_run
    argv = _argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600", "--student_steps_scale", "1.4",
                                       "--student_tail", "0.4", "--checkpoint_iterations", "30000"]
    summary = train.main(argv)
    s = summary["models"]["student"]
    # 150 x 1.4 = 210, then 0.4 x 210 = 84 more; the second prune's three cuts (the default) still at 16000,
    # 17000 and 18000 x 0.005 x 1.4
    assert s["iterations"] == 294 and summary["iterations"] == 150
    assert [(e["kind"], e["iteration"]) for e in s["events"]] == [("second", 112), ("second", 119), ("second", 126)]
    for it in (210, 294):  # saved (and evaluated) at the end of the schedule and of the tail
        assert os.path.isfile(os.path.join(out, "point_cloud_3", f"iteration_{it}", "point_cloud.ply"))
    with open(os.path.join(out, "point_cloud_3", "training_log.json")) as f:
        assert [h["iteration"] for h in json.load(f)["history"]][-2:] == [210, 294]
    assert render.run_last_iteration(out, student=True) == 294
    assert {m.name: m.iteration for m in discover_models(out)[1]}["student"] == 294
    with pytest.raises(UserError, match="has finished"):
        train.main(["-m", out, "--resume"])


def test_the_tail_keeps_the_schedules_last_position_lr():
    opt = opt_defaults(iterations=100, position_lr_max_steps=None)  # decay over the schedule
    dp = DistillParams.defaults(student_tail=0.5, student_steps_scale=2.0)
    opt_s, dp_s, tests, saves, _ = stage_schedule(3, opt, dp, [100], [100], [])
    assert (opt_s.iterations, opt_s.position_lr_max_steps, tests, saves) == (300, 200, [200, 300], {200, 300})
    m = random_model(10)
    m.training_setup(opt_s)
    assert m.update_learning_rate(300) == m.update_learning_rate(200) == pytest.approx(1.6e-6 * 2)
    assert m.update_learning_rate(100) > 1.6e-6 * 2
    assert stage_schedule(2, opt, dp, [100], [100], [])[0].iterations == 100  # the teachers have no tail
    # the std start's fine-tuning decay spans the schedule, not the tail
    dp = DistillParams.defaults(student_init="std", student_position_lr_init=1e-5, student_tail=0.5,
                                student_steps_scale=1.0)
    opt_s, dp_s = stage_schedule(3, opt_defaults(iterations=100), dp, [], [], [])[:2]
    fine_tune_schedule(opt_s, dp_s)
    assert (opt_s.iterations, opt_s.position_lr_max_steps, opt_s.position_lr_init) == (150, 100, 1e-5)


def test_the_schedule_end_is_recovered_from_any_tail():
    """schedule_end inverts stage_schedule's total (schedule + round(schedule x tail)) for every length and tail."""
    for tail in (0.0, 0.05, 0.25, 0.4, 0.5, 1.0, 1.7):
        dp = DistillParams.defaults(student_tail=tail)
        for iterations in list(range(1, 400)) + [7500, 29999, 30000]:
            opt_s = stage_schedule(3, opt_defaults(iterations=iterations), dp, [], [], [])[0]
            assert opt_s.iterations == final_iteration(3, iterations, 1.0, tail)
            assert schedule_end(opt_s, dp) == iterations, (tail, iterations)


def test_the_second_prune_keeps_the_capped_count_unless_a_fraction_is_set():
    assert prune_fraction(DistillParams.defaults()) == 0.0  # (the 12% cap alone sets the count)
    assert prune_fraction(DistillParams.defaults(student_max_ratio=None)) == 0.01  # (no cap: the reference's cut)
    assert prune_fraction(DistillParams.defaults(prune_importance_fraction=0.05)) == 0.05
    assert prune_fraction(DistillParams.defaults(prune_importance_fraction=0.0, student_max_ratio=None)) == 0.0


def test_novel_views_start_at_the_second_prune_unless_set():
    assert novel_view_start(DistillParams.defaults()) == 16000
    assert novel_view_start(DistillParams.defaults(second_prune_iter=20000)) == 20000
    assert novel_view_start(DistillParams.defaults(student_init="std")) == 0  # (a std student does not grow)
    assert novel_view_start(DistillParams.defaults(novel_view_start=0)) == 0
    assert novel_view_start(DistillParams.defaults(novel_view_start=5000, student_init="std")) == 5000


def test_combine_renders_mean_and_median():
    imgs = torch.zeros(3, 3, 2, 2)
    imgs[1] += 0.2
    imgs[2, :, 0, 0] = 1.0  # one teacher's floater
    assert torch.allclose(combine_renders(imgs, "mean")[:, 0, 0], torch.full((3,), 0.4))
    med = combine_renders(imgs, "median")
    assert torch.allclose(med[:, 0, 0], torch.full((3,), 0.2)) and torch.allclose(med[:, 1, 1], torch.zeros(3))
    with pytest.raises(ValueError):
        combine_renders(imgs, "max")


def test_combine_renders_by_agreement_takes_the_photo_where_the_teachers_disagree():
    imgs = torch.full((3, 3, 2, 2), 0.5)
    imgs[:, :, 0, 0] = torch.tensor([0.1, 0.5, 0.9])[:, None]  # a pixel the teachers disagree on (spread 0.33)
    imgs[:, 1, 1, 1] = torch.tensor([0.48, 0.5, 0.52])  # one they nearly agree on in one channel (spread 0.016)
    photo = torch.full((3, 2, 2), 0.3)
    t = combine_renders(imgs, "agreement", photo)
    assert torch.allclose(t[:, 0, 0], photo[:, 0, 0], atol=1e-6)  # the photo where they disagree
    assert torch.allclose(t[:, 0, 1], torch.full((3,), 0.5))  # their mean where they agree
    w = math.exp(-(float(imgs[:, 1, 1, 1].std(unbiased=False)) / AGREEMENT_SPREAD) ** 2)  # (0.90)
    assert torch.allclose(t[:, 1, 1], 0.3 + w * (0.5 - 0.3) * torch.ones(3), atol=1e-6)  # all channels alike
    assert torch.equal(combine_renders(imgs, "agreement"), imgs.mean(dim=0))  # a novel view: no photo


@pytest.mark.parametrize("how", ["median", "agreement"])
def test_start_3_learns_the_combined_teacher_render(std_run, monkeypatch, how):
    scene, out, _, _ = std_run
    seen = {"how": set()}
    real_init, real_combine = distill.pipeline.StudentRole.__init__, distill.roles.combine_renders

    def init(self, dp, opt, pipe, bg, teacher_targets, *a, **kw):
        seen.update(targets=teacher_targets, bg=bg, pipe=pipe)
        real_init(self, dp, opt, pipe, bg, teacher_targets, *a, **kw)
    monkeypatch.setattr(distill.pipeline.StudentRole, "__init__", init)
    monkeypatch.setattr(distill.roles, "combine_renders", lambda imgs, how, photo=None: seen["how"].add(how) or
                        real_combine(imgs, how, photo))
    train.main(_argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600", "--novel_views", "0",
                                           "--teacher_combine", how])
    assert seen["how"] == {how}
    teachers = [distill.pipeline.load_trained(out, i, "cpu", 3, 150)[0] for i in range(3)]
    for t in teachers:
        t.active_sh_degree = t.max_sh_degree
    cams = {c.uid: c for c in Scene(train.read_flags(["-s", scene, "-m", out, "--eval"])[0]).getTrainCameras()}
    apart = 0.0  # (how far the combination gets from the teachers' mean: the check must be able to tell them apart)
    for uid in sorted(seen["targets"]):
        imgs = torch.stack([render_view(cams[uid], t, seen["pipe"], seen["bg"])["render"] for t in teachers])
        if how == "median":
            want = imgs.median(dim=0).values
        else:  # (the photo where the teachers disagree: the formula is test_combine_renders_by_agreement_...'s)
            want = real_combine(imgs, how, cams[uid].original_image("cpu"))
        apart = max(apart, (want.clamp(0, 1) - imgs.mean(dim=0).clamp(0, 1)).abs().max().item())
        assert torch.allclose(seen["targets"][uid].float(), want.clamp(0, 1), atol=2e-3)
    assert apart > 2 * 2e-3  # (on some view apart from the mean by more than the atol)


# by default from the second prune (16000 x 0.005: iterations 80-150); 12000 x 0.005: iterations 60-150
@pytest.mark.parametrize("start, novel_steps", [(None, 71), (0, 150), (12000, 91)])
def test_start_3_with_novel_views(std_run, monkeypatch, start, novel_steps):
    scene, out, _, _ = std_run
    uids = []
    real = distill.roles.render
    counted = lambda cam, *a, **kw: uids.append(cam.uid) or real(cam, *a, **kw)  # noqa: E731
    # (the student's own renders, and the teachers' target renders, queued through training.pair_budget)
    monkeypatch.setattr(distill.roles, "render", counted)
    monkeypatch.setattr(training.pair_budget, "render", counted)
    summary = train.main(_argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600", "--novel_views", "2",
                                                     "--novel_view_prob", "1"]
                         + ([] if start is None else ["--novel_view_start", str(start)]))
    s = summary["models"]["student"]
    n_train = 8 - 1  # --eval holds out every 8th view
    assert s["novel_views"] == 2 * n_train
    novel = [u for u in uids if u < 0]
    # each teacher renders each novel view once, then the student one a step (prob 1) from --novel_view_start on
    assert len(novel) == 3 * 2 * n_train + novel_steps and set(novel) == set(range(-2 * n_train, 0))


@pytest.mark.parametrize("flags", [["--second_prune_iter", "40000"],  # (the default start: after the last iteration)
                                   ["--novel_view_start", "0", "--lambda_novel", "0"],
                                   ["--novel_view_start", "0", "--novel_view_prob", "0"]])
def test_no_novel_view_targets_for_a_student_that_cannot_learn_them(std_run, monkeypatch, flags):
    scene, out, _, _ = std_run
    uids = []
    real = training.pair_budget.render
    counted = lambda cam, *a, **kw: uids.append(cam.uid) or real(cam, *a, **kw)  # noqa: E731
    monkeypatch.setattr(training.pair_budget, "render", counted)
    summary = train.main(_argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600", "--novel_views", "2"] + flags)
    assert summary["models"]["student"]["novel_views"] == 0
    assert uids and not [u for u in uids if u < 0]  # (the training views' targets only)


def test_novel_views_at_half_the_size(std_run, monkeypatch):
    """--novel_view_scale 0.5: the teachers render the novel views, and the student learns them, at half the training
    views' width and height."""
    scene, out, _, _ = std_run
    sizes = {}
    real = distill.roles.render
    seen = lambda cam, *a, **kw: sizes.setdefault(cam.uid < 0, set()).add(  # noqa: E731
        (cam.image_width, cam.image_height)) or real(cam, *a, **kw)
    monkeypatch.setattr(distill.roles, "render", seen)
    monkeypatch.setattr(training.pair_budget, "render", seen)
    summary = train.main(_argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600", "--novel_views", "2",
                                                     "--novel_view_prob", "1", "--novel_view_scale", "0.5"])
    (w, h), = sizes[False]
    assert sizes[True] == {(round(w / 2), round(h / 2))} and summary["models"]["student"]["psnr"] > 10


def test_start_3_with_a_stretched_student_schedule(std_run, capsys):
    scene, out, _, _ = std_run
    teachers = [os.path.join(out, f"point_cloud_{i}", "iteration_150", "point_cloud.ply") for i in range(3)]
    stamps = [os.path.getmtime(f) for f in teachers]
    argv = _argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600", "--student_steps_scale", "1.4",
                                       "--checkpoint_iterations", "30000"]
    summary = train.main(argv)
    assert [os.path.getmtime(f) for f in teachers] == stamps  # read at the teachers' own last iteration
    s = summary["models"]["student"]
    # 150 teacher iterations x 1.4; the second prune's cuts at 16000, 17000 and 18000 x 0.005 x 1.4
    assert s["iterations"] == 210 and summary["iterations"] == 150
    assert [(e["kind"], e["iteration"]) for e in s["events"]] == [("second", 112), ("second", 119), ("second", 126)]
    assert os.path.isfile(os.path.join(out, "point_cloud_3", "iteration_210", "point_cloud.ply"))
    assert os.path.isfile(os.path.join(out, "chkpntstudent210.pth"))
    assert not os.path.isdir(os.path.join(out, "point_cloud_3", "iteration_150"))
    assert render.run_last_iteration(out, student=True) == 210 and render.run_last_iteration(out) == 150
    models = {m.name: m for m in discover_models(out)[1]}
    assert models["student"].iteration == 210 and models["student"].psnr == pytest.approx(s["psnr"])
    capsys.readouterr()
    with pytest.raises(UserError, match="has finished"):  # the student's last iteration is 210, not 150
        train.main(["-m", out, "--resume"])


def test_unseen_prune_runs_at_the_teachers_opacity_resets_of_the_growth_phase():
    opt = opt_defaults()
    assert unseen_prune_iterations(opt) == {3000, 6000, 9000, 12000}
    assert unseen_prune_iterations(scale_steps(opt_defaults(), 0.25)) == {750, 1500, 2250, 3000}


def test_unseen_prune_removes_exactly_the_gaussians_of_no_importance():
    from distill.importance import gaussian_importance
    from tests.test_novel_views import _ring
    cams = _ring(4)
    g = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(150, 3, generator=g) * 0.4,  # in every view
                        torch.randn(30, 3, generator=g) + torch.tensor([0.0, 0.0, 60.0])])  # above all of them
    model = GaussianModel(0)
    model.create_from_points(points, torch.rand(180, 3, generator=g), 1.0)
    pipe, bg = PipelineParams.defaults(backend="torch"), torch.zeros(3)
    opt = scale_steps(opt_defaults(), 0.01)  # densification 5..150, opacity resets every 30
    targets = {c.uid: torch.rand(3, 24, 32).half() for c in cams}
    make = lambda on: StudentRole(DistillParams.defaults(student_prune_unseen=on), opt, pipe, bg, targets,  # noqa
                                  model.get_xyz.detach().clone(), cams)
    assert make("off").unseen_events == set() and make("on").unseen_events == {30, 60, 90, 120}
    role = make("on")
    imp = gaussian_importance(model, cams, pipe, bg)
    zero = imp == 0
    assert zero[150:].all() and 0 < int(zero.sum()) < 180  # (some near ones may never be the strongest either)
    keep = model.get_xyz[~zero].detach().clone()
    state = {"rows": torch.arange(180.0)}
    role.after_step(31, model, state, None)  # not an event
    assert model.num_points == 180 and role.log == []
    role.after_step(30, model, state, None)
    assert torch.equal(model.get_xyz.detach(), keep)
    assert torch.equal(state["rows"], torch.arange(180.0)[~zero])  # the statistics follow their Gaussians
    assert role.log == [dict(iteration=30, kind="unseen", before=180, after=180 - int(zero.sum()))]


def test_start_3_with_the_unseen_prune_records_it(std_run):
    scene, out, _, _ = std_run
    summary = train.main(_argv(scene, out, "sfm") + ["--start", "3", "--num_max", "600", "--student_prune_unseen",
                                                      "on", "--opacity_reset_interval", "6000"])  # (30 after the scale)
    events = [e for e in summary["models"]["student"]["events"] if e["kind"] == "unseen"]
    assert [e["iteration"] for e in events] == [30, 60]
    assert all(e["after"] <= e["before"] for e in events)
    assert summary["models"]["student"]["prune_unseen"] is True
    assert json.load(open(os.path.join(out, "cfg_args.json")))["student_prune_unseen"] == "on"


@pytest.mark.parametrize("setting, init, random_start, on", [
    ("auto", "sfm", True, True), ("auto", "sfm", False, False), ("auto", "std", True, False),
    ("on", "sfm", False, True), ("off", "sfm", True, False)])
def test_the_unseen_prune_is_on_by_default_only_for_a_random_start(setting, init, random_start, on):
    dp = DistillParams.defaults(student_prune_unseen=setting, student_init=init)
    assert prunes_unseen(dp, random_start) is on


@pytest.mark.parametrize("setting, init, random_start, iterations, expected", [
    ("auto", "sfm", True, [5000, 10000], {5000, 10000}), ("auto", "sfm", False, [10000], set()),
    ("auto", "std", True, [10000], set()), ("on", "sfm", False, [5000], {5000}), ("off", "sfm", True, [10000], set()),
    ("auto", "sfm", True, [10000, 16000, 20000], {10000})])  # auto leaves out those at or after the first cut
def test_the_depth_reinitialisation_is_on_by_default_only_for_a_random_start(setting, init, random_start, iterations,
                                                                            expected):
    dp = DistillParams.defaults(depth_reinit=setting, student_init=init, student_depth_reinit=iterations)
    assert prune_cut_iterations(dp)[0] == 16000
    assert depth_reinit_iterations(dp, random_start) == expected


def test_a_random_start_student_is_re_initialised_at_the_default_and_warned_of_late_iterations(tmp_path, capsys):
    """--depth_reinit auto on a NeRF-synthetic (random-start) scene: the default --student_depth_reinit 10000 runs;
    an iteration at or after the first cut is left out with one warning, before anything trains."""
    from tests.test_bad_input import _make_blender
    colmap = make_synthetic_scene(str(tmp_path / "c"), num_views=6, width=16, height=12, num_points=30, seed=0)
    blender = _make_blender(str(tmp_path / "b"), colmap)
    argv = _argv(blender, str(tmp_path / "o"), "sfm") + ["--num_max", "300", "--num_random_points", "200"]
    summary = train.main(argv + ["--student_depth_reinit", "10000", "16000"])  # x 0.005: 50 and 80, cuts from 80
    err = capsys.readouterr().err
    assert err.count("warning: --depth_reinit auto leaves out") == 1 and "iteration 80" in err, err
    assert err.count("--student_prune_unseen auto") == 1  # (_argv's --opacity_reset_interval 100000: no unseen prune)
    s = summary["models"]["student"]
    assert s["depth_reinit"] == [50] and [e["iteration"] for e in s["events"] if e["kind"] == "depth_reinit"] == [50]


def test_a_run_saved_before_depth_reinit_keeps_its_explicit_iterations(tmp_path):
    from arguments.config import saved_flags
    with open(tmp_path / "cfg_args.json", "w") as f:
        json.dump({"iterations": 10, "student_depth_reinit": [5000]}, f)  # its reinit was on when listed
    flags = saved_flags(str(tmp_path), [DistillParams])
    assert flags["depth_reinit"] == "on" and flags["student_depth_reinit"] == [5000]
    with open(tmp_path / "cfg_args.json", "w") as f:
        json.dump({"iterations": 10}, f)  # none listed: off
    assert saved_flags(str(tmp_path), [DistillParams])["student_depth_reinit"] == []


def test_a_nerf_synthetic_scene_starts_from_random_points_and_a_colmap_one_does_not(tmp_path):
    from scene.dataset_readers import read_scene
    from tests.test_bad_input import _make_blender
    colmap = make_synthetic_scene(str(tmp_path / "c"), num_views=8, width=16, height=12, num_points=30, seed=0)
    blender = _make_blender(str(tmp_path / "b"), colmap)
    assert read_scene(colmap).random_points is False
    info = read_scene(blender)
    assert info.random_points is True and info.points.shape == (100_000, 3)


@pytest.mark.parametrize("name", ["student_prune_unseen", "student_opacity_reset"])
def test_a_saved_switch_reads_as_the_choice_that_replaced_it(tmp_path, name):
    from arguments.config import saved_flags
    for saved, read in ((True, "on"), (False, "off"), ("auto", "auto")):
        with open(tmp_path / "cfg_args.json", "w") as f:
            json.dump({name: saved}, f)
        assert saved_flags(str(tmp_path), [DistillParams])[name] == read
    with open(tmp_path / "cfg_args.json", "w") as f:
        json.dump({"iterations": 10}, f)  # a run from before the flag: off
    assert saved_flags(str(tmp_path), [DistillParams])[name] == "off"


def test_never_strongest_at_last_lets_the_earlier_cuts_keep_their_geometric_counts():
    from distill.importance import gaussian_importance
    from tests.test_novel_views import _ring
    cams = _ring(4)
    g = torch.Generator().manual_seed(0)
    points, colours = torch.randn(120, 3, generator=g) * 0.4, torch.rand(120, 3, generator=g)

    def twice():  # each Gaussian twice: the copy behind is never a pixel's strongest contributor
        m = GaussianModel(0)
        m.create_from_points(points.repeat(2, 1), colours.repeat(2, 1), 1.0)
        return m
    model = twice()
    pipe, bg = PipelineParams.defaults(backend="torch"), torch.zeros(3)
    strongest = gaussian_importance(model, cams, pipe, bg) > 0
    contributes = gaussian_importance(model, cams, pipe, bg, strongest_rule=False) > 0
    assert int(strongest.sum()) <= 120 and bool(contributes.all())
    opt = scale_steps(opt_defaults(), 0.01)
    targets = {c.uid: torch.rand(3, 24, 32).half() for c in cams}
    std_xyz = model.get_xyz.detach().clone()  # G_std's count 240: the target 36, the first of three cuts 128
    counts = {}
    for rule in ("every", "last"):
        m = twice()
        m.training_setup(opt)
        dp = DistillParams.defaults(prune_stages=3, second_prune_iter=100, prune_stage_interval=10,
                                    student_max_ratio=0.15, never_strongest_at=rule, student_prune_unseen="off")
        role = StudentRole(dp, opt, pipe, bg, targets, std_xyz, cams)
        state = {"rows": torch.arange(240.0)}
        for it in (100, 110, 120):
            role.after_step(it, m, state, None)
        counts[rule] = [e["after"] for e in role.log]
        assert counts[rule][-1] <= 36
    assert counts["every"][0] <= int(strongest.sum()) < 128  # the rule takes the first cut below its count
    assert counts["last"][0] == cut_count(0, 3, 240, 36) == 128


@pytest.mark.parametrize("random_start", [True, False])
def test_the_student_role_resolves_the_auto_reset_from_the_scene(random_start):
    from distill.roles import StudentRole
    opt = opt_defaults()
    role = StudentRole(DistillParams.defaults(), opt, None, None, {}, torch.zeros(100, 3), [],
                       random_start=random_start)
    assert role.resets_opacity is random_start
    assert role.make_strategy(opt, 1.0, False).config.opacity_reset is random_start


def test_log_linear_ends_and_zero_weights():
    """utils.general_utils.log_linear (the position LR and depth-weight schedules): the ends exactly, log-linear
    between them, clamped outside; a zero end is zero (no NaN from log 0) wherever the schedule is not at the other."""
    from utils.general_utils import log_linear  # noqa: PLC0415
    assert log_linear(1e-2, 1e-4, 0, 100) == pytest.approx(1e-2)
    assert log_linear(1e-2, 1e-4, 100, 100) == pytest.approx(1e-4)
    assert log_linear(1e-2, 1e-4, 50, 100) == pytest.approx(1e-3)
    assert log_linear(1e-2, 1e-4, -5, 100) == log_linear(1e-2, 1e-4, 0, 100)
    assert log_linear(1e-2, 1e-4, 500, 100) == log_linear(1e-2, 1e-4, 100, 100)
    assert [log_linear(1.0, 0.0, it, 10) for it in (0, 1, 10)] == [1.0, 0.0, 0.0]
    assert [log_linear(0.0, 1.0, it, 10) for it in (0, 9, 10)] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("setting, init, random_start, says", [
    ("auto", "sfm", False, "--depth_reinit auto is off on a scene with SfM points"),
    ("off", "sfm", True, "--depth_reinit off"),
    ("auto", "std", True, "--student_init std")])
def test_reinit_flags_a_student_that_does_not_reinitialise_ignores_are_warned_of(capsys, setting, init, random_start,
                                                                                 says):
    from distill.student_schedule import warn_unused_reinit_flags
    dp = DistillParams.defaults(num_models=4, depth_reinit=setting, student_init=init)
    warn_unused_reinit_flags(dp, random_start, {"student_depth_reinit", "iterations"})
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "--student_depth_reinit has no effect" in err and says in err, err
    warn_unused_reinit_flags(dp, random_start, {"iterations"})  # (the defaults, not given: nothing to say)
    on = DistillParams.defaults(num_models=4, depth_reinit="on")
    warn_unused_reinit_flags(on, False, {"student_depth_reinit", "depth_reinit_colour"})  # (it runs: used)
    assert capsys.readouterr().err == ""


def test_a_run_shortened_by_iterations_alone_is_warned_that_the_student_misses_its_prune(capsys):
    from distill.student_schedule import warn_events_past_the_end

    def said(iterations, steps_scale=1.0, **flags):
        opt, dp = opt_defaults(iterations=iterations), DistillParams.defaults(num_models=4, **flags)
        scale_steps(opt, steps_scale)  # (what train.py does with --steps_scale: every iteration flag)
        scale_steps(dp, steps_scale)
        warn_events_past_the_end(opt, dp)
        return capsys.readouterr().err

    err = said(7000)  # (the student's last iteration: 9800 with the 0.4 tail)
    assert err.count("warning:") == 1 and "last iteration (9800) comes before its second prune" in err
    assert "end unpruned" in err and "its structure loss (--structure_start: 21000" in err and "--steps_scale" in err
    assert "structure" not in said(7000, lambda_structure=0.0) and "second prune" in said(7000, lambda_structure=0.0)
    assert "second prune" not in said(7000, student_init="std")  # (it never cuts) ...
    assert "second prune" not in said(7000, student_densify="mcmc", student_max_ratio=0.12)
    assert said(18000) == "" and said(30000, 0.25) == "" and said(30000) == ""  # ... and these cut in time


def test_an_auto_unseen_prune_without_an_iteration_in_its_window_is_warned(capsys):
    from distill.student_schedule import warn_auto_events_left_out

    def said(random_start=True, opacity_reset_interval=3000, **flags):
        opt = opt_defaults(opacity_reset_interval=opacity_reset_interval)
        warn_auto_events_left_out(opt, DistillParams.defaults(num_models=4, **flags), random_start)
        return capsys.readouterr().err

    err = said(opacity_reset_interval=20000)  # (a common way to turn the teachers' resets off)
    assert err.count("warning:") == 1 and "--student_prune_unseen auto" in err and "prunes nothing" in err
    assert "(20000 after the step scales)" in err and "window (500 to 15000)" in err
    assert said() == ""  # (the default interval: resets at 3000, 6000, ... inside the window)
    assert said(False, opacity_reset_interval=20000) == ""  # (SfM points: auto is off)
    assert said(opacity_reset_interval=20000, student_prune_unseen="off") == ""
    assert said(opacity_reset_interval=20000, student_init="std", student_max_ratio=0.12) == ""


def test_an_sfm_scene_run_warns_once_of_the_reinit_flags_it_ignores(tmp_path, capsys):
    """train.py on a COLMAP scene (SfM points: --depth_reinit auto is off) with --student_depth_reinit and
    --depth_reinit_colour given: one warning line naming both, and no re-initialisation."""
    scene = make_synthetic_scene(str(tmp_path / "c"), num_views=6, width=16, height=12, num_points=30, seed=0)
    summary = train.main(_argv(scene, str(tmp_path / "o"), "sfm") + [
        "--student_depth_reinit", "5000", "--depth_reinit_colour", "strongest"])
    err = capsys.readouterr().err
    assert err.count("have no effect") == 1 and "--student_depth_reinit and --depth_reinit_colour" in err, err
    assert summary["models"]["student"]["depth_reinit"] == []
