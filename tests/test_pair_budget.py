"""--capacity_mode and the pair budget it shares with --cuda_graphs (training/pair_budget.py): the capacity's
sizing rules on the CPU, the flag's refusal without the CUDA rasterizer, and on a GPU runs that render in
capacity mode against the same runs without, and an overflow that grows the buffers (GPU parts skipped without
CUDA)."""
import os

import pytest
import torch

import train
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.cli_helpers import run_cli
from arguments import PipelineParams
from training.pair_budget import HEADROOM, MIN_CAPACITY, PairBudget, capacity_mode_applies, pairs_that_fit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _read(budget, peak_pairs, points):
    """As if a poll had read these counts, rendered with a model of ``points`` Gaussians."""
    budget.peak_pairs, budget.peak_points = peak_pairs, points


def test_the_capacity_follows_the_pairs_and_the_models_growth():
    b = PairBudget("cpu", capacity=100_000)
    b.fit(1000)  # nothing read yet: unchanged
    assert b.capacity == 100_000
    _read(b, 60_000, 1000)
    b.fit(1000)
    assert b.capacity == int(HEADROOM * 60_000)  # above the capacity: grows to the headroom
    b.fit(3000)  # a densification tripled the model since those pairs: scaled with it
    assert b.capacity == int(HEADROOM * 60_000 * 3)
    _read(b, 50_000, 3000)
    b.fit(3000)  # needed 100k of 360k: within the hysteresis, kept
    assert b.capacity == int(HEADROOM * 60_000 * 3)
    _read(b, 10_000, 500)
    b.fit(500)  # after a prune far below: shrinks
    assert b.capacity == int(HEADROOM * 10_000)
    _read(b, 10, 500)
    b.fit(500)
    assert b.capacity == MIN_CAPACITY


def test_a_view_is_rendered_again_with_room_until_its_pairs_fit():
    meta, tried = torch.zeros(3, dtype=torch.int32), []

    def render_at(capacity):  # (a view of 5,000 pairs: the rasterizer counts them all, keeps what fits)
        tried.append(capacity)
        meta.copy_(torch.tensor([700, 5000, int(capacity < 5000)]))

    assert pairs_that_fit(render_at, 1024, meta) == (5000, 10_000) and tried == [1024, 10_000]
    tried.clear()
    assert pairs_that_fit(render_at, 6000, meta) == (5000, 6000) and tried == [6000]


def test_auto_is_on_only_where_the_cuda_rasterizer_renders(monkeypatch):
    import gaussian_renderer  # noqa: PLC0415
    monkeypatch.setattr(gaussian_renderer, "cuda_extension", lambda: object())  # as if the extension were built
    auto = PipelineParams.defaults()
    assert auto.capacity_mode == "auto"
    assert capacity_mode_applies(auto, "cuda") and not capacity_mode_applies(auto, "cpu")
    for backend in ("torch", "gsplat"):
        assert not capacity_mode_applies(PipelineParams.defaults(backend=backend), "cuda")
    assert not capacity_mode_applies(PipelineParams.defaults(capacity_mode="off"), "cuda")
    monkeypatch.setattr(gaussian_renderer, "cuda_extension", lambda: False)  # a GPU without the built extension
    assert not capacity_mode_applies(auto, "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's refusal")
