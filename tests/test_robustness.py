"""Issue 14: per-model seeds and --start K, the divergence guard, temporary files and file modes, earlier runs in
the model folder (--overwrite), -d relative to the scene, and images of another size than their camera."""
import json
import os
import shutil
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import render
import train
from distill.roles import PerturbRole
from scene.dataset_readers import read_scene, resolve_depths
from scene.gaussian_model import GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.test_distill import dp_defaults
from tests.test_training import opt_defaults, random_model
from training import loop
from utils import make_depth_scale as mds
from utils.errors import NonFiniteError, UserError, run_cli
from utils.system_utils import atomic_path, sweep_stale_temp_files, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# (--start K and resumed runs are compared byte for byte, which the GPU's atomic sums do not give: on the CPU on any
# machine)
CPU_ONLY = True


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_synthetic_scene(str(tmp_path_factory.mktemp("robust") / "scene"), num_views=8, width=32, height=24,
                                num_points=200, seed=7)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, fs in os.walk(folder) for f in fs)


# ----------------------------------------------------------------------------------------------------------------
# A. seeds per model, --start K

# 30 iterations a teacher; densification every 20 views (no warning); the student (1.4x the schedule, the default)
# trains 42 and prunes at 21 and 22
DISTILL = ["--num_models", "4", "--steps_scale", "0.001", "--views_per_step", "1", "--densification_interval", "20000",
           "--opacity_reset_interval", "1000000", "--firstPrune", "--test_iterations", "30000", "--eval", "--quiet"]


@pytest.fixture(scope="module")
def distilled(scene, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("distill") / "run")
    summary = train.main(["-s", scene, "-m", out, *DISTILL])
    return out, summary


def _ply_bytes(folder, i):
    it = 42 if i == 3 else 30
    with open(os.path.join(folder, f"point_cloud_{i}", f"iteration_{it}", "point_cloud.ply"), "rb") as f:
        return f.read()


def test_start_k_reproduces_the_uninterrupted_runs_models(scene, distilled, tmp_path):
    out, first = distilled
    again = str(tmp_path / "again")
    shutil.copytree(out, again)
    # a leftover of another run in a model that --start 1 trains again: deleted, not rendered later
    os.makedirs(os.path.join(again, "point_cloud_3", "iteration_999"))
    shutil.copy(os.path.join(out, "point_cloud_3", "iteration_42", "point_cloud.ply"),
                os.path.join(again, "point_cloud_3", "iteration_999"))
    second = train.main(["-s", scene, "-m", again, *DISTILL, "--start", "1"])
    for i in range(4):
        assert _ply_bytes(again, i) == _ply_bytes(out, i), f"model {i} differs"
    assert not os.path.exists(os.path.join(again, "point_cloud_3", "iteration_999"))
    # distill.json keeps the reused model's entry and has the new ones
    on_disk = json.load(open(os.path.join(again, "distill.json")))
    assert on_disk["models"]["G_perb"] == json.load(open(os.path.join(out, "distill.json")))["models"]["G_perb"]
    assert set(on_disk["models"]) == {"G_perb", "G_drop", "G_std", "student"}
    assert on_disk["models"]["student"]["gaussians"] == first["models"]["student"]["gaussians"]
    assert second["total_seconds"] is None and on_disk["iterations"] == 30


def test_distill_json_keeps_finished_models_when_a_later_one_fails(scene, distilled, tmp_path, monkeypatch):
    out, _ = distilled
    again = str(tmp_path / "again")
    shutil.copytree(out, again)
    os.remove(os.path.join(again, "distill.json"))  # as after a run killed before its end, in the old code

    def broken_student(*a, **k):
        raise UserError("the student failed")
    import distill.pipeline as pipeline
    monkeypatch.setattr(pipeline, "make_student_role", broken_student)
    with pytest.raises(UserError, match="the student failed"):
        train.main(["-s", scene, "-m", again, *DISTILL, "--start", "2"])
    models = json.load(open(os.path.join(again, "distill.json")))["models"]
    assert set(models) == {"G_std"}  # written right after G_std, before the student began


