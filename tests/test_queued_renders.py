"""training.pair_budget.QueuedRenders: the no-grad renders of many views (the student's importance scores, the
teachers' target renders, evaluations) queued in capacity mode without a wait for each. On the CPU they are the
standard renders; on a GPU (skipped without CUDA) they must give what the standard renders give, also when views
overflow (rendered again exactly), and wait for the device a fixed number of times, not once a view."""
import warnings

import pytest
import torch

import training.pair_budget
from arguments import ModelParams, PipelineParams
from distill.importance import gaussian_importance
from distill.roles import teacher_renders
from gaussian_renderer import render
from scene import Scene
from scene.gaussian_model import GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.raster_helpers import assert_close_up_to_atomics
from training.loop import evaluate
from training.pair_budget import QueuedRenders

EXACT = PipelineParams.defaults(capacity_mode="off")


def _scene(tmp_path, device, seed=4):
    path = make_synthetic_scene(str(tmp_path / "s"), num_views=8, width=96, height=64, num_points=1500, seed=seed)
    scene = Scene(ModelParams.defaults(source_path=path, data_device=device, model_path=str(tmp_path / "m")))
    models = []
    for k in range(3):  # (three models apart: the teachers' renders differ)
        model = GaussianModel(3, device)
        model.create_from_points(scene.points + 0.02 * k, scene.colors, scene.cameras_extent)
        model.active_sh_degree = model.max_sh_degree
        models.append(model)
    return scene, models, torch.zeros(3, device=device)


def test_on_the_cpu_they_are_the_standard_renders(tmp_path):
    scene, (model, *_), bg = _scene(tmp_path, "cpu")
    cams = scene.getTrainCameras()
    queue = QueuedRenders("cpu", PipelineParams.defaults(), len(cams))
    assert not queue.on
    out, ok = queue.render(0, cams[0], model, PipelineParams.defaults(), bg)
    assert ok is None and queue.overflowed() == []
    assert torch.equal(out["render"], render(cams[0], model, EXACT, bg)["render"])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cuda_rasterizer():
    from gaussian_renderer import cuda_extension  # noqa: PLC0415
    if not cuda_extension():
        pytest.skip("the diff_gaussian_rasterization extension is not built")


def _queued_and_exact(scene, models, bg, store):
    """(queued, exact) results of the three users: importance, the teachers' targets, an evaluation."""
    cams = scene.getTrainCameras()
    got = []
    for pipe in (PipelineParams.defaults(), EXACT):
        got.append(dict(imp=gaussian_importance(models[0], cams, pipe, bg),
                        outdoor=gaussian_importance(models[1], cams, pipe, bg, "outdoor"),
                        targets=teacher_renders(models, cams, pipe, bg, store),
                        scores=evaluate(models[2], cams, pipe, bg)))
    return got


def _assert_same(queued, exact):
    # (the stats add with atomics: float order only)
    assert_close_up_to_atomics({k: exact[k] for k in ("imp", "outdoor")}, {k: queued[k] for k in ("imp", "outdoor")})
    assert queued["targets"].keys() == exact["targets"].keys()
    for uid, t in exact["targets"].items():
        assert torch.equal(queued["targets"][uid], t), uid
    assert queued["scores"] == exact["scores"]


@needs_cuda
@pytest.mark.parametrize("store", ["cuda", "cpu"])
def test_queued_renders_give_what_the_standard_renders_give(tmp_path, store):
    _cuda_rasterizer()
    _assert_same(*_queued_and_exact(*_scene(tmp_path, "cuda"), store))


@needs_cuda
def test_views_that_overflow_are_rendered_again_exactly(tmp_path, monkeypatch):
    _cuda_rasterizer()
    scene, models, bg = _scene(tmp_path, "cuda")
    # a capacity of a quarter of the first view's pairs: the views overflow until a poll doubles it
    monkeypatch.setattr(training.pair_budget, "HEADROOM", 0.25)
    monkeypatch.setattr(training.pair_budget, "MIN_CAPACITY", 1)
    redone = []
    real = QueuedRenders.overflowed
    monkeypatch.setattr(QueuedRenders, "overflowed", lambda self: redone.append(real(self)) or redone[-1])
    _assert_same(*_queued_and_exact(scene, models, bg, "cuda"))
    assert redone and all(r and r[0] == 0 for r in redone[:4]), redone  # (each pass's first view overflowed)


@needs_cuda
def test_a_pass_waits_for_the_device_a_fixed_number_of_times(tmp_path):
    _cuda_rasterizer()
    scene, models, bg = _scene(tmp_path, "cuda")
    cams = scene.getTrainCameras() * 3  # (24 views)
    counts = {}
    for name, pipe in (("queued", PipelineParams.defaults()), ("exact", EXACT)):
        gaussian_importance(models[0], cams[:2], pipe, bg)  # (warm-up: lazy initialisations)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                gaussian_importance(models[0], cams, pipe, bg)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[name] = sum("synchroniz" in str(w.message) for w in caught)
    # exact: each view's pair count; queued: the first view's measure and the overflow flags' read
    assert counts["exact"] >= len(cams) and counts["queued"] <= 4, counts