def test_the_flag_needs_the_cuda_rasterizer(tmp_path, capsys):
    scene = make_synthetic_scene(str(tmp_path / "s"), num_views=4, width=16, height=12, num_points=20, seed=0)
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, ["-s", scene, "-m", str(tmp_path / "o"), "--iterations", "5", "--quiet",
                             "--capacity_mode", "on"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --capacity_mode on needs a CUDA GPU") and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "o")


def _cuda_rasterizer():
    from gaussian_renderer import cuda_extension  # noqa: PLC0415
    if not cuda_extension():
        pytest.skip("the diff_gaussian_rasterization extension is not built")


@needs_cuda
@pytest.mark.parametrize("views", ["1", "3"])
def test_a_capacity_mode_run_trains_like_a_standard_one(tmp_path, views):
    _cuda_rasterizer()
    scene = make_synthetic_scene(str(tmp_path / "s"), num_views=12, width=96, height=64, num_points=800, seed=1)
    flags = ["-s", scene, "--iterations", "600", "--densify_from_iter", "100", "--densify_until_iter", "400",
             "--densification_interval", "100", "--quiet", "--seed", "0", "--data_device", "cuda",
             "--views_per_step", views, "--cuda_graphs", "off"]  # (eager steps: the default graphs one view a step)
    standard = train.main(flags + ["-m", str(tmp_path / "standard"), "--capacity_mode", "off"])
    capacity = train.main(flags + ["-m", str(tmp_path / "capacity")])  # (on by default here)
    c = capacity["capacity_mode"]
    assert "capacity_mode" not in standard
    assert c["renders"] == 600 * int(views) and c["overflows"] == 0 and c["pair_capacity"] >= MIN_CAPACITY, c
    assert abs(capacity["psnr"] - standard["psnr"]) < 0.3, (capacity["psnr"], standard["psnr"])
    assert 0.8 < capacity["gaussians"] / standard["gaussians"] < 1.25


@needs_cuda
def test_a_capacity_mode_pipeline_trains_like_a_standard_one(tmp_path):
    _cuda_rasterizer()
    scene = make_synthetic_scene(str(tmp_path / "s"), num_views=12, width=96, height=64, num_points=800, seed=1)
    flags = ["-s", scene, "--eval", "--num_models", "4", "--steps_scale", "0.02", "--quiet", "--seed", "0",
             "--data_device", "cuda", "--views_per_step", "1", "--cuda_graphs", "off"]  # (eager steps: the default
    # graphs every model)
    standard = train.main(flags + ["-m", str(tmp_path / "standard"), "--capacity_mode", "off"])["models"]
    capacity = train.main(flags + ["-m", str(tmp_path / "capacity")])["models"]  # (on by default here)
    names = ("G_perb", "G_drop", "G_std", "student")
    for name in names:
        c = capacity[name]["capacity_mode"]
        assert c["overflows"] == 0, (name, c)
        # (the student's novel views render through the same budget)
        assert (c["renders"] > capacity[name]["iterations"]) is (name == "student"), (name, c)
    # This tiny run's models move by up to ~0.85 dB between two GPU runs whatever the mode (the backward sums with
    # atomics; H200s gave G_perb +0.50, G_drop -0.49, G_std -0.28, student -0.53 between the modes, and another time
    # +0.56, -0.01, +0.56, +0.85, a mean of +0.49): a mode that costs quality shows in the mean of the four, one
    # model's loss only beyond that noise. The question is a cost, so the bounds are one-sided.
    gaps = [capacity[name]["psnr"] - standard[name]["psnr"] for name in names]
    assert sum(gaps) / len(gaps) > -0.4 and min(gaps) > -1.0, dict(zip(names, gaps))


@needs_cuda
def test_an_overflow_is_counted_and_doubles_the_capacity(tmp_path):
    _cuda_rasterizer()
    from arguments import ModelParams, PipelineParams  # noqa: PLC0415
    from gaussian_renderer import render  # noqa: PLC0415
    from scene import Scene  # noqa: PLC0415
    from scene.gaussian_model import GaussianModel  # noqa: PLC0415
    path = make_synthetic_scene(str(tmp_path / "s"), num_views=4, width=96, height=64, num_points=2000, seed=3)
    scene = Scene(ModelParams.defaults(source_path=path, data_device="cuda", model_path=str(tmp_path / "m")))
    model = GaussianModel(3, "cuda")
    model.create_from_points(scene.points, scene.colors, scene.cameras_extent)
    cam, pipe, bg = scene.getTrainCameras()[0], PipelineParams.defaults(), torch.zeros(3, device="cuda")
    b = PairBudget("cuda")
    b.measure(cam, model, pipe, bg)
    pairs = int(b.meta[1])
    assert pairs > 64 and b.capacity >= HEADROOM * pairs
    b.capacity = small = pairs // 4  # too small for the view: its deepest pairs are dropped
    grew = False
    with torch.no_grad():
        for _ in range(5):  # the counts arrive at the poll after the copy that holds them landed
            render(cam, model, pipe, bg, **b.render_kwargs())
            b.record()
            torch.cuda.synchronize()
            grew = b.poll(model.num_points)
            if grew:
                break
    assert grew and b.capacity >= max(2 * small, HEADROOM * pairs) and b.summary()["overflows"] >= 1
