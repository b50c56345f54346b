"""--depth_reinit_iters: the student re-initialised on the surfaces its training views render."""
import numpy as np
import pytest
import torch

from arguments import PipelineParams
from distill.depth_reinit import pixels_to_world, reinitialise_from_points, surface_points
from scene.cameras import Camera
from scene.gaussian_model import PARAM_NAMES, GaussianModel
from tests.test_training import opt_defaults
from utils.general_utils import inverse_sigmoid
from utils.graphics_utils import look_at


def _camera(uid, centre, image=None, width=40, height=30):
    R = look_at(np.asarray(centre, dtype=float), np.zeros(3), np.array([0.0, 0.0, 1.0])).T  # camera-to-world
    return Camera(uid, R, -R.T @ np.asarray(centre, dtype=float), 0.9, 0.7, width, height, f"v{uid}", image=image)


def test_pixels_go_back_to_the_world_points_that_project_onto_them():
    cam = _camera(0, (3.0, 1.0, 0.8))
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.randint(0, 30, (50,), generator=g), torch.randint(0, 40, (50,), generator=g)
    depth = 1.0 + 4.0 * torch.rand(50, generator=g, dtype=torch.float64)
    world = pixels_to_world(cam, depth, rows, cols)
    # project them as the rasterizer does: view = world @ world_view_transform, pixel = ((ndc + 1) x size - 1) / 2
    view = torch.cat([world, torch.ones(50, 1, dtype=world.dtype)], 1) @ cam.world_view_transform.double()
    u = ((view[:, 0] / view[:, 2] / cam.tanfovx + 1) * 40 - 1) / 2
    v = ((view[:, 1] / view[:, 2] / cam.tanfovy + 1) * 30 - 1) / 2
    torch.testing.assert_close(view[:, 2], depth)
    torch.testing.assert_close(u, cols.double(), atol=1e-9, rtol=0)
    torch.testing.assert_close(v, rows.double(), atol=1e-9, rtol=0)


def _wall(n=40, device="cpu"):
    """An opaque wall of n x n small Gaussians on the plane x = 0 (|y|, |z| <= 1.2)."""
    y, z = torch.meshgrid(torch.linspace(-1.2, 1.2, n), torch.linspace(-1.2, 1.2, n), indexing="ij")
    xyz = torch.stack([torch.zeros(n * n), y.reshape(-1), z.reshape(-1)], 1)
    model = GaussianModel(0, device)
    model.create_from_points(xyz, torch.full((n * n, 3), 0.5), 1.0)
    model.params["opacity"].data.fill_(float(inverse_sigmoid(torch.tensor(0.99))))
    model.params["scaling"].data.fill_(float(np.log(2.4 / n)))
    return model


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_surface_points_lie_on_the_rendered_wall_with_the_photos_colours(device):
    photo = torch.zeros(3, 30, 40, dtype=torch.uint8)
    photo[0, :15], photo[2, 15:] = 200, 100  # (rows grow downwards: the upper half red)
    cams = [_camera(0, (4.0, 0.3, 0.2), photo), _camera(1, (3.5, -1.0, 0.0), photo)]
    model = _wall(device=device)
    pipe = PipelineParams.defaults(backend="torch" if device == "cpu" else "auto")
    points, colours = surface_points(model, cams, pipe, 301, torch.Generator().manual_seed(1))
    assert points.shape == (301, 3) and colours.shape == (301, 3)  # (150 + 151 of the views' covered pixels)
    assert points[:, 0].abs().max() < 0.05  # on the wall: x = 0
    assert points[:, 1:].abs().max() < 1.4
    # each point's colour is the photo's at its pixel: red or blue, never a mix or the background
    points, colours = points.cpu(), colours.cpu()
    red, blue = (colours - torch.tensor([200 / 255, 0, 0])).abs().amax(1) < 1e-6, \
        (colours - torch.tensor([0, 0, 100 / 255])).abs().amax(1) < 1e-6
    assert (red | blue).all() and red.any() and blue.any()
    # the same draws from the same generator; none where no Gaussian covers the view
    again, _ = surface_points(model, cams, pipe, 301, torch.Generator().manual_seed(1))
    assert torch.equal(points, again.cpu())
    away = [_camera(2, (-4.0, 0.0, 30.0), photo)]  # looking at the origin from far above: the wall edge-on
    assert surface_points(model, away, pipe, 50, torch.Generator().manual_seed(1))[0].shape[0] < 50


def test_reinitialising_replaces_every_gaussian_and_its_state():
    model = _wall(10)
    model.training_setup(opt_defaults())
    points = torch.rand(30, 3)
    colours = torch.rand(30, 3)
    rows = {"grad": torch.ones(100)}
    reinitialise_from_points(model, points, colours, rows)
    assert model.num_points == 30 and rows["grad"].shape == (30,) and (rows["grad"] == 0).all()
    torch.testing.assert_close(model.get_xyz.detach(), points)
    torch.testing.assert_close(model.get_opacity.detach(), torch.full((30, 1), 0.1))
    for k in PARAM_NAMES:
        p = model.params[k]
        st = model.optimizer.state.get(p)
        assert st is None or all(float(st[m].abs().sum()) == 0 for m in ("exp_avg", "exp_avg_sq")), k


@pytest.mark.parametrize("iters, fine", [([], True), ([5000, 10000], True), ([16000], False), ([0], False)])
def test_the_iterations_must_lie_in_the_growth(iters, fine):
    from arguments import DistillParams  # noqa: PLC0415
    from utils.errors import UserError  # noqa: PLC0415
    dp = DistillParams.defaults(num_models=4, depth_reinit_iters=iters)
    if fine:
        dp.check_combinations()
    else:
        with pytest.raises(UserError, match="--depth_reinit_iters"):
            dp.check_combinations()
