"""Distilled-3DGS pieces: teacher variants, student pruning, structure loss, and the four-model run."""
import json
import os
from types import SimpleNamespace

import pytest
import torch

import train
from arguments import DistillParams
from distill.importance import prune_least_important, sample_by_importance
from distill.roles import DropoutRole, PerturbRole, gram_schmidt_6d, reinitialise, schedule
from distill.structure import joint_box, structure_loss
from gaussian_renderer import render
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.test_training import opt_defaults, random_model
from utils.graphics_utils import matrix_to_quaternion, quaternion_to_matrix


def dp_defaults(**kw):
    return DistillParams.defaults(**kw)


def test_reference_schedules():
    assert sorted(schedule(15000, 25000, 1000)) == list(range(16000, 25000, 1000))  # 9 events
    r = DropoutRole(dp_defaults())
    assert r.probability(500) == 0 and r.probability(15000) == pytest.approx(0.2)


def test_noise_event_changes_only_candidates_and_not_colours():
    torch.manual_seed(0)
    m = random_model(60)
    role = PerturbRole(dp_defaults(), opt_defaults(), extent=100.0)
    state = role.initialize_state(m.num_points, "cpu")
    state["perturb_count"][:] = 1.0
    state["perturb_grad"][:20] = 1.0  # candidates: hot, and small (max scale <= 0.01 x 100)
    cand = role.candidates(m, state)
    assert cand[:20].any() and not cand[20:].any()
    before = {k: v.detach().clone() for k, v in m.params.items()}
    role.before_step(16000, m, state)
    for k in ("xyz", "opacity", "scaling", "rotation"):
        changed = (m.params[k].detach() != before[k]).flatten(1).any(1)
        assert changed[cand].all(), k
        assert not changed[~cand].any(), k
    for k in ("f_dc", "f_rest"):
        assert torch.equal(m.params[k].detach(), before[k])
    assert role.log == [(16000, int(cand.sum()))]
    assert not state["perturb_grad"].any() and not state["perturb_count"].any()  # restarted by the event
    # not an event: nothing moves
    snap = {k: v.detach().clone() for k, v in m.params.items()}
    role.before_step(16500, m, state)
    assert all(torch.equal(m.params[k].detach(), snap[k]) for k in snap)


def test_candidate_statistics_only_between_perturb_start_and_the_last_event():
    dp = dp_defaults(perturb_start=100, perturb_end=400, perturb_interval=100)  # events 200 and 300
    role = PerturbRole(dp, opt_defaults(), extent=100.0)
    state = role.initialize_state(10, "cpu")
    xy = torch.zeros(10, 3)
    xy.grad = torch.full((10, 3), 0.5)
    out = dict(viewspace_points=xy, visibility_filter=torch.ones(10, dtype=torch.bool))
    for it in (50, 100, 300, 350):  # before the window, its start, the last event, after it
        role.update_stats(it, state, out)
    assert not state["perturb_grad"].any() and not state["perturb_count"].any()
    role.update_stats(150, state, out)
    role.update_stats(250, state, out)
    assert state["perturb_count"].tolist() == [2.0] * 10
    torch.testing.assert_close(state["perturb_grad"], torch.full((10,), 2 * 0.5 * 2 ** 0.5))


def test_rotation_6d_round_trip():
    q = torch.nn.functional.normalize(torch.randn(100, 4), dim=-1)
    R = quaternion_to_matrix(q)
    R2 = gram_schmidt_6d(R[:, :2, :].reshape(-1, 6))
    torch.testing.assert_close(R, R2, atol=1e-5, rtol=1e-5)
    q2 = matrix_to_quaternion(R2)
    torch.testing.assert_close(quaternion_to_matrix(q2), R, atol=1e-5, rtol=1e-5)


