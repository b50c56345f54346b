"""The growing student's depth re-initialisation (--student_depth_reinit): its Gaussians re-created, as many as it
has, at points of the surfaces it renders, sampled over the training views by how opaque each pixel is and coloured by
the photos (the depth re-initialisation of Mini-Splatting, Fang & Wang 2024, which re-spreads a densified model's
Gaussians along the surfaces instead of where the clone and split steps happened to leave them). A pixel's point is
on its strongest contributor (the Gaussian of the largest weight alpha T, the rasterizer's per-pixel stat
max_contributor), where that Gaussian's density along the pixel's ray peaks: the blended depth of semi-transparent
layers lies between them, and points placed there leave holes in the views between the training views."""
import torch

from gaussian_renderer import render
from gaussian_renderer.cuda_package import contract, reference


def pixel_rays(camera, device):
    """[H, W, 3] view-space directions of the pixel centres with z = 1 (the rasterizer's convention: pixel u's centre
    is at NDC (2u + 1) / W - 1, and NDC x = (x / z) / tan(fovx / 2); y likewise, pointing down)."""
    h, w = camera.image_height, camera.image_width
    x = ((2 * torch.arange(w, device=device, dtype=torch.float32) + 1) / w - 1) * camera.tanfovx
    y = ((2 * torch.arange(h, device=device, dtype=torch.float32) + 1) / h - 1) * camera.tanfovy
    return torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w), torch.ones(h, w, device=device)], -1)


def unproject(camera, rays, z):
    """World points [P, 3] of view-space ``rays`` [P, 3] (z = 1) at depths ``z`` [P]."""
    view = rays * z[:, None]
    view_to_world = torch.linalg.inv(camera.world_view_transform.to(z.device))  # (row vectors: p_view = p_world @ W)
    return view @ view_to_world[:3, :3] + view_to_world[3, :3]


def ray_peaks(camera, rays, means, scales, rotations):
    """View depths [P] at which Gaussians (world means [P, 3], activated scales [P, 3], quaternions [P, 4]) peak along
    view-space ``rays`` [P, 3] (z = 1) from the camera centre: the depth t minimising the Mahalanobis distance of
    centre + t ray to the mean. Where that is not in front of the near plane (a ray that grazes the Gaussian behind
    the camera, or numbers that overflow), the mean's own view depth."""
    w2v = camera.world_view_transform.to(means.device)
    v2w = torch.linalg.inv(w2v)
    to_local = reference.rotation_matrices(rotations).transpose(1, 2)  # (Sigma = R S S^T R^T: R^T, world to axes)
    d = (to_local @ (rays @ v2w[:3, :3])[:, :, None])[:, :, 0] / scales
    u = (to_local @ (means - v2w[3, :3])[:, :, None])[:, :, 0] / scales
    t = (d * u).sum(1) / (d * d).sum(1)
    z_mean = (means @ w2v[:3, :3] + w2v[3, :3])[:, 2]
    return torch.where(torch.isfinite(t) & (t > contract.NEAR_Z), t, z_mean)


def _device_generator(generator, device):
    """A generator on ``device`` seeded from the CPU ``generator`` (itself, on the CPU): the draws stay a function
    of the caller's seed, and the GPU draws them without copying each view's weights to the host."""
    if torch.device(device).type == "cpu":
        return generator
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
    return torch.Generator(device).manual_seed(seed)


@torch.no_grad()
def surface_points(model, cameras, pipe, count, generator, min_alpha=0.05):
    """``count`` points on the surfaces ``model`` renders, with colours: about count / len(cameras) pixels of each
    camera, drawn without replacement (seeded by ``generator``, a CPU torch.Generator) with probability proportional
    to the pixel's opacity among those above ``min_alpha``, each placed on its ray where the pixel's strongest
    contributor peaks (ray_peaks) and coloured by the photo. Fewer when the views have fewer such pixels. Returns
    (xyz [P, 3], rgb [P, 3], strongest [P]: the index of each point's strongest contributor) on the model's device.
    The draw is the exponential race (the k smallest of E_i / w_i, E_i ~ Exp(1), are a draw without replacement with
    probabilities proportional to w): on the device, with one wait for the whole pass instead of one a view."""
    dev = model.device
    gen = _device_generator(generator, dev)
    ones = torch.ones(model.num_points, 3, device=dev)
    black = torch.zeros(3, device=dev)
    quota = [count // len(cameras) + (1 if i < count % len(cameras) else 0) for i in range(len(cameras))]
    xyz, rgb, index, drawn = [], [], [], []
    for cam, k in zip(cameras, quota):
        k = min(k, cam.image_height * cam.image_width)
        if k == 0:
            continue
        # (white Gaussians on black: channel 0 = opacity)
        out = render(cam, model, pipe, black, override_color=ones, return_stats=("max_contributor",))
        alpha, strongest = out["render"][0].flatten(), out["max_contributor"].flatten()
        ok = (alpha > min_alpha) & (strongest >= 0)
        race = torch.empty_like(alpha).exponential_(generator=gen).log_() - alpha.log()  # (log E / w: no overflow)
        key, pick = torch.where(ok, race, torch.inf).topk(k, largest=False)
        drawn.append(torch.isfinite(key))  # (fewer such pixels than k: the rest are none)
        g = strongest[pick].clamp_min(0)
        rays = pixel_rays(cam, dev).reshape(-1, 3)[pick]
        z = ray_peaks(cam, rays, model.get_xyz[g], model.get_scaling[g], model.params["rotation"][g])
        xyz.append(unproject(cam, rays, z))
        rgb.append(cam.original_image(dev)[:3].reshape(3, -1)[:, pick].T)
        index.append(g)
    if not xyz:
        none = torch.zeros(0, 3, device=dev)
        return none, none.clone(), torch.zeros(0, dtype=torch.int64, device=dev)
    keep = torch.cat(drawn)  # (one wait: the boolean index)
    return torch.cat(xyz)[keep], torch.cat(rgb).clamp(0, 1)[keep], torch.cat(index)[keep]
