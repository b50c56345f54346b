"""The student's re-initialisation from rendered depth (--depth_reinit_iters, Mini-Splatting's depth
re-initialisation): during its growth the student's Gaussians pile up where densification put them, not where the
surfaces are; at the given iterations every Gaussian is replaced by as many new ones placed on the surfaces the
training views render (each view's depth at pixels drawn by their coverage), coloured by the photos, started as the
SfM points are (kNN scales, opacity 0.1), so the growth continues from an even cover of the geometry."""
import torch

from gaussian_renderer import render
from scene.gaussian_model import GaussianModel

MIN_COVERAGE = 0.5  # pixels whose accumulated opacity is below this show background: no surface to place a point on


def pixels_to_world(camera, depth, rows, cols):
    """World points [K, 3] of the pixels (``rows``, ``cols``: [K] long) of ``camera`` at camera-space ``depth`` [K]:
    the inverse of the rasterizer's projection (pixel centres, the principal point at the image centre)."""
    dev = depth.device
    x = ((2 * cols.to(depth.dtype) + 1) / camera.image_width - 1) * camera.tanfovx * depth
    y = ((2 * rows.to(depth.dtype) + 1) / camera.image_height - 1) * camera.tanfovy * depth
    cam = torch.stack([x, y, depth, torch.ones_like(depth)], dim=1)
    # (points are rows: view = world @ world_view_transform, so world = view @ its inverse)
    return (cam @ torch.linalg.inv(camera.world_view_transform.to(dev, depth.dtype)))[:, :3]


@torch.no_grad()
def surface_points(model, cameras, pipe, count, generator):
    """About ``count`` points on the surfaces ``model`` renders in ``cameras``, spread evenly over the views: in each,
    pixels drawn without replacement with probability proportional to their coverage (accumulated opacity, those
    below MIN_COVERAGE excluded), placed at the rendered depth (coverage / blended inverse depth), with the photo's
    colour there. ``generator``: a CPU torch.Generator. Returns (points [K, 3], colours [K, 3] in [0, 1])."""
    dev = model.device
    black, white = torch.zeros(3, device=dev), torch.ones(model.num_points, 3, device=dev)
    points, colours = [], []
    for v, cam in enumerate(cameras):
        want = count // len(cameras) + (1 if v < count % len(cameras) else 0)
        inv_depth = render(cam, model, pipe, black)["depth"][0]
        coverage = render(cam, model, pipe, black, override_color=white)["render"][0]  # (white on black: the opacity)
        weight = torch.where((coverage >= MIN_COVERAGE) & (inv_depth > 0), coverage, torch.zeros_like(coverage))
        k = min(want, int((weight > 0).sum()))
        if k == 0:
            continue
        flat = torch.multinomial(weight.reshape(-1).double().cpu(), k, replacement=False, generator=generator).to(dev)
        rows, cols = flat // cam.image_width, flat % cam.image_width
        depth = coverage[rows, cols] / inv_depth[rows, cols]  # (the blended inverse depth is weighted by coverage)
        points.append(pixels_to_world(cam, depth, rows, cols))
        colours.append(cam.original_image(dev)[:, rows, cols].T)
    if not points:
        return torch.zeros(0, 3, device=dev), torch.zeros(0, 3, device=dev)
    return torch.cat(points), torch.cat(colours)


@torch.no_grad()
def reinitialise_from_points(model, points, colours, rows=None):
    """Replace every Gaussian of ``model`` by one per point (kNN scales, opacity 0.1, identity rotation, the colour as
    DC, no higher SH, as the SfM start): fresh Adam moments, ``rows`` (the strategy state) restarted at zero."""
    fresh = GaussianModel(model.max_sh_degree, model.device)
    fresh.create_from_points(points, colours, model.spatial_lr_scale)
    n = fresh.num_points
    model.edit_params(lambda k, t: fresh.params[k].detach(), lambda k, t: torch.zeros_like(fresh.params[k]), rows,
                      lambda t: t.new_zeros((n, *t.shape[1:])))
