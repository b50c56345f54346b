"""Host-device synchronisations of a training step on the GPU (skipped without CUDA).

A steady-state step (no densification, evaluation or saving) waits for nothing with --capacity_mode (its default,
auto, on here: training/pair_budget.py) or --cuda_graphs. With --capacity_mode off it waits exactly once: the
rasterizer's forward reads back the number of (tile, Gaussian) pairs to size its sort buffers, as graphdeco's and
gsplat's rasterizers do. Anything else that waits (a .item(), a boolean index, a D2H copy) fails these tests with
its source line, for the plain 3DGS step and for the student's (distillation target and area_max stats).
"""
import os
import traceback
import warnings

import pytest
import torch

from arguments import DistillParams, ModelParams, OptimizationParams, PipelineParams
from distill.novel_views import interpolated_cameras
from distill.roles import StudentRole
from scene import Scene
from scene.gaussian_model import GaussianModel
from scripts.make_synthetic_scene import make_synthetic_scene
from training.loop import Role, train_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST, LAST = 5, 15  # recorded iterations: after warm-up, before any densification or evaluation


class SyncRecorder:
    """step_hook: records every synchronising call between iterations FIRST and LAST with its project frame."""

    def __init__(self, first=FIRST, last=LAST):
        self.first, self.last = first, last
        self.where = []
        self._show = None
        self._in_hook = False

    def _record(self, message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):  # other warnings are not this test's business
            return self._show(message, category, filename, lineno, file, line)
        if self._in_hook:  # (switching the debug mode on can itself report once: not the step's)
            return None
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(PROJECT)
                  and "tests" not in os.path.relpath(f.filename, PROJECT).split(os.sep)[:1]]
        self.where.append(f"{os.path.relpath(frames[-1].filename, PROJECT)}:{frames[-1].lineno}" if frames
                          else f"{filename}:{lineno}")

    def _explicit(self, name, real):
        def call(*args, **kwargs):  # (a device-wide wait or cache flush that the sync debug mode may not report)
            self.where.append(f"torch.cuda.{name}")
            return real(*args, **kwargs)
        return call

    def __call__(self, it):
        if it == self.first:
            torch.cuda.synchronize()
            self._real = torch.cuda.synchronize, torch.cuda.empty_cache
            torch.cuda.synchronize = self._explicit("synchronize", self._real[0])
            torch.cuda.empty_cache = self._explicit("empty_cache", self._real[1])
            self._show, self._filters = warnings.showwarning, warnings.filters[:]
            warnings.showwarning = self._record
            warnings.simplefilter("always")
            self._in_hook = True
            torch.cuda.set_sync_debug_mode("warn")
            self._in_hook = False
        elif it == self.last:
            self.close()

    def close(self):
        """Undo the window's patches (also when the run stopped inside it)."""
        if self._show is not None:
            torch.cuda.synchronize, torch.cuda.empty_cache = self._real
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning, self._show = self._show, None
            warnings.filters[:] = self._filters


@pytest.fixture(scope="module")
def cuda_scene(tmp_path_factory):
    path = make_synthetic_scene(str(tmp_path_factory.mktemp("scene")), num_views=8, width=96, height=64,
                                num_points=800, seed=2)
    dataset = ModelParams.defaults(source_path=path, data_device="cuda", eval=True,
                                   model_path=str(tmp_path_factory.mktemp("model")))
    return Scene(dataset), dataset


def _run(scene, dataset, role, pipe=None, rec=None, summary=None, **opt_flags):
    """The synchronising calls of iterations FIRST..LAST (or ``rec``'s window); ``summary``: a dict that receives
    the run's summary."""
    opt = OptimizationParams.defaults(**{**dict(iterations=LAST + 2, views_per_step=1, densify_from_iter=1000),
                                         **opt_flags})
    pipe = pipe or PipelineParams.defaults()
    model = GaussianModel(dataset.sh_degree, "cuda")
    model.create_from_points(scene.points, scene.colors, scene.cameras_extent)
    rec = rec or SyncRecorder()
    try:
        got = train_model(scene, model, opt, pipe, dataset, os.path.join(dataset.model_path, "pc"), role=role,
                          quiet=True, step_hook=rec)
    finally:
        rec.close()
    if summary is not None:
        summary.update(got)
    return rec.where