def test_create_from_points_copies_the_points():
    # the pipeline builds every model from scene.points: training must not move them in place (on the CPU
    # torch.as_tensor shared the float32 array, so G_drop started where G_perb's first steps left the points)
    pts = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    before = pts.copy()
    m = GaussianModel(0)
    m.create_from_points(pts, np.full((10, 3), 0.5, np.float32))
    with torch.no_grad():
        m.params["xyz"].add_(1.0)
    assert np.array_equal(pts, before)


def test_perturb_event_before_any_statistics():
    # tiny schedules (--steps_scale 0.001) put the first noise event right after --perturb_start: no step has
    # gathered candidate statistics yet; the event perturbs nothing instead of failing
    m = random_model(20)
    role = PerturbRole(dp_defaults(perturb_start=15, perturb_end=25, perturb_interval=1), opt_defaults(), 1.0)
    before = m.params["xyz"].detach().clone()
    role.before_step(16, m, role.initialize_state(20, "cpu"))
    assert torch.equal(m.params["xyz"].detach(), before) and role.log == [(16, 0)]


def test_seed_all_gives_each_model_its_own_stream():
    from utils.general_utils import seed_all
    seed_all(0, 1)
    a = torch.rand(3)
    seed_all(0, 2)
    b = torch.rand(3)
    seed_all(0, 1)
    assert torch.equal(torch.rand(3), a) and not torch.equal(a, b)
    assert seed_all(-1, 0) != seed_all(1, 0)


# ----------------------------------------------------------------------------------------------------------------
# B. the divergence guard

def test_save_ply_refuses_non_finite_values_and_writes_nothing(tmp_path):
    m = random_model(10)
    with torch.no_grad():
        m.params["rotation"][4, 0] = float("nan")
    path = tmp_path / "pc" / "iteration_1" / "point_cloud.ply"
    with pytest.raises(NonFiniteError, match="rotation"):
        m.save_ply(str(path))
    assert not os.path.exists(tmp_path / "pc")
    assert m.nonfinite_summary() == "1 of 10 Gaussians (rotation)"


def test_guard_reads_the_device_only_at_check_points(scene, tmp_path, monkeypatch):
    calls = []
    real = loop.DivergenceGuard.check

    def counting(self, it, *a, **k):
        calls.append(it)
        return real(self, it, *a, **k)
    monkeypatch.setattr(loop.DivergenceGuard, "check", counting)
    train.main(["-s", scene, "-m", str(tmp_path / "q"), "--iterations", "45", "--views_per_step", "1",
                "--densification_interval", "20", "--test_iterations", "45", "--quiet"])
    assert calls == [20, 40, 45]  # every densification interval in a quiet run, and the end
    calls.clear()
    train.main(["-s", scene, "-m", str(tmp_path / "v"), "--iterations", "25", "--views_per_step", "1",
                "--test_iterations", "25", "--checkpoint_iterations", "5"])
    assert calls == [5, 10, 20, 25]  # with the progress bar: every 10 steps, and before the checkpoint


