"""view.py without a browser: 3DGS -> splat conversion (utils/splats.py), model discovery (utils/run_models.py),
the viewer's state (subsampling, side by side, swap) and its one-line errors."""
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from plyfile import PlyData

import view
from gaussian_renderer.torch_rasterizer import covariance_3d
from scene.gaussian_model import GaussianModel
from tests.cli_helpers import cli_error
from tests.viewer_helpers import make_distill_run, write_ball
from utils import splats
from utils.errors import UserError
from utils.run_models import discover_models, training_curves
from utils.sh_utils import C0

try:  # (requirements.txt installs viser; a machine without it, as the GPU machines without a registry, skips the
    # tests that start a server, and the rest of the viewer is tested there too)
    import viser.transforms as tf
except ImportError:
    tf = None
needs_viser = pytest.mark.skipif(tf is None, reason="the viser package is not installed")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------------------------
# conversion

def test_covariance_of_a_hand_computed_case():
    # scales 1, 2, 3 (log stored); 90 degrees about z (quaternion given with norm 2): x -> y, y -> -x
    log_s = np.log([[1.0, 2.0, 3.0]])
    q = np.array([[2 * math.cos(math.pi / 4), 0, 0, 2 * math.sin(math.pi / 4)]])
    assert np.allclose(splats.covariances(log_s, q)[0], np.diag([4.0, 1.0, 9.0]), atol=1e-12)
    # 90 degrees about x: y -> z, z -> -y
    q = np.array([[math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0]])
    assert np.allclose(splats.covariances(log_s, q)[0], np.diag([1.0, 9.0, 4.0]), atol=1e-12)
    # 45 degrees about z with scales (2, 1, 1): R diag(4, 1, 1) R^T = [[2.5, 1.5, 0], [1.5, 2.5, 0], [0, 0, 1]]
    q = np.array([[math.cos(math.pi / 8), 0, 0, math.sin(math.pi / 8)]])
    assert np.allclose(splats.covariances(np.log([[2.0, 1.0, 1.0]]), q)[0],
                       [[2.5, 1.5, 0], [1.5, 2.5, 0], [0, 0, 1]], atol=1e-12)
    # a zero quaternion is the identity rotation, as in the rasterizer
    assert np.allclose(splats.covariances(log_s, np.zeros((1, 4)))[0], np.diag([1.0, 4.0, 9.0]))


def test_covariance_matches_the_rasterizer():
    g = torch.Generator().manual_seed(0)
    log_s = torch.randn(64, 3, generator=g) - 2
    q = torch.randn(64, 4, generator=g) * 3
    ours = splats.covariances(log_s.numpy(), q.numpy())
    ref = covariance_3d(torch.exp(log_s.double()), q.double()).numpy()
    assert np.allclose(ours, ref, rtol=1e-9, atol=1e-15)
    assert np.allclose(ours, ours.transpose(0, 2, 1)) and (np.linalg.eigvalsh(ours) > 0).all()


def test_colour_and_opacity():
    dc = np.array([[(0.2 - 0.5) / C0, (1.3 - 0.5) / C0, (-0.4 - 0.5) / C0]])
    assert np.allclose(splats.dc_to_rgb(dc), [[0.2, 1.0, 0.0]])
    with np.errstate(all="raise"):  # no overflow warnings for extreme logits
        assert np.allclose(splats.sigmoid(np.array([0.0, 2.0, -1000.0, 1000.0])),
                           [0.5, 1 / (1 + math.exp(-2)), 0.0, 1.0])