def _assert_one_sync_per_step(where):
    steps = LAST - FIRST
    in_rasterizer = [w for w in where if w.startswith("gaussian_renderer/__init__.py")]
    assert len(in_rasterizer) == steps and len(where) == steps, where


EXACT = dict(capacity_mode="off", cuda_graphs="off")  # the eager step, the rasterizer's standard forward (it reads
# the pair count back)
CAPACITY = dict(cuda_graphs="off")  # the eager step in capacity mode (the default graphs it)


def test_vanilla_step_waits_only_for_the_pair_count(cuda_scene):
    _assert_one_sync_per_step(_run(*cuda_scene, Role(), pipe=PipelineParams.defaults(**EXACT)))


def test_graphed_vanilla_step_does_not_wait(cuda_scene):
    """--cuda_graphs: after the capture (iteration 1), a step replays its graph and waits for nothing."""
    assert _run(*cuda_scene, Role(), pipe=PipelineParams.defaults(cuda_graphs="on")) == []


@pytest.mark.parametrize("views", [1, 3])
def test_a_graph_captured_again_after_a_densification_does_not_wait(cuda_scene, views):
    """--cuda_graphs: the model densifies at iteration 10 (its tensors change), iteration 11 captures its graph
    again without measuring a view, waiting for the device or emptying the allocator's cache, and the steps after
    it replay; with three views a step the further views' graph too (captured with the step's, replayed twice a
    step)."""
    summary = {}
    where = _run(*cuda_scene, Role(), pipe=PipelineParams.defaults(cuda_graphs="on"), rec=SyncRecorder(11, 15),
                 summary=summary, densify_from_iter=2, densification_interval=10, densify_until_iter=100,
                 views_per_step=views)
    g = summary["cuda_graphs"]
    assert g["captures"] == 2 and g["careful_captures"] == 1 and g["overflows"] == 0, g
    if views > 1:
        f = g["further_views"]
        assert f["captures"] == 2 and f["careful_captures"] == 1 and f["replays"] == 2 * (LAST + 2), g
    assert where == []


def test_capacity_mode_vanilla_step_does_not_wait(cuda_scene):
    """--capacity_mode (the default): after the first render's measurement, the eager step waits for nothing."""
    assert _run(*cuda_scene, Role()) == []


def _student(scene, novel_views=False):
    """A student on stand-ins for the mean teacher renders; ``novel_views``: a view between the training views every
    step, from the first."""
    dp = DistillParams.defaults(structure_start=10_000, novel_view_start=0, novel_view_prob=1.0)
    bg = torch.zeros(3, device="cuda")
    cams = scene.getTrainCameras()
    novel = interpolated_cameras(cams, 2) if novel_views else []
    means = {c.uid: c.original_image("cuda").half() for c in cams}  # stand-ins for the mean teacher renders
    means.update({c.uid: torch.rand(3, c.image_height, c.image_width, device="cuda").half() for c in novel})
    opt = OptimizationParams.defaults(densify_until_iter=1000)  # the student's area_max stats every step
    return StudentRole(dp, opt, PipelineParams.defaults(), bg, means, torch.as_tensor(scene.points).cuda(), cams,
                       novel_cameras=novel)


def test_student_step_waits_only_for_the_pair_count(cuda_scene):
    scene, dataset = cuda_scene
    _assert_one_sync_per_step(_run(scene, dataset, _student(scene), pipe=PipelineParams.defaults(**EXACT)))


def test_capacity_mode_student_step_does_not_wait(cuda_scene):
    scene, dataset = cuda_scene
    assert _run(scene, dataset, _student(scene), pipe=PipelineParams.defaults(**CAPACITY)) == []


def test_graphed_student_step_does_not_wait(cuda_scene):
    """--cuda_graphs (auto, the default, graphs it): its step replays its graph (the teachers' render a
    buffer it reads) and waits for nothing either."""
    scene, dataset = cuda_scene
    assert _run(scene, dataset, _student(scene)) == []


def test_graphed_student_step_with_a_novel_view_does_not_wait(cuda_scene):
    """--cuda_graphs: the student's novel view (every step here) replays a graph of its own, which adds its
    gradients to the step graph's, and waits for nothing either."""
    scene, dataset = cuda_scene
    summary = {}
    assert _run(scene, dataset, _student(scene, novel_views=True), summary=summary) == []
    added = summary["cuda_graphs"]["added_view"]
    assert added["captures"] == 1 and added["replays"] == LAST + 2 and added["overflows"] == 0, added