def test_dropout_changes_training_renders_keeps_expected_opacity_and_never_evaluation():
    torch.manual_seed(1)
    m = random_model(200, degree=0)
    role = DropoutRole(dp_defaults())
    assert role.render_opacity(15000, m) is None  # not an event
    p = role.probability(16000)
    draws = torch.stack([role.render_opacity(16000, m) for _ in range(400)])
    # compensation keeps the expected opacity
    torch.testing.assert_close(draws.mean(0), m.get_opacity.detach(), atol=0.05, rtol=0.1)
    dropped = (draws == 0).float().mean()
    assert abs(float(dropped) - p) < 0.02
    # evaluate() renders with the model's own opacity: the role is never asked
    from training.loop import evaluate
    cam = _camera()
    pipe = SimpleNamespace(backend="torch")
    bg = torch.zeros(3)
    plain = render(cam, m, pipe, bg)["render"]
    dropped_img = render(cam, m, pipe, bg, opacity=role.render_opacity(16000, m))["render"]
    assert (plain - dropped_img).abs().max() > 1e-3
    assert evaluate(m, [cam], pipe, bg)["psnr"] == evaluate(m, [cam], pipe, bg)["psnr"]


def _camera():
    import numpy as np
    from scene.cameras import Camera
    img = torch.zeros(3, 24, 32, dtype=torch.uint8)
    return Camera(0, np.eye(3), np.array([-0.5, -0.5, 3.0]), 1.0, 0.8, 32, 24, "c", img)


def test_structure_loss_matches_direct_3d_histogram_and_has_gradients():
    torch.manual_seed(0)
    bins, sigma = 256, 0.5
    s = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(50, 3, dtype=torch.float64) * 0.8 + 0.2
    loss = structure_loss(s, t, bins=bins, sigma=sigma)
    # direct computation on the full 256^3 grid
    lo, hi = joint_box(s.detach(), t)
    cells = torch.arange(bins, dtype=torch.float64)

    def grid(p):  # the 3-D histogram: outer product of the per-axis marginals (METHOD.md), normalised
        u = (p.detach() - lo) / (hi - lo) * (bins - 1)
        w = torch.exp(-(u[:, :, None] - cells) ** 2 / (2 * sigma ** 2)).sum(0)  # [3, bins]
        h = torch.einsum("a,b,c->abc", w[0], w[1], w[2])
        return h / h.sum()
    hs, ht = grid(s), grid(t)
    direct = 1 - (hs * ht).sum() / (hs.norm() * ht.norm())
    assert float(loss.detach()) == pytest.approx(float(direct), rel=1e-9, abs=1e-12)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and torch.isfinite(s.grad).all()
    # identical sets: zero loss
    assert float(structure_loss(t.clone(), t)) == pytest.approx(0.0, abs=1e-9)


