"""utils/report.py (report.png, results.md), train.py writing the report, and render.py --compare."""
import json
import os
import sys
import types

import cv2
import numpy as np
import pytest

import metrics
import render
import train
from scene.gaussian_model import GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.viewer_helpers import make_distill_run
from utils import compare, report
from utils.errors import run_cli


def _read_rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[:, :, ::-1]


def _has_colour(img, hex_colour, tol=30):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(img.astype(int) - rgb).max(axis=2) < tol).sum()


def test_report_of_a_distillation_run(tmp_path, monkeypatch):
    run = make_distill_run(tmp_path / "run", counts=(80, 90, 100, 15))
    logged = []

    class FakeWriter:  # TensorBoard may not be installed: check what would be logged
        def __init__(self, logdir):
            logged.append(("dir", logdir))

        def add_image(self, tag, img, dataformats):
            logged.append((tag, img.shape, dataformats))

        def close(self):
            logged.append(("closed",))

    tb = types.ModuleType("torch.utils.tensorboard")
    tb.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", tb)
    path = report.write_report(run, tensorboard=True)
    assert path == os.path.join(run, "report.png")
    img = _read_rgb(path)
    assert img.shape == (440, 1500, 3)
    for name in ("G_perb", "G_drop", "G_std", "student"):  # each model's line / point in its colour
        assert _has_colour(img, report.COLOURS[name]) > 50, name
    assert logged[0] == ("dir", run) and logged[1] == ("report", (440, 1500, 3), "HWC") and logged[-1] == ("closed",)
    fig, curves = report.draw_report(run)
    assert [c["final_gaussians"] for c in curves] == [80, 90, 100, 15]
    assert [c["final_psnr"] for c in curves] == [25.0, 26.0, 27.0, 28.0]


def test_report_failure_only_warns(tmp_path, capsys):
    assert report.report_at_end(str(tmp_path / "missing")) is None
    err = capsys.readouterr().err
    assert err.startswith("warning: could not write report.png") and err.count("\n") == 1


def test_train_writes_report_and_gaussian_counts(tmp_path):
    scene = make_synthetic_scene(str(tmp_path / "scene"), num_views=8, width=32, height=24, num_points=200, seed=1)
    out = str(tmp_path / "m")
    train.main(["-s", scene, "-m", out, "--eval", "--iterations", "30", "--views_per_step", "1", "--test_iterations",
                "10", "20", "30", "--densify_from_iter", "5", "--densification_interval", "10", "--quiet"])
    with open(os.path.join(out, "point_cloud", "training_log.json")) as f:
        log = json.load(f)
    assert [h["iteration"] for h in log["history"]] == [10, 20, 30]
    counts = log["gaussian_counts"]
    assert counts[0] == [1, 200] and len(counts) == 30 and counts[-1][0] == 30  # every iteration in a short run
    assert len({c for _, c in counts}) > 1  # densification changed the count
    assert _read_rgb(os.path.join(out, "report.png")).shape == (440, 1500, 3)


def test_results_markdown(tmp_path):
    run = make_distill_run(tmp_path / "run")
    results = {"ours_20": dict(PSNR=27.123, SSIM=0.91234, LPIPS=None)}
    per_view = {"ours_20": dict(PSNR={"00000.png": 27.0, "00001.png": 27.2})}
    md = report.results_markdown(run, results, per_view)
    assert "| ours_20 | 2 | 27.12 | 0.9123 | – |" in md
    assert "distill.json" in md and "| student | 4 | 0.01 | 28.00 | 0.9000 | – | test |" in md
    assert "| G_perb | 8 |" in md


def test_metrics_writes_results_md(tmp_path):
    d = tmp_path / "m" / "test" / "ours_5"
    rng = np.random.default_rng(0)
    for sub in ("renders", "gt"):
        (d / sub).mkdir(parents=True)
    for i in range(2):
        gt = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        cv2.imwrite(str(d / "gt" / f"{i:05d}.png"), gt)
        cv2.imwrite(str(d / "renders" / f"{i:05d}.png"), np.clip(gt.astype(int) + 10, 0, 255).astype(np.uint8))
    metrics.main(["-m", str(tmp_path / "m"), "--skip_lpips", "--device", "cpu"])
    md = (tmp_path / "m" / "results.md").read_text()
    with open(tmp_path / "m" / "results.json") as f:
        psnr = json.load(f)["ours_5"]["PSNR"]
    assert f"| ours_5 | 2 | {psnr:.2f} |" in md and "The run's models" not in md  # no training run here