def _known_model(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = GaussianModel(sh_degree=1)
    m._set(torch.randn(n, 3, generator=g), torch.randn(n, 1, 3, generator=g), torch.randn(n, 3, 3, generator=g),
           torch.randn(n, 1, generator=g), torch.randn(n, 3, generator=g) - 3, torch.randn(n, 4, generator=g))
    return m


def test_ply_round_trip_gives_the_models_activations(tmp_path):
    m = _known_model()
    path = str(tmp_path / "point_cloud.ply")
    m.save_ply(path)
    raw = splats.read_gaussians(path)
    assert splats.ply_vertex_count(path) == 6
    out = splats.to_splats(raw)
    assert np.allclose(out["centers"], m.get_xyz.detach().numpy(), atol=1e-6)
    assert np.allclose(out["rgbs"], np.clip(0.5 + C0 * m.params["f_dc"][:, 0].detach().numpy(), 0, 1), atol=1e-6)
    assert np.allclose(out["opacities"][:, 0], m.get_opacity[:, 0].detach().numpy(), atol=1e-6)
    S = np.eye(3)[None] * m.get_scaling.detach().numpy()[:, None, :]
    from utils.graphics_utils import quaternion_to_matrix
    R = quaternion_to_matrix(m.get_rotation.detach()).numpy()
    assert np.allclose(out["covariances"], R @ S @ S @ R.transpose(0, 2, 1), rtol=1e-4, atol=1e-9)
    for k, shape in dict(centers=(6, 3), covariances=(6, 3, 3), rgbs=(6, 3), opacities=(6, 1)).items():
        assert out[k].shape == shape and out[k].dtype == np.float32


def test_length_unit_keeps_small_gaussians_in_float16_range():
    raw = dict(xyz=np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32),
               f_dc=np.zeros((2, 3), np.float32), opacity=np.zeros(2, np.float32),
               scale=np.log(np.array([[1e-3, 2e-3, 1e-3], [3e-3, 1e-3, 1e-3]], np.float32)),
               rot=np.array([[1, 0, 0, 0], [0.9, 0.1, 0.3, 0]], np.float32))
    unit = splats.length_unit(raw["scale"])
    assert unit == pytest.approx(math.sqrt(2e-3 * 3e-3), rel=1e-5)  # median of the largest std (in log)
    plain, scaled = splats.to_splats(raw), splats.to_splats(raw, unit=unit)
    assert np.allclose(scaled["centers"] * unit, plain["centers"], rtol=1e-6)
    assert np.allclose(scaled["covariances"] * unit ** 2, plain["covariances"], rtol=1e-5, atol=1e-14)
    # in the viewer's float16 the unscaled variances (~1e-6) would be subnormal; the scaled ones are not
    assert np.abs(plain["covariances"]).max() < 6.1e-5
    f16 = scaled["covariances"].astype(np.float16).astype(np.float64)
    assert np.allclose(f16, scaled["covariances"], rtol=2e-3, atol=1e-3)
    # huge Gaussians are capped inside float16's range instead of overflowing
    raw["scale"][0] = 30.0
    big = splats.to_splats(raw, unit=unit)["covariances"]
    assert np.isfinite(big.astype(np.float16)).all()


def test_visibility_order_keeps_opaque_large_gaussians_first():
    raw = dict(opacity=np.array([-5.0, 3.0, 3.0, 0.0], np.float32),
               scale=np.log(np.array([[1, 1, 1], [0.1, 0.1, 0.1], [1, 1, 1], [1.2, 1.2, 1.2]], np.float32)))
    assert list(splats.visibility_order(raw)) == [2, 3, 1, 0]


def test_bad_ply_files_are_user_errors(tmp_path):
    m = _known_model()
    path = str(tmp_path / "p.ply")
    m.save_ply(path)
    ply = PlyData.read(path)
    ply["vertex"]["scale_1"][3] = np.nan
    ply["vertex"]["x"][4] = np.inf
    bad = str(tmp_path / "bad.ply")
    ply.write(bad)
    with pytest.raises(UserError, match=r"bad\.ply: 2 of 6 Gaussians have non-finite"):
        splats.read_gaussians(bad)
    (tmp_path / "text.ply").write_text("not a ply\n")
    with pytest.raises(UserError, match="not a PLY file"):
        splats.ply_vertex_count(str(tmp_path / "text.ply"))
    with pytest.raises(UserError, match="text.ply"):
        splats.read_gaussians(str(tmp_path / "text.ply"))


# ----------------------------------------------------------------------------------------------------------------
# discovery

