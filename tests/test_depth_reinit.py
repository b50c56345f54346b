"""--student_depth_reinit: points of the student's rendered surfaces (distill/depth_reinit.py)."""
import numpy as np
import pytest
import torch

from arguments import PipelineParams
from distill.depth_reinit import pixel_rays, ray_peaks, surface_points, unproject
from gaussian_renderer import render
from gaussian_renderer.cuda_package import reference
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from tests.test_novel_views import _ring
from utils.general_utils import inverse_sigmoid


def test_unprojected_pixels_project_back_onto_their_pixels_at_their_depth():
    for cam in _ring(3):
        g = torch.Generator().manual_seed(cam.uid)
        pick = torch.randint(0, cam.image_height * cam.image_width, (50,), generator=g)
        z = torch.rand(50, generator=g) * 5 + 0.5
        xyz = unproject(cam, pixel_rays(cam, "cpu").reshape(-1, 3)[pick], z)
        h = torch.cat([xyz, torch.ones(50, 1)], 1)
        assert torch.allclose((h @ cam.world_view_transform)[:, 2], z, rtol=1e-4)  # the view-space depth
        clip = h @ cam.full_proj_transform
        ndc = clip[:, :2] / clip[:, 3:]
        u = ((ndc[:, 0] + 1) * cam.image_width - 1) / 2  # (the rasterizer's NDC to pixel)
        v = ((ndc[:, 1] + 1) * cam.image_height - 1) / 2
        assert torch.allclose(u, (pick % cam.image_width).float(), atol=1e-3)
        assert torch.allclose(v, (pick // cam.image_width).float(), atol=1e-3)


def test_ray_peaks_minimise_the_mahalanobis_distance_along_the_ray():
    """Rotated, elongated Gaussians: ray_peaks' depth beats every depth of a fine scan along the ray (the Gaussian's
    density peaks there); one behind the camera falls back to its mean's view depth."""
    cam = _ring(1)[0]
    g = torch.Generator().manual_seed(3)
    n = 20
    rays = pixel_rays(cam, "cpu").reshape(-1, 3)[torch.randint(0, cam.image_height * cam.image_width, (n,),
                                                                generator=g)]
    means = unproject(cam, rays + 0.2 * torch.randn(n, 3, generator=g), torch.rand(n, generator=g) * 3 + 1.0)
    scales = torch.rand(n, 3, generator=g) * 0.5 + 0.01
    quats = torch.randn(n, 4, generator=g)
    t = ray_peaks(cam, rays, means, scales, quats)
    inv = torch.linalg.inv(cam.world_view_transform)
    sigma_inv = torch.linalg.inv(reference.covariance_3d(scales, quats))
    scan = torch.linspace(0.05, 10.0, 4000)

    def mahalanobis(depth):  # [n, k] at view depths [n, k] along each ray
        p = (rays[:, None, :] * depth[..., None]) @ inv[:3, :3] + inv[3, :3] - means[:, None, :]
        return torch.einsum("nki,nij,nkj->nk", p, sigma_inv, p)

    best = mahalanobis(scan.expand(n, -1)).min(dim=1).values
    assert (mahalanobis(t[:, None])[:, 0] <= best * (1 + 1e-4) + 1e-6).all()
    behind = unproject(cam, rays[:1], torch.tensor([-2.0]))  # (its peak along the ray is behind the camera)
    z = ray_peaks(cam, rays[:1], behind, torch.full((1, 3), 0.1), torch.tensor([[1.0, 0, 0, 0]]))
    assert torch.allclose(z, torch.tensor([-2.0]), atol=1e-4)


def _wall(z=2.0, half=1.0, n=40):
    """Opaque flat Gaussians packed on the square |x|, |y| <= half of the plane at world depth ``z``, red on the left
    half, blue on the right; and a camera at the origin looking along +z (90 degrees), its photo coloured alike."""
    m = GaussianModel(0)
    s = torch.linspace(-half, half, n)
    xy = torch.stack(torch.meshgrid(s, s, indexing="xy"), -1).reshape(-1, 2)
    xyz = torch.cat([xy, torch.full((xy.shape[0], 1), z)], 1)
    rgb = torch.where(xy[:, :1] < 0, torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0]))
    m.create_from_points(xyz, rgb)
    m.params["opacity"].data.fill_(float(inverse_sigmoid(torch.tensor(0.99))))
    m.params["scaling"].data[:, 2] = float(np.log(1e-3))  # flat along z, as a trained surface's Gaussians
    w = h = 32
    u = (2 * torch.arange(w) + 1) / w - 1  # the pixel centres' x / z
    photo = torch.where(u[None, :, None] < 0, torch.tensor([255, 0, 0]), torch.tensor([0, 0, 255]))
    photo = photo.expand(h, w, 3).permute(2, 0, 1).to(torch.uint8).contiguous()
    cam = Camera(0, np.eye(3), np.zeros(3), np.pi / 2, np.pi / 2, w, h, "wall", image=photo)
    return m, cam