# ----------------------------------------------------------------------------------------------------------------
# render.py --compare

def test_compare_image_layout():
    h, w = 30, 40
    student = np.full((h, w, 3), 100, np.uint8)
    gt = student.copy()
    gt[:, : w // 2] = 140  # the student is wrong by 40 on the left half
    img, ps, pt = compare.compare_image(student, gt.copy(), gt)
    bar = max(compare.HEADER, h // 12)
    assert img.shape == (h + bar, 4 * w + 6, 3)
    assert pt > 199 and ps == pytest.approx(10 * np.log10(255 ** 2 / (40 ** 2 / 2)), abs=1e-6)
    err = img[bar:, 3 * (w + 2):]
    assert err[:, : w // 2].mean() > err[:, w // 2:].mean() + 50  # bright where the student is wrong
    zero_colour = cv2.applyColorMap(np.zeros((1, 1), np.uint8), cv2.COLORMAP_INFERNO)[0, 0, ::-1]
    assert (err[:, w // 2 + 1:] == zero_colour).all()
    assert (img[:bar, :w] < 128).any() and (img[:bar, :w] == 255).mean() > 0.5  # a label bar with dark text
    assert np.array_equal(img[bar:, 2 * (w + 2): 2 * (w + 2) + w], gt)  # the ground-truth panel


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    """A distillation layout of untrained models on a tiny scene: G_std from the SfM points, the student half."""
    root = tmp_path_factory.mktemp("compare")
    scene = make_synthetic_scene(str(root / "scene"), num_views=8, width=32, height=24, num_points=300, seed=3)
    run = root / "run"
    from scene.dataset_readers import read_scene
    info = read_scene(scene, eval_mode=True)
    for i in range(4):
        m = GaussianModel(0)
        keep = slice(None) if i < 3 else slice(0, None, 2)
        m.create_from_points(info.points[keep], info.colors[keep])
        m.save_ply(str(run / f"point_cloud_{i}" / "iteration_10" / "point_cloud.ply"))
    (run / "cfg_args.json").write_text(json.dumps(dict(source_path=scene, eval=True, sh_degree=0)))
    return scene, str(run)


def test_render_compare_writes_one_image_per_test_view(compare_run):
    scene, run = compare_run
    out = render.main(["-m", run, "--skip_train", "--skip_test", "--compare", "--quiet"])
    folder = os.path.join(run, "test", "ours_10", "compare")
    assert out["outputs"] == {"compare": folder} and sorted(os.listdir(folder)) == ["00000.png"]  # 8 views, 1 held out
    img = _read_rgb(os.path.join(folder, "00000.png"))
    bar = max(compare.HEADER, 24 // 12)
    assert img.shape == (24 + bar, 4 * 32 + 6, 3)
    src = sorted(os.listdir(os.path.join(scene, "images")))[0]  # the held-out view
    assert np.array_equal(img[bar:, 2 * 34: 2 * 34 + 32], _read_rgb(os.path.join(scene, "images", src)))
    assert img[bar:, :32].std() > 5  # the student's render is there


def test_compare_needs_a_distillation_run_with_test_views(compare_run, tmp_path, capsys):
    scene, run = compare_run
    van = tmp_path / "van"
    m = GaussianModel(0)
    m.create_from_points(np.zeros((4, 3)) + np.arange(4)[:, None], np.full((4, 3), 0.5))
    m.save_ply(str(van / "point_cloud" / "iteration_3" / "point_cloud.ply"))
    (van / "cfg_args.json").write_text(json.dumps(dict(source_path=scene, eval=True, sh_degree=0)))
    with pytest.raises(SystemExit) as exc:
        run_cli(render.main, ["-m", str(van), "--compare", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert err.startswith("error: --compare needs a distillation run") and "point_cloud" in err
    assert not os.path.exists(van / "train") and not os.path.exists(van / "test")  # checked before rendering
    no_eval = tmp_path / "no_eval"
    no_eval.mkdir()
    for i in (2, 3):
        os.symlink(os.path.join(run, f"point_cloud_{i}"), no_eval / f"point_cloud_{i}")
    (no_eval / "cfg_args.json").write_text(json.dumps(dict(source_path=scene, sh_degree=0)))
    with pytest.raises(SystemExit):
        run_cli(render.main, ["-m", str(no_eval), "--compare", "--quiet"])
    assert "--compare needs test views" in capsys.readouterr().err
    assert not os.path.exists(no_eval / "train")
