"""render(): one entry point for both rasterizer backends (our CUDA extension or the PyTorch spec)."""
import torch

from gaussian_renderer import cuda_package, torch_rasterizer
from utils.errors import UserError

_cuda_module = None


def cuda_extension():
    """The CUDA package diff_gaussian_rasterization where its kernels are built, else False."""
    global _cuda_module
    if _cuda_module is None:
        _cuda_module = cuda_package.package if cuda_package.has_kernels() else False
    return _cuda_module


def renders_with_cuda_extension(device, requested="auto"):
    """Whether render() uses our CUDA extension on ``device`` under --backend ``requested``."""
    return torch.device(device).type == "cuda" and requested in ("auto", "cuda") and bool(cuda_extension())


def fast_path_on(mode, device, backend="auto"):
    """An auto|on|off flag of the CUDA rasterizer's fast paths (--capacity_mode, --cuda_graphs): on, off, or auto =
    on where our CUDA extension renders (train.py refuses "on" elsewhere)."""
    return mode == "on" or (mode == "auto" and renders_with_cuda_extension(device, backend))


def pick_backend(device, requested="auto"):
    """'cuda' or 'torch' for tensors on ``device`` given the --backend flag."""
    on_cuda = torch.device(device).type == "cuda"
    if requested == "torch":
        return torch_rasterizer
    if requested == "gsplat":
        if not on_cuda:
            raise UserError("--backend gsplat needs a CUDA GPU; this run is on the CPU (use --backend auto or torch)")
        from gaussian_renderer import gsplat_backend  # noqa: PLC0415 (imports gsplat only when asked)
        gsplat_backend.load_gsplat()
        return gsplat_backend
    if requested not in ("auto", "cuda"):
        raise UserError(f"--backend {requested} is unknown: use auto, cuda, torch or gsplat")
    if on_cuda:
        mod = cuda_extension()
        if mod:
            return mod
        raise UserError("CUDA tensors but the diff_gaussian_rasterization extension is not built: run "
                        "`pip install --no-build-isolation ./submodules/diff-gaussian-rasterization "
                        "./submodules/simple-knn`, or pass --backend torch")
    if requested == "cuda":
        raise UserError("--backend cuda needs a CUDA GPU; this run is on the CPU (use --backend auto or torch)")
    return torch_rasterizer


def background(white, device="cpu"):
    """The background colour [3]: white for -w/--white_background scenes, else black."""
    return torch.tensor([1.0, 1.0, 1.0] if white else [0.0, 0.0, 0.0], device=device)


def render(camera, pc, pipe, bg_color, scaling_modifier=1.0, override_color=None, opacity=None,
           return_stats=False, pair_capacity=0, pair_meta=None):
    """Render ``pc`` from ``camera``.

    opacity: optional [N, 1] activated opacities replacing the model's (dropout uses it).
    pair_capacity, pair_meta: the CUDA rasterizer's capacity mode (no host-device sync; training/graph_step.py);
    the other backends ignore them.
    Returns dict(render [3,H,W], depth [1,H,W] inverse depth, viewspace_points, visibility_filter,
    radii, and the per-Gaussian stats return_stats asks for: True = accum_weights, area_proj and area_max,
    or a collection of those names).
    """
    dev = pc.get_xyz.device
    backend = pick_backend(dev, getattr(pipe, "backend", "auto"))
    # only the PyTorch rasterizer reads its values (zeros added to the projected means); our kernels and gsplat
    # only give it a .grad, and a zero fill is one more kernel a render
    means2D = (torch.zeros_like if backend is torch_rasterizer else torch.empty_like)(pc.get_xyz, requires_grad=True)
    view, proj, campos = camera.matrices(dev)
    # (the capacity fields only when asked: an extension built before them still renders)
    capacity = dict(pair_capacity=pair_capacity, pair_meta=pair_meta) if pair_capacity else {}
    settings = backend.GaussianRasterizationSettings(
        image_height=camera.image_height, image_width=camera.image_width, tanfovx=camera.tanfovx,
        tanfovy=camera.tanfovy, bg=bg_color, scale_modifier=scaling_modifier, viewmatrix=view,
        projmatrix=proj, sh_degree=pc.active_sh_degree, campos=campos, prefiltered=False,
        debug=getattr(pipe, "debug", False), antialiasing=getattr(pipe, "antialiasing", False), **capacity)
    rasterizer = backend.GaussianRasterizer(raster_settings=settings)
    # the raw quaternions and the two SH parameters: every backend normalises quaternions itself (forward and
    # backward), and the CUDA kernels read DC and higher bands in place, so neither costs kernels per render
    kw = dict(means3D=pc.get_xyz, means2D=means2D, opacities=pc.get_opacity if opacity is None else opacity,
              scales=pc.get_scaling, rotations=pc.params["rotation"])
    if override_color is not None:
        kw["colors_precomp"] = override_color
    else:
        kw["shs"] = (pc.params["f_dc"], pc.params["f_rest"])
    out = rasterizer(**kw, return_stats=return_stats)
    result = dict(render=out[0], radii=out[1], depth=out[2], viewspace_points=means2D,
                  visibility_filter=out[1] > 0)
    if return_stats:
        result.update(out[3])
    return result