def test_discovers_a_distillation_run(tmp_path):
    run = make_distill_run(tmp_path / "run", counts=(8, 9, 10, 3))
    os.makedirs(tmp_path / "run" / "point_cloud_4")  # a model folder without a saved PLY is left out
    notes = []
    kind, models = discover_models(run, notes=notes)
    assert notes == ["left out point_cloud_4 (saved iterations: none)"]
    assert kind == "distill"
    assert [m.name for m in models] == ["G_perb", "G_drop", "G_std", "student"]
    assert [m.gaussians for m in models] == [8, 9, 10, 3] and [m.iteration for m in models] == [20] * 4
    assert [m.psnr for m in models] == [25.0, 26.0, 27.0, 28.0] and "distill.json" in models[0].psnr_note
    assert all(m.ply_bytes == os.path.getsize(m.ply) for m in models)
    # an earlier iteration: distill.json describes the final models, so the PSNR comes from the training log
    kind, models = discover_models(run, iteration=10)
    assert models[3].iteration == 10 and models[3].psnr == pytest.approx(24.0)
    assert "training_log.json" in models[3].psnr_note
    kind, curves = training_curves(run)
    assert [c["final_psnr"] for c in curves] == [25.0, 26.0, 27.0, 28.0] and curves[0]["counts"][1] == [10, 18]


def test_discovers_a_vanilla_run_and_reads_results_json(tmp_path):
    run = tmp_path / "van"
    write_ball(str(run / "point_cloud" / "iteration_7" / "point_cloud.ply"), 5)
    kind, models = discover_models(str(run))
    assert kind == "vanilla" and [m.name for m in models] == ["model"] and models[0].psnr is None
    (run / "results.json").write_text(json.dumps({"ours_7": {"PSNR": 31.5, "SSIM": 0.9, "LPIPS": None}}))
    assert discover_models(str(run))[1][0].psnr == 31.5