def test_importance_pruning_keeps_the_most_important():
    imp = torch.tensor([0.0, 5.0, 0.001, 3.0, 0.002, 0.0, 1.0, 0.003])
    remove = prune_least_important(imp, 0.01)
    # 0.0+0.0+0.001+0.002+0.003 = 0.006 <= 1% of 9.006; the next (1.0) is not
    assert remove.tolist() == [True, False, True, False, True, True, False, True]
    # a count cap removes the next least important too: keep the 2 most important (5.0 and 3.0)
    assert prune_least_important(imp, 0.01, max_keep=2).tolist() == [True, False, True, False, True, True, True, True]
    assert prune_least_important(imp, 0.01, max_keep=5).tolist() == remove.tolist()  # cap not binding
    g = torch.Generator().manual_seed(0)
    keep = sample_by_importance(imp, factor=0.9, generator=g)
    positive = int((imp > 0).sum())
    assert int(keep.sum()) == int(len(imp) * 0.9 * positive / len(imp))
    assert not keep[imp == 0].any()
    # over many draws the most important Gaussian is kept most often
    counts = torch.zeros(len(imp))
    for seed in range(200):
        counts += sample_by_importance(imp, 0.3, torch.Generator().manual_seed(seed)).float()
    assert counts.argmax() == 1 and counts[0] == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_reinitialise_keeps_positions_and_dc_only(device):
    m = random_model(60)
    m.device = torch.device(device)
    m.params = {k: torch.nn.Parameter(v.detach().to(device)) for k, v in m.params.items()}
    keep = torch.zeros(60, dtype=torch.bool, device=device)
    keep[::2] = True
    xyz, dc = m.params["xyz"].detach()[keep].clone(), m.params["f_dc"].detach()[keep].clone()
    reinitialise(m, keep)
    assert m.num_points == 30 and m.get_xyz.device.type == device
    torch.testing.assert_close(m.get_xyz.detach(), xyz)
    torch.testing.assert_close(m.params["f_dc"].detach(), dc)
    assert (m.params["f_rest"] == 0).all()
    torch.testing.assert_close(m.get_opacity.detach(), torch.full((30, 1), 0.1, device=device))
    torch.testing.assert_close(m.params["rotation"].detach(), torch.tensor([[1.0, 0, 0, 0]] * 30, device=device))
    d2 = torch.cdist(xyz, xyz).pow(2) + torch.eye(30, device=device) * 1e9
    knn = d2.topk(3, largest=False).values.mean(1).clamp_min(1e-7).sqrt()
    torch.testing.assert_close(m.get_scaling.detach(), knn[:, None].expand(30, 3), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("views", [1, 6])
def test_warns_when_the_student_would_densify_too_often(tmp_path, capsys, views):
    from utils.errors import run_cli
    scene = make_synthetic_scene(str(tmp_path / "s"), num_views=8, width=32, height=24, num_points=100, seed=0)
    with pytest.raises(SystemExit):  # --start 3 without teachers on disk: stops after the flag checks
        run_cli(train.main, ["-s", scene, "-m", str(tmp_path / "o"), "--num_models", "4", "--start", "3",
                             "--steps_scale", "0.05", "--views_per_step", str(views)])
    err = capsys.readouterr().err
    assert "has no saved iteration" in err
    assert ("warning: the student densifies every 5 training views" in err) == (views == 1), err


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    scene = make_synthetic_scene(str(root / "scene"), num_views=12, width=48, height=36, num_points=400, seed=2)
    out = str(root / "out")
    argv = ["-s", scene, "-m", out, "--eval", "--num_models", "4", "--views_per_step", "1", "--quiet",
            "--steps_scale", "0.01", "--densification_interval", "2000", "--opacity_reset_interval", "100000",
            "--firstPrune", "--test_iterations", "30000", "--densify_grad_threshold", "0.001"]
    # (the higher threshold keeps the teachers at ~3k Gaussians instead of ~25k: 2.5x faster on the CPU)
    summary = train.main(argv)
    return scene, out, argv, summary


def test_four_models_train_and_the_student_is_smaller(distill_run):
    scene, out, _, summary = distill_run
    for i, last in enumerate((300, 300, 300, 420)):  # the student: 300, then its tail of 0.4 x 300 (the defaults)
        assert os.path.isfile(os.path.join(out, f"point_cloud_{i}", f"iteration_{last}", "point_cloud.ply"))
    m = summary["models"]
    assert m["student"]["iterations"] == 420 and m["G_std"]["iterations"] == 300
    assert set(m) == {"G_perb", "G_drop", "G_std", "student"}
    assert m["student"]["gaussians"] < 0.6 * m["G_std"]["gaussians"], m
    assert [e["kind"] for e in m["student"]["events"]] == ["first", "second", "second", "second"]  # (three cuts)
    assert len(m["G_perb"]["events"]) == 9
    on_disk = json.load(open(os.path.join(out, "distill.json")))
    assert on_disk["models"]["student"]["gaussians"] == m["student"]["gaussians"]
    for r in m.values():
        assert r["psnr"] is not None and r["ply_mb"] > 0
        # the stage's wall time splits into initialisation, setup before the loop and the loop itself
        assert 0 <= r["init_seconds"] + r["setup_seconds"] + r["train_seconds"] <= r["stage_seconds"] + 0.05, r
    # and what lies between the stages is counted too: the pipeline's wall time is their sum, to the start-up
    total = sum(r["stage_seconds"] + r["handoff_seconds"] for r in m.values())
    assert min(r["handoff_seconds"] for r in m.values()) >= 0
    assert total - 0.05 <= summary["total_seconds"] < total + 1.0  # (each of the eight parts rounded to 0.01 s)
    assert on_disk["models"]["G_perb"]["handoff_seconds"] == m["G_perb"]["handoff_seconds"]


def test_the_table_shows_each_models_stage_seconds(capsys):
    from distill.pipeline import print_table  # noqa: PLC0415
    row = dict(psnr=20.0, ssim=0.5, lpips=None, gaussians=10, ply_mb=0.01, peak_memory_gib=None)
    print_table(dict(models=dict(G_std=dict(row, stage_seconds=12.5, train_seconds=12.0),
                                 student=dict(row, stage_seconds=20.25, train_seconds=11.0),
                                 G_perb=dict(row, train_seconds=7.0))))  # (a summary from before stage times)
    lines = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[2:]}
    assert [lines[k][6] for k in ("G_perb", "G_std", "student")] == ["7.0", "12.5", "20.2"]