def test_diverging_distillation_names_the_model(scene, tmp_path, capsys):
    out = tmp_path / "d"
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, ["-s", scene, "-m", str(out), *DISTILL, "--scaling_lr", "100"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: G_perb: ") and "\n" not in err and "by iteration" in err, err
    assert not [f for f in _files(out) if f.endswith((".ply", ".tmp"))]
    assert not os.path.exists(out / "distill.json")  # no model finished


# ----------------------------------------------------------------------------------------------------------------
# C. temporary files and file modes

def test_atomic_writes_use_the_umask_and_leave_no_temp_files(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(str(tmp_path / "a.json"), {"x": 1})
        with pytest.raises(RuntimeError):
            with atomic_path(str(tmp_path / "b.bin")) as tmp:
                with open(tmp, "wb") as f:
                    f.write(b"half")
                raise RuntimeError("killed")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o640
    assert os.listdir(tmp_path) == ["a.json"]  # the failed write left neither b.bin nor its temporary file


def test_sweep_removes_only_stale_temp_files_and_empty_iteration_folders(tmp_path):
    pc = tmp_path / "point_cloud"
    os.makedirs(pc / "iteration_7")  # empty: a run killed while saving
    os.makedirs(pc / "iteration_9")
    (pc / "iteration_9" / ".point_cloud.ply.999999999-abc123.tmp").write_bytes(b"x")  # its process is gone
    (pc / "iteration_3").mkdir()
    (pc / "iteration_3" / "point_cloud.ply").write_bytes(b"ply")
    (tmp_path / ".cfg_args.json.k2j_x9a1.tmp").write_text("{")  # the older mkstemp naming
    live = tmp_path / f".distill.json.{os.getpid()}-abcdef.tmp"  # a writer that is still running
    live.write_text("{")
    (tmp_path / "notes.tmp").write_text("mine")
    (tmp_path / "test" / "ours_3" / "renders").mkdir(parents=True)
    (tmp_path / "test" / "ours_3" / "renders" / ".00000.png.999999999-0a0b0c.tmp").write_bytes(b"x")
    removed = sweep_stale_temp_files(str(tmp_path))
    assert len(removed) == 5
    assert _files(tmp_path) == sorted([os.path.relpath(live, tmp_path), "notes.tmp",
                                       os.path.join("point_cloud", "iteration_3", "point_cloud.ply")])
    assert sorted(os.listdir(pc)) == ["iteration_3"]


def test_outputs_have_the_umask_modes_and_a_resumed_run_sweeps_the_folder(scene, tmp_path):
    out = tmp_path / "m"
    old = os.umask(0o022)
    try:
        train.main(["-s", scene, "-m", str(out), "--iterations", "4", "--views_per_step", "1",
                    "--checkpoint_iterations", "2", "--test_iterations", "4", "--quiet"])
        for f in _files(out):
            assert stat.S_IMODE(os.stat(out / f).st_mode) == 0o644, f
        (out / "point_cloud" / "iteration_5").mkdir()
        (out / "point_cloud" / ".training_log.json.999999999-abcdef.tmp").write_text("{")
        train.main(["-s", scene, "-m", str(out), "--iterations", "6", "--views_per_step", "1",
                    "--start_checkpoint", str(out / "chkpnt2.pth"), "--test_iterations", "6", "--quiet"])
    finally:
        os.umask(old)
    assert sorted(os.listdir(out / "point_cloud")) == ["iteration_4", "iteration_6", "training_log.json"]


# ----------------------------------------------------------------------------------------------------------------
# D. an earlier run in the model folder

def test_overwrite_deletes_the_earlier_run_only(scene, tmp_path):
    out = tmp_path / "m"
    train.main(["-s", scene, "-m", str(out), "--iterations", "6", "--views_per_step", "1", "--eval",
                "--checkpoint_iterations", "3", "--test_iterations", "6", "--quiet"])
    render.main(["-m", str(out), "--quiet"])
    (out / "notes.txt").write_text("keep me")
    (out / "test" / "mine").mkdir()  # not a render folder: test/ is kept
    train.main(["-s", scene, "-m", str(out), "--iterations", "4", "--views_per_step", "1", "--eval",
                "--test_iterations", "4", "--quiet", "--overwrite"])
    assert sorted(os.listdir(out)) == ["cfg_args.json", "notes.txt", "point_cloud", "report.png", "test"]
    assert sorted(os.listdir(out / "point_cloud")) == ["iteration_4", "training_log.json"]
    assert json.load(open(out / "cfg_args.json"))["iterations"] == 4
    assert not os.path.exists(out / "train")


def test_render_prefers_the_runs_own_iteration_over_a_newer_leftover(scene, tmp_path, capsys):
    out = tmp_path / "m"
    train.main(["-s", scene, "-m", str(out), "--iterations", "4", "--views_per_step", "1", "--eval",
                "--test_iterations", "4", "--quiet"])
    pc = out / "point_cloud"
    shutil.copytree(pc / "iteration_4", pc / "iteration_9")  # as a longer, earlier run would leave it
    res = render.main(["-m", str(out), "--skip_train", "--quiet"])
    assert res["iteration"] == 4
    assert "also holds iteration_9" in capsys.readouterr().out
    assert render.main(["-m", str(out), "--skip_train", "--quiet", "--iteration", "9"])["iteration"] == 9
    shutil.rmtree(pc / "iteration_4")  # the run's own model is gone: the latest, said out loud
    assert render.main(["-m", str(out), "--skip_train", "--quiet"])["iteration"] == 9
    assert "ends at iteration 4, which it does not hold" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------------
# E. -d relative to the scene, then to the working directory

def test_depths_resolve_in_the_scene_first_then_the_working_directory(scene, tmp_path, monkeypatch):
    s = tmp_path / "s"
    shutil.copytree(scene, s)
    os.makedirs(s / "mono")
    for name in os.listdir(s / "images"):
        mds.write_inverse_depth(str(s / "mono" / name), np.full((24, 32), 0.5))
    mds.make_depth_scale(str(s), str(s / "mono"), quiet=True)
    work = tmp_path / "work"
    os.makedirs(work / "mono")
    monkeypatch.chdir(work)
    assert resolve_depths(str(s), "mono") == os.path.join(str(s), "mono")  # both exist: the scene's
    os.makedirs(work / "only_here")
    assert resolve_depths(str(s), "only_here") == "only_here"
    assert resolve_depths(str(s), str(s / "mono")) == str(s / "mono")  # absolute
    with pytest.raises(UserError, match="neither"):
        resolve_depths(str(s), "nowhere")
    info = read_scene(str(s), depths="mono")
    assert all(c.depth is not None for c in info.train_cameras)


# ----------------------------------------------------------------------------------------------------------------
# images of another size than their camera (judgment: a scaled copy is read at its own size, with a note; another
# aspect ratio is refused, see tests/test_bad_input.py)

def test_scaled_copies_of_the_images_train_at_their_own_size(scene, tmp_path, capsys):
    s = tmp_path / "s"
    shutil.copytree(scene, s)
    for name in os.listdir(s / "images"):
        img = cv2.imread(str(s / "images" / name))
        cv2.imwrite(str(s / "images" / name), cv2.resize(img, (16, 12), interpolation=cv2.INTER_AREA))
    info = read_scene(str(s))
    assert {(c.image_width, c.image_height) for c in info.train_cameras} == {(16, 12)}
    assert info.train_cameras[0].image.shape == (3, 12, 16)
    out = capsys.readouterr().out
    assert out.count("note: images such as") == 1 and "scaled copies" in out
    full = read_scene(scene)
    assert info.train_cameras[0].FoVx == pytest.approx(full.train_cameras[0].FoVx)


# ----------------------------------------------------------------------------------------------------------------
# the real command lines (subprocesses): one line on stderr, exit status 2, no traceback

@pytest.mark.parametrize("cli", ["train", "render"])
def test_cli_subprocess_nan_inputs(cli, scene, tmp_path):
    if cli == "train":
        argv = ["-s", scene, "-m", str(tmp_path / "o"), "--iterations", "12", "--views_per_step", "1", "--quiet",
                "--lambda_dssim", "1e300"]
    else:
        out = tmp_path / "m"
        train.main(["-s", scene, "-m", str(out), "--iterations", "2", "--views_per_step", "1", "--quiet"])
        ply = out / "point_cloud" / "iteration_2" / "point_cloud.ply"
        m = GaussianModel(3).load_ply(str(ply))
        from plyfile import PlyData
        data = PlyData.read(str(ply), mmap=False)
        data["vertex"]["x"][0] = np.nan
        data.write(str(ply))
        assert m.num_points > 0
        argv = ["-m", str(out)]
    res = subprocess.run([sys.executable, os.path.join(REPO, f"{cli}.py"), *argv], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert ("NaN or infinite" in lines[0]) and (("point_cloud.ply" in lines[0]) if cli == "render" else
                                                 "iteration 12" in lines[0])
