"""GaussianModel PLY I/O, densification bookkeeping, end-to-end training, and bad-input handling."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import train
from arguments import OptimizationParams
from scene.gaussian_model import PARAM_NAMES, GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from utils.errors import UserError
from training.densify import DensifyConfig, DensifyStrategy


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    return make_synthetic_scene(str(tmp_path_factory.mktemp("scene")), num_views=16, width=64, height=48,
                                num_points=500, seed=1)


def random_model(n=50, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = GaussianModel(degree)
    pts = torch.rand(n, 3, generator=g).numpy()
    m.create_from_points(pts, torch.rand(n, 3, generator=g).numpy(), spatial_lr_scale=2.0)
    for k in PARAM_NAMES:  # make every parameter non-trivial
        m.params[k].data.add_(0.1 * torch.randn(m.params[k].shape, generator=g))
    return m


def opt_defaults(**kw):
    return OptimizationParams.defaults(**kw)


def test_ply_round_trip(tmp_path):
    m = random_model()
    path = str(tmp_path / "a" / "point_cloud.ply")
    m.save_ply(path)
    m2 = GaussianModel(0).load_ply(path)
    assert m2.max_sh_degree == 3
    for k in PARAM_NAMES:
        torch.testing.assert_close(m.params[k].detach(), m2.params[k].detach())
    # standard 3DGS attribute names and order, so other viewers read it
    from plyfile import PlyData
    names = [p.name for p in PlyData.read(path)["vertex"].properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert not [f for f in os.listdir(tmp_path / "a") if f.endswith(".tmp")]


def test_a_ply_of_other_types_and_order_loads_the_same(tmp_path):
    """Another writer's PLY: doubles, the properties in another order, extra ones (the one-pass float32 path does
    not apply); and an f_rest count that is not 3 x an SH band layout is refused."""
    from plyfile import PlyData, PlyElement
    from utils.errors import UserError
    m = random_model()
    path = str(tmp_path / "a.ply")
    m.save_ply(path)
    data = PlyData.read(path)["vertex"].data
    names = list(data.dtype.names)[::-1] + ["extra"]
    other = np.zeros(len(data), dtype=[(n, "f8") for n in names])
    for n in names[:-1]:
        other[n] = data[n]
    PlyData([PlyElement.describe(other, "vertex")]).write(str(tmp_path / "b.ply"))
    m2 = GaussianModel(0).load_ply(str(tmp_path / "b.ply"))
    for k in PARAM_NAMES:
        assert torch.equal(m.params[k].detach(), m2.params[k].detach()), k
    fewer = [n for n in data.dtype.names if n != "f_rest_44"]  # 44 f_rest values
    cut = np.zeros(len(data), dtype=[(n, "f4") for n in fewer])
    for n in fewer:
        cut[n] = data[n]
    PlyData([PlyElement.describe(cut, "vertex")]).write(str(tmp_path / "c.ply"))
    with pytest.raises(UserError, match="44 f_rest values"):
        GaussianModel(0).load_ply(str(tmp_path / "c.ply"))


def test_to_device_keeps_values_and_drops_the_optimizer():
    m = random_model(20)
    m.training_setup(opt_defaults())
    before = {k: v.detach().clone() for k, v in m.params.items()}
    m.active_sh_degree = 2
    assert m.to("cpu") is m and m.optimizer is None and m.active_sh_degree == 2
    for k, v in before.items():
        assert torch.equal(m.params[k].detach(), v) and m.params[k].requires_grad


def test_load_ply_rejects_garbage(tmp_path):
    from utils.errors import UserError
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply")
    with pytest.raises(UserError, match="bad.ply"):
        GaussianModel(3).load_ply(str(bad))


def test_init_from_points_uses_knn_scales():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]], dtype=np.float32)
    m = GaussianModel(1)
    m.create_from_points(pts, np.full((5, 3), 0.5, np.float32))
    from scipy.spatial import cKDTree
    d, _ = cKDTree(pts).query(pts, k=4)
    expect = np.sqrt((d[:, 1:] ** 2).mean(1))
    np.testing.assert_allclose(m.get_scaling[:, 0].detach().numpy(), expect, rtol=1e-5)
    torch.testing.assert_close(m.get_opacity.detach(), torch.full((5, 1), 0.1))
    assert (m.get_rotation == torch.tensor([1.0, 0, 0, 0])).all()


def test_densification_keeps_params_and_adam_state_aligned():
    torch.manual_seed(0)
    m = random_model(40)
    opt = opt_defaults()
    m.training_setup(opt)
    # one real step so every Adam moment is non-zero and row-specific
    loss = sum((p ** 2).sum() for p in m.params.values())
    loss.backward()
    m.optimizer.step()
    m.params["scaling"].data[:5] = np.log(0.5)  # big -> split; 5..9 small -> clone
    m.params["scaling"].data[5:10] = np.log(0.001)
    m.params["opacity"].data[30] = -10  # transparent -> pruned
    before = {k: (m.params[k].detach().clone(), m.optimizer.state[m.params[k]]["exp_avg"].clone())
              for k in PARAM_NAMES}
    s = DensifyStrategy(DensifyConfig.from_opt(opt, extent=1.0))
    state = s.initialize_state(40, "cpu")
    state["grad_accum"][:10] = 1.0  # hot
    state["denom"][:] = 1.0
    info = s.densify_and_prune(m, state)
    assert info["cloned"] == 5 and info["split"] == 5
    n = m.num_points
    assert n == 40 + 5 + 10 - 5 - 1
    for k in PARAM_NAMES:
        p = m.params[k]
        st = m.optimizer.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
        group = next(g for g in m.optimizer.param_groups if g["name"] == k)
        assert group["params"][0] is p
    # survivors (all but the split originals 0..4 and the transparent 30) keep values and moments, in order
    keep = [i for i in range(5, 40) if i != 30]
    for k in PARAM_NAMES:
        old_p, old_m = before[k]
        torch.testing.assert_close(m.params[k].detach()[:len(keep)], old_p[keep])
        torch.testing.assert_close(m.optimizer.state[m.params[k]]["exp_avg"][:len(keep)], old_m[keep])
    # then 5 clones and 10 split children, whose moments start at zero
    torch.testing.assert_close(m.params["xyz"].detach()[len(keep):len(keep) + 5], before["xyz"][0][5:10])
    tail = m.optimizer.state[m.params["xyz"]]["exp_avg"][-15:]
    assert (tail == 0).all()
    assert all(t.shape[0] == n and not t.any() for t in state.values())  # rows followed, then restarted


@pytest.mark.parametrize("no_reset", [False, True])
def test_opacity_reset_and_no_opacity_reset(no_reset):
    m = random_model(30)
    opt = opt_defaults(no_opacity_reset=no_reset)
    m.training_setup(opt)
    m.params["opacity"].data[:] = 2.0  # opacity 0.88
    m.params["scaling"].data[:] = np.log(0.01)
    m.params["scaling"].data[0] = np.log(5.0)  # above --max_world_scale x extent
    s = DensifyStrategy(DensifyConfig.from_opt(opt, extent=1.0))
    state = s.initialize_state(30, "cpu")
    out = dict(visibility_filter=torch.ones(30, dtype=torch.bool), viewspace_points=torch.zeros(30, 3))
    s.step(m, state, opt.opacity_reset_interval, out, None)
    top = float(m.get_opacity.detach().max())
    assert top == pytest.approx(0.88, abs=0.01) if no_reset else top == pytest.approx(0.01, abs=1e-4)
    assert m.num_points == 30  # the large-Gaussian prune starts only after the interval...
    s.step(m, state, opt.opacity_reset_interval + opt.densification_interval, out, None)
    assert m.num_points == 29  # ...with or without the reset
    assert float(m.get_scaling.detach().max()) < 1.0


def _train(scene, out, *extra):
    return train.main(["-s", scene, "-m", out, "--eval", "--iterations", "400", "--views_per_step", "1",
                       "--test_iterations", "1", "400", "--densify_from_iter", "100", "--densify_until_iter", "300",
                       "--densification_interval", "50", "--opacity_reset_interval", "10000",
                       "--sh_increase_interval", "100", "--quiet", *extra])


@pytest.mark.parametrize("optimizer", ["default", "sparse_adam"])
def test_short_training_raises_test_psnr(tiny_scene, tmp_path, optimizer):
    s = _train(tiny_scene, str(tmp_path / "m"), "--optimizer_type", optimizer)
    hist = s["history"]
    assert hist[0]["split"] == "test"
    assert hist[-1]["psnr"] > hist[0]["psnr"] + 2.5, hist
    assert os.path.isfile(tmp_path / "m" / "point_cloud" / "iteration_400" / "point_cloud.ply")
    cfg = json.load(open(tmp_path / "m" / "cfg_args.json"))
    assert cfg["source_path"] == tiny_scene and cfg["iterations"] == 400


def test_checkpoint_resume(tiny_scene, tmp_path):
    out = str(tmp_path / "c")
    train.main(["-s", tiny_scene, "-m", out, "--iterations", "20", "--views_per_step", "2", "--test_iterations",
                "20", "--checkpoint_iterations", "10", "--densify_from_iter", "5", "--densification_interval", "5",
                "--quiet"])
    ck = os.path.join(out, "chkpnt10.pth")
    assert os.path.isfile(ck)
    s = train.main(["-s", tiny_scene, "-m", out, "--iterations", "20", "--views_per_step", "2",
                    "--test_iterations", "20", "--start_checkpoint", ck, "--quiet"])
    assert s["history"][-1]["iteration"] == 20


def test_profile_reports_phases_that_add_up_to_the_step_time(tiny_scene, tmp_path):
    s = train.main(["-s", tiny_scene, "-m", str(tmp_path / "p"), "--iterations", "60", "--views_per_step", "2",
                    "--test_iterations", "60", "--densify_from_iter", "10", "--densification_interval", "20",
                    "--quiet", "--profile"])
    phases = s["phase_ms"]
    assert {"render", "loss", "backward", "optimizer", "densification"} <= set(phases)
    assert phases["render"] > 0 and phases["backward"] > 0
    # the timed phases cover the step (the rest is Python glue); the clock is the same wall clock on CPU
    assert 0.5 * s["ms_per_step"] <= sum(phases.values()) <= 1.05 * s["ms_per_step"] + 1.0, (phases, s)


def test_last_iteration_does_not_densify_so_the_saved_model_is_the_reported_one(tiny_scene, tmp_path):
    # threshold 0 densifies every seen Gaussian at 20, 40 and (before this rule) 60, the last iteration
    out = tmp_path / "d"
    s = train.main(["-s", tiny_scene, "-m", str(out), "--eval", "--iterations", "60", "--views_per_step", "1",
                    "--test_iterations", "60", "--densify_from_iter", "10", "--densification_interval", "20",
                    "--densify_grad_threshold", "0", "--quiet"])
    from plyfile import PlyData
    n = len(PlyData.read(str(out / "point_cloud" / "iteration_60" / "point_cloud.ply"))["vertex"])
    assert s["gaussians"] == n == s["history"][-1]["gaussians"]
    assert n > 2 * 500  # the two densifications before the last did run


def test_steps_scale_rescales_schedules():
    from arguments import scale_steps
    o = opt_defaults(steps_scale=0.25)
    scale_steps(o, 0.25)
    assert (o.iterations, o.densify_until_iter, o.densification_interval, o.opacity_reset_interval) == \
        (7500, 3750, 25, 750)


def _expect_error(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as e:
        from utils.errors import run_cli
        run_cli(train.main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for f in fragments:
        assert f in err[0], (f, err[0])
    return err[0]


def test_bad_inputs_give_one_line_errors_and_write_nothing(tiny_scene, tmp_path, capsys):
    out = str(tmp_path / "out")
    _expect_error(capsys, ["-s", str(tmp_path / "nope"), "-m", out], "nope", "does not exist")
    _expect_error(capsys, ["-s", tiny_scene, "-m", out, "--resolution", "3"], "--resolution 3")
    # an image listed in the model but missing on disk
    broken = str(tmp_path / "missing_img")
    shutil.copytree(tiny_scene, broken)
    os.remove(os.path.join(broken, "images", sorted(os.listdir(os.path.join(broken, "images")))[3]))
    _expect_error(capsys, ["-s", broken, "-m", out], "missing", "images")
    # a distorted camera model
    from scene import colmap_loader as cl
    dist = str(tmp_path / "distorted")
    shutil.copytree(tiny_scene, dist)
    sp = os.path.join(dist, "sparse", "0")
    cams = cl.read_cameras(os.path.join(sp, "cameras.bin"))
    cams = {k: c._replace(model="OPENCV", params=np.concatenate([c.params[:4], np.zeros(4)]))
            for k, c in cams.items()}
    cl.write_cameras(cams, os.path.join(sp, "cameras.bin"))
    _expect_error(capsys, ["-s", dist, "-m", out], "OPENCV", "convert.py")
    # empty and truncated cameras.bin
    for size in (0, 10):
        bad = str(tmp_path / f"trunc{size}")
        shutil.copytree(tiny_scene, bad)
        p = os.path.join(bad, "sparse", "0", "cameras.bin")
        data = open(p, "rb").read()
        open(p, "wb").write(data[:size])
        _expect_error(capsys, ["-s", bad, "-m", out], "cameras.bin")
    assert not os.path.exists(out)  # nothing half-written


def test_distillation_flags_in_a_one_model_run_warn_once(tiny_scene, tmp_path, capsys, monkeypatch):
    base = ["-s", tiny_scene, "-m", str(tmp_path / "out")]
    warnings = lambda: [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning")]  # noqa: E731
    train.read_flags(base + ["--cut_selection", "sample", "--lambda_distill", "0.2", "--iterations", "50"])
    assert warnings() == ["warning: --cut_selection, --lambda_distill only apply to the four-model distillation "
                          "(--num_models 4): this run trains one model without them"]
    train.read_flags(base + ["--student_relocate", "100"])
    assert warnings() == ["warning: --student_relocate only applies to the four-model distillation (--num_models 4): "
                          "this run trains one model without it"]
    for argv in (base, base + ["--num_models", "1"], base + ["--num_models", "4", "--student_relocate", "100"]):
        train.read_flags(argv)
        assert warnings() == [], argv
    monkeypatch.setenv("RANK", "1")  # (torchrun's other ranks: rank 0 says it once for the run)
    train.read_flags(base + ["--student_relocate", "100"])
    assert warnings() == []


def test_tensorboard_without_the_package_is_a_one_line_error(tiny_scene, tmp_path, capsys, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = str(tmp_path / "out")
    _expect_error(capsys, ["-s", tiny_scene, "-m", out, "--tensorboard"], "--tensorboard", "pip install tensorboard")
    assert not os.path.exists(out)


def test_a_model_pruned_to_nothing_stops_with_one_line(tiny_scene, tmp_path, capsys):
    # every Gaussian is below an opacity floor of 1: the first densification removes them all
    argv = ["-s", tiny_scene, "-m", str(tmp_path / "out"), "--iterations", "30", "--views_per_step", "1", "--quiet",
            "--densify_from_iter", "5", "--densification_interval", "10", "--min_opacity", "1.0"]
    _expect_error(capsys, argv, "model: no Gaussians left after iteration 10", "--min_opacity")


def test_unusable_backend_is_a_one_line_error_before_any_output(tiny_scene, tmp_path, capsys):
    out = str(tmp_path / "out")
    _expect_error(capsys, ["-s", tiny_scene, "-m", out, "--backend", "vulkan"], "--backend vulkan", "gsplat")
    _expect_error(capsys, ["-s", tiny_scene, "-m", out, "--backend", "gsplat", "--num_models", "4"],
                  "--backend gsplat", "per-Gaussian stats")
    if not torch.cuda.is_available():
        _expect_error(capsys, ["-s", tiny_scene, "-m", out, "--backend", "gsplat"], "--backend gsplat", "CUDA")
        _expect_error(capsys, ["-s", tiny_scene, "-m", out, "--backend", "cuda"], "--backend cuda", "CUDA")
    assert not os.path.exists(out)


@pytest.mark.parametrize("cli", ["train", "render", "metrics", "convert"])
def test_every_cli_prints_help(cli, capsys):
    import importlib
    mod = importlib.import_module(cli)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_profile_step_window_times_each_part_alone(monkeypatch):
    """scripts/profile_step.py: the window's three parts (syncs, plain wall time, profiler) follow each other and
    each is measured (the CUDA calls stubbed: the parts' order and bookkeeping, not the GPU)."""
    from scripts import profile_step  # noqa: PLC0415

    class Profiler:
        entered = exited = 0

        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            Profiler.entered += 1

        def __exit__(self, *exc):
            Profiler.exited += 1

    modes = []
    monkeypatch.setattr(profile_step.torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(profile_step.torch.cuda, "set_sync_debug_mode", modes.append)
    monkeypatch.setattr(profile_step, "profile", Profiler)
    win = profile_step.Window(100, 45)
    assert (win.sync_range, win.plain_range, win.prof_range) == (range(100, 115), range(115, 130), range(130, 145))
    for it in range(95, 150):
        win(it)
        if it == 120:
            assert modes == ["warn", "default"] and Profiler.entered == 0  # syncs done, the plain part running
    assert Profiler.entered == Profiler.exited == 1
    assert win.plain_wall > 0 and win.wall > 0


def test_profile_step_profiles_the_student_only_on_trained_teachers(tmp_path):
    """scripts/profile_step.py with --num_models 4: the student alone (--start 3 and a -m), else one line that says
    so (before anything needs a GPU or reads the scene)."""
    from scripts import profile_step  # noqa: PLC0415
    for extra in ([], ["--start", "2", "-m", str(tmp_path)]):
        with pytest.raises(UserError, match="--start 3 and the -m of a distillation"):
            profile_step.main(["-s", str(tmp_path / "none"), "--num_models", "4"] + extra)


def test_a_run_imports_nothing_heavy_once_it_trains(tiny_scene, tmp_path):
    """A run imports no module while it trains that costs seconds: a backward given its starting gradient brings in
    sympy and torch's symbolic shapes (~3 s, once a process, on an H200; thirtieth session), and the step's
    backward (utils/loss_utils.backward_weighted) gives none. A fresh process: this one has imported them already."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    heavy = ("sympy", "torch.fx.experimental.symbolic_shapes", "torch._dynamo")
    argv = ["-s", tiny_scene, "-m", str(tmp_path / "m"), "--iterations", "30", "--views_per_step", "1", "--quiet",
            "--test_iterations", "30"]
    code = (f"import sys, train\nbefore = {{m for m in {heavy!r} if m in sys.modules}}\ntrain.main({argv!r})\n"
            f"print('imported while training:', sorted(m for m in {heavy!r} if m in sys.modules and m not in before))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "imported while training: []", done.stdout[-2000:]