def test_surface_points_lie_on_the_rendered_wall_with_the_photos_colours():
    m, cam = _wall()
    pipe = PipelineParams.defaults(backend="torch")
    xyz, rgb, strongest = surface_points(m, [cam], pipe, 300, torch.Generator().manual_seed(0))
    assert xyz.shape == rgb.shape == (300, 3) and strongest.shape == (300,)
    # each point within its strongest contributor's footprint: 3 sigma of the Gaussian (0.055) dilated by the
    # rasterizer's 0.3 px^2 low-pass (0.068 at a pixel of 0.125 here), 0.26
    assert (xyz - m.get_xyz[strongest]).norm(dim=1).max() < 0.26
    assert torch.allclose(xyz[:, 2], torch.full((300,), 2.0), atol=0.02)  # on the wall...
    assert xyz[:, :2].abs().max() < 1.25  # ... where it is (its edge Gaussians reach a pixel beyond it)
    left = xyz[:, 0] < -0.05
    right = xyz[:, 0] > 0.05
    assert left.sum() > 50 and right.sum() > 50
    assert (rgb[left] == torch.tensor([1.0, 0, 0])).all() and (rgb[right] == torch.tensor([0, 0, 1.0])).all()
    # drawn without replacement: no pixel twice; the same generator seed draws the same points
    assert torch.unique(xyz, dim=0).shape[0] == 300
    again, _, _ = surface_points(m, [cam], pipe, 300, torch.Generator().manual_seed(0))
    assert torch.equal(xyz, again)


def test_points_of_semi_transparent_layers_lie_on_a_layer_not_between():
    """A faint wall (Gaussians of opacity 0.1) at depth 2 in front of an opaque one at depth 4: every point is on one
    of the two (the pixel's strongest contributor), where the blended depth would put them between (2.2 at the
    centre)."""
    front, cam = _wall(z=2.0)
    back, _ = _wall(z=4.0, half=2.0)
    front.params["opacity"].data.fill_(float(inverse_sigmoid(torch.tensor(0.1))))
    both = GaussianModel(0)
    both.create_from_points(torch.cat([front.get_xyz, back.get_xyz]), torch.zeros(3200, 3))
    for k in ("scaling", "opacity"):
        both.params[k].data.copy_(torch.cat([front.params[k], back.params[k]]))
    pipe = PipelineParams.defaults(backend="torch")
    ones = torch.ones(both.num_points, 3)
    out = render(cam, both, pipe, torch.zeros(3), override_color=ones)
    blended = (out["render"][0] / out["depth"][0])[16, 16]
    assert 2.1 < blended < 3.5  # (where the blended-depth placement put the points)
    xyz, _, strongest = surface_points(both, [cam], pipe, 400, torch.Generator().manual_seed(2))
    z = xyz[:, 2]
    on_front, on_back = (z - 2.0).abs() < 0.03, (z - 4.0).abs() < 0.06
    assert (on_front | on_back).all() and on_front.sum() > 20 and on_back.sum() > 20
    assert torch.equal(on_front, strongest < 1600)  # (the first 1,600 Gaussians are the faint wall's)


def test_the_count_is_shared_over_the_views_and_capped_by_their_opaque_pixels():
    m, cam = _wall(half=0.6)  # covers about an eighth of the 1,024 pixels
    pipe = PipelineParams.defaults(backend="torch")
    behind = Camera(1, np.diag([-1.0, 1.0, -1.0]), np.zeros(3), np.pi / 2, np.pi / 2, 32, 32, "away",
                    image=torch.zeros(3, 32, 32, dtype=torch.uint8))  # looks along -z: sees nothing
    xyz, _, _ = surface_points(m, [cam, behind], pipe, 100, torch.Generator().manual_seed(1))
    assert xyz.shape[0] == 50  # half the count a view; the view that sees nothing adds none
    xyz, _, _ = surface_points(m, [cam], pipe, 5000, torch.Generator().manual_seed(1))
    ones = torch.ones(m.num_points, 3)
    opaque = int((render(cam, m, pipe, torch.zeros(3), override_color=ones)["render"][0] > 0.05).sum())
    assert 100 < opaque < 200 and xyz.shape[0] == opaque  # every pixel above the opacity floor once, no more
    assert surface_points(m, [behind], pipe, 100, torch.Generator())[0].shape == (0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_cuda_rasterizer_gives_the_same_surface():
    m, cam = _wall()
    pipe = PipelineParams.defaults(backend="cuda")
    m.to("cuda")
    xyz, rgb, _ = surface_points(m, [cam], pipe, 300, torch.Generator().manual_seed(0))
    assert xyz.is_cuda and xyz.shape == (300, 3)
    assert torch.allclose(xyz[:, 2].cpu(), torch.full((300,), 2.0), atol=0.02)
