"""--cuda_graphs (training/graph_step.py): which models take the graph, the flag's checks, and on a GPU a run
that replays its step as a graph against the same run without (GPU parts skipped without CUDA)."""
import os

import pytest
import torch

import train
from arguments import OptimizationParams, PipelineParams
from distill.roles import DropoutRole, StudentRole
from scripts.make_synthetic_scene import make_synthetic_scene
from tests.cli_helpers import run_cli
from training.graph_step import graph_eligible
from training.loop import Role


class _Noisy(Role):
    def step_loss(self, it, model):
        return None


def test_only_plain_one_view_steps_take_the_graph():
    opt, pipe = OptimizationParams.defaults(views_per_step=1), PipelineParams.defaults(cuda_graphs=True)
    assert graph_eligible(opt, Role(), None, pipe)
    assert not graph_eligible(OptimizationParams.defaults(views_per_step=2), Role(), None, pipe)
    assert not graph_eligible(OptimizationParams.defaults(views_per_step=1, random_background=True), Role(), None,
                              pipe)
    assert not graph_eligible(opt, Role(), object(), pipe)  # data-parallel ranks
    assert not graph_eligible(opt, Role(), None, PipelineParams.defaults(cuda_graphs=True, profile=True))
    assert not graph_eligible(opt, _Noisy(), None, pipe)  # any hook of its own: a per-step extra
    assert not graph_eligible(opt, DropoutRole.__new__(DropoutRole), None, pipe)
    assert not graph_eligible(opt, StudentRole.__new__(StudentRole), None, pipe)
    cam = type("Cam", (), dict(image_height=12, image_width=16, tanfovx=0.5, tanfovy=0.4))
    other = type("Cam", (), dict(image_height=12, image_width=16, tanfovx=0.6, tanfovy=0.4))
    assert graph_eligible(opt, Role(), None, pipe, [cam, cam])
    assert not graph_eligible(opt, Role(), None, pipe, [cam, other])  # two camera setups: no graph


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's refusal")
def test_the_flag_needs_the_cuda_rasterizer(tmp_path, capsys):
    scene = make_synthetic_scene(str(tmp_path / "s"), num_views=4, width=16, height=12, num_points=20, seed=0)
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, ["-s", scene, "-m", str(tmp_path / "o"), "--iterations", "5", "--quiet",
                             "--cuda_graphs"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --cuda_graphs needs a CUDA GPU") and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_graphed_run_trains_like_an_eager_one(tmp_path):
    from gaussian_renderer import cuda_extension  # noqa: PLC0415
    if not cuda_extension():
        pytest.skip("the diff_gaussian_rasterization extension is not built")
    scene = make_synthetic_scene(str(tmp_path / "s"), num_views=12, width=96, height=64, num_points=800, seed=1)
    flags = ["-s", scene, "--iterations", "600", "--densify_from_iter", "100", "--densify_until_iter", "400",
             "--densification_interval", "100", "--quiet", "--seed", "0", "--data_device", "cuda"]
    eager = train.main(flags + ["-m", str(tmp_path / "eager")])
    graphed = train.main(flags + ["-m", str(tmp_path / "graphed"), "--cuda_graphs"])
    g = graphed["cuda_graphs"]
    assert "cuda_graphs" not in eager
    # a capture per densification and SH raise at most (the model's tensors change there), the rest replays
    assert 1 <= g["captures"] <= 12 and g["replays"] == 600 and g["overflows"] == 0, g
    assert abs(graphed["psnr"] - eager["psnr"]) < 0.3, (graphed["psnr"], eager["psnr"])
    assert 0.8 < graphed["gaussians"] / eager["gaussians"] < 1.25