def test_start_3_reuses_teachers(distill_run, capsys):
    scene, out, argv, _ = distill_run
    teacher_files = [os.path.join(out, f"point_cloud_{i}", "iteration_300", "point_cloud.ply") for i in range(3)]
    stamps = [os.path.getmtime(f) for f in teacher_files]
    summary = train.main(argv + ["--start", "3", "--student_max_ratio", "0.1"])
    assert [os.path.getmtime(f) for f in teacher_files] == stamps
    assert set(summary["models"]) == {"G_perb", "G_drop", "G_std", "student"}
    m = summary["models"]  # the count cap of the second prune holds
    assert 0 < m["student"]["gaussians"] <= int(0.1 * m["G_std"]["gaussians"]), m
    # missing teachers are a clear error
    os.rename(os.path.join(out, "point_cloud_1"), os.path.join(out, "moved"))
    try:
        with pytest.raises(SystemExit) as e:
            from utils.errors import run_cli
            run_cli(train.main, argv + ["--start", "3"])
        assert e.value.code == 2
        assert "G_drop" in capsys.readouterr().err
    finally:
        os.rename(os.path.join(out, "moved"), os.path.join(out, "point_cloud_1"))


class _OnGpu:
    """A trained model as Teachers.keep sees it: its parameters' size, its device, and the moves it is asked for."""

    def __init__(self, n):
        self.params = dict(xyz=torch.zeros(n, 3), f_rest=torch.zeros(n, 15, 3))  # 192 bytes a Gaussian
        self.device = torch.device("cuda")
        self.moves = []

    def to(self, device):
        self.moves.append(str(device))
        self.device = torch.device(device)
        return self


@pytest.mark.parametrize("free, where", [(10 * 192_000, "cuda"), (10 * 192_000 - 1, "cpu")])
def test_a_trained_teacher_stays_on_the_gpu_when_it_has_room_for_it_ten_times_over(monkeypatch, free, where):
    from distill.pipeline import Teachers
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (free, 80 * 2 ** 30))
    teachers, model = Teachers(100), _OnGpu(1000)
    teachers.keep(0, model)
    assert teachers.trained[0] is model and model.device.type == where
    assert model.moves[0] == "cuda"  # first its optimizer goes (its moments: twice the parameters)
    # what a later stage's peak GPU memory must not count as its own
    assert teachers.gpu_bytes() == (192_000 if where == "cuda" else 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_gpu_the_teachers_wait_there_and_each_stage_reports_its_own_peak(tmp_path, monkeypatch):
    import distill.pipeline as pl
    held, raw, where = [], [], []
    real_bytes, real_train, real_keep = pl.Teachers.gpu_bytes, pl.train_model, pl.Teachers.keep

    def gpu_bytes(self):  # (asked once a stage, before its training)
        held.append(real_bytes(self))
        return held[-1]

    def train_model(*a, **k):
        res = real_train(*a, **k)
        raw.append(torch.cuda.max_memory_allocated() / 2 ** 30)
        return res

    def keep(self, index, model):
        real_keep(self, index, model)
        where.append(self.trained[index].device.type)

    monkeypatch.setattr(pl.Teachers, "gpu_bytes", gpu_bytes)
    monkeypatch.setattr(pl.Teachers, "keep", keep)
    monkeypatch.setattr(pl, "train_model", train_model)
    scene = make_synthetic_scene(str(tmp_path / "scene"), num_views=8, width=48, height=36, num_points=300, seed=3)
    summary = train.main(["-s", scene, "-m", str(tmp_path / "out"), "--eval", "--num_models", "4", "--quiet",
                          "--views_per_step", "1", "--steps_scale", "0.01", "--test_iterations", "30000",
                          "--densification_interval", "2000", "--opacity_reset_interval", "100000"])  # (as above)
    assert where == ["cuda"] * 3  # an H200 has room for them many times over
    assert held[0] == 0 and 0 < held[1] < held[2] and held[3] == 0  # the student's role took what it needs of them
    for name, peak, h in zip(pl.MODEL_NAMES, raw, held):
        assert summary["models"][name]["peak_memory_gib"] == pytest.approx(peak - h / 2 ** 30, abs=2e-3), name