def test_discovery_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        discover_models(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no trained model"):
        discover_models(str(tmp_path / "empty"))
    os.makedirs(tmp_path / "noply" / "point_cloud_0" / "iteration_5")
    with pytest.raises(UserError, match="no saved iteration_<N>/point_cloud.ply"):
        discover_models(str(tmp_path / "noply"))
    run = make_distill_run(tmp_path / "run")
    with pytest.raises(UserError, match="iteration_99"):
        discover_models(run, iteration=99)


# ----------------------------------------------------------------------------------------------------------------
# view.py

def test_cli_errors_are_one_line(tmp_path, capsys):
    assert "does not exist" in cli_error(view.main, ["-m", str(tmp_path / "missing")], capsys)
    os.makedirs(tmp_path / "noply" / "point_cloud" / "iteration_3")
    assert "point_cloud.ply" in cli_error(view.main, ["-m", str(tmp_path / "noply")], capsys)
    run = make_distill_run(tmp_path / "run")
    bad = os.path.join(run, "point_cloud_2", "iteration_20", "point_cloud.ply")
    ply = PlyData.read(bad)
    ply["vertex"]["opacity"][0] = np.nan
    ply.write(bad + ".tmp")  # not over the memory-mapped file being read
    os.replace(bad + ".tmp", bad)
    err = cli_error(view.main, ["-m", run], capsys)
    assert "point_cloud_2" in err and "non-finite opacity" in err
    good = make_distill_run(tmp_path / "good")
    assert "--show G_xyz" in cli_error(view.main, ["-m", good, "--show", "G_xyz"], capsys)
    assert "--max_splats" in cli_error(view.main, ["-m", good, "--max_splats", "0"], capsys)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        err = cli_error(view.main, ["-m", good, "--port", str(port)], capsys)
    assert f"port {port}" in err and "in use" in err


@needs_viser
def test_viewer_state_subsampling_side_by_side_and_swap(tmp_path, capsys):
    run = make_distill_run(tmp_path / "run", counts=(30, 30, 40, 20), cfg=dict(source_path=str(tmp_path / "gone")))
    server, v, url = view.start(["-m", run, "--port", "0", "--max_splats", "30"])
    try:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert "not reachable" in capsys.readouterr().out  # the scene is gone: said, and the models still load
        assert v.shown() == ["student"] and set(v.nodes) == {"student"}
        assert v.nodes["student"][1] == 20 and not v.gui_note.visible  # 20 <= 30: all of it
        v.gui_b.value = "G_std"  # side by side: 15 each, G_std subsampled (40 -> 15) and said so
        assert set(v.nodes) == {"student", "G_std"}
        assert v.nodes["student"][1] == 15 and v.nodes["G_std"][1] == 15
        assert v.gui_note.visible and "G_std: showing 15 of 40" in v.gui_note.content
        off = np.array(v.nodes["G_std"][2])
        assert np.linalg.norm(off) > 0 and v.nodes["student"][2] == (0.0, 0.0, 0.0)
        v.swap()
        assert (v.gui_a.value, v.gui_b.value) == ("G_std", "student") and v.nodes["student"][2] == tuple(off)
        v.gui_b.value = view.NONE
        assert set(v.nodes) == {"G_std"} and v.nodes["G_std"][1] == 30
        assert "G_std: showing 30 of 40" in v.gui_note.content
        assert "| **G_std** ◀ | 40 |" in v.gui_stats.content and "28.00" in v.gui_stats.content
    finally:
        server.stop()


@needs_viser
def test_cameras_from_the_scene(tmp_path):
    from scripts.make_synthetic_scene import make_synthetic_scene
    scene = make_synthetic_scene(str(tmp_path / "scene"), num_views=8, width=32, height=24, num_points=50, seed=0)
    train, test, white, note = view.load_cameras(str(tmp_path), source_override=scene)
    assert len(train) == 8 and test == [] and not white and "8 training" in note
    run = make_distill_run(tmp_path / "run", cfg=dict(source_path=scene, eval=True, white_background=True))
    train, test, white, _ = view.load_cameras(run)
    assert (len(train), len(test)) == (7, 1) and white
    R, c = view.camera_pose(train[0])
    assert np.allclose(R.T @ R, np.eye(3)) and np.allclose(c, train[0].camera_center.numpy(), atol=1e-5)
    up = view.mean_up(train)  # the synthetic scene's cameras are upright in +z
    assert up @ np.array([0, 0, 1.0]) > 0.9

    server, v, _ = view.start(["-m", run, "--port", "0"])
    try:
        assert v.camera_labels == [f"train {i}: view_{i + 1:03d}" for i in range(7)] + ["test 0: view_000"]
        ic = server.initial_camera  # starts at the first training camera, looking along its axis
        assert np.allclose(ic.position, c) and np.allclose(ic.up, -R[:, 1]) and ic.fov == pytest.approx(train[0].FoVy)
        look = (ic.look_at - c) / np.linalg.norm(ic.look_at - c)
        assert np.allclose(look, R[:, 2], atol=1e-6)
        client = types.SimpleNamespace(camera=types.SimpleNamespace(), atomic=contextlib.nullcontext)
        v.jump(client, "test 0: view_000")
        Rt, ct = view.camera_pose(test[0])
        assert np.allclose(client.camera.position, ct) and client.camera.fov == pytest.approx(test[0].FoVy)
        assert np.allclose(tf.SO3(client.camera.wxyz).as_matrix(), Rt, atol=1e-6)
        assert np.allclose((client.camera.look_at - ct) / np.linalg.norm(client.camera.look_at - ct), Rt[:, 2])
        v.show_frustums(True)
        assert len(v.frustums) == 8 and all(h.visible for h in v.frustums)
        v.show_frustums(False)
        assert not any(h.visible for h in v.frustums)
    finally:
        server.stop()


def test_without_viser_it_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    """The models load and the port is checked before the import: without viser, one line names the package."""
    monkeypatch.setitem(sys.modules, "viser", None)  # (import viser then raises ImportError)
    err = cli_error(view.main, ["-m", make_distill_run(tmp_path / "run"), "--port", "0"], capsys)
    assert "view.py needs the viser package: pip install viser" in err


def test_help_and_a_subprocess_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        view.main(["--help"])
    assert e.value.code == 0 and "--max_splats" in capsys.readouterr().out
    res = subprocess.run([sys.executable, os.path.join(REPO, "view.py"), "-m", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "nope" in res.stderr
