"""gsplat's `rasterization` behind our rasterizer contract (``--backend gsplat``), to compare rasterizers
inside one trainer. Needs CUDA and the gsplat package (1.5.x); vanilla 3DGS only: it has no per-Gaussian
stats, so the distillation student cannot use it.

What differs from our rasterizers (gsplat's own behaviour, kept): alpha is clamped at 0.999 instead of 0.99,
radii are gsplat's (3.33 sigma, shrunk by the opacity, per axis; we return the larger axis), and a Gaussian
under alpha 1/255 everywhere is culled. Our conventions are kept where the contract fixes them: the near plane
0.2, inverse depth sum(alpha T / z) (rendered as a fourth channel, background 0), and means2D.grad = gsplat's
pixel gradient x (W/2, H/2), the normalisation its DefaultStrategy applies and graphdeco's NDC gradient equals.
"""
import importlib.util
import os
import sys

import torch

from gaussian_renderer import torch_rasterizer
from gaussian_renderer.torch_rasterizer import NEAR_Z
from utils.errors import UserError

GaussianRasterizationSettings = torch_rasterizer.GaussianRasterizationSettings  # the contract's settings
_gsplat = None


def load_gsplat():
    """The gsplat module; GSPLAT_PREBUILT_SO=path/to/gsplat_cuda.so uses an already compiled extension
    instead of gsplat's first-use compile (about 80 s on an H100)."""
    global _gsplat
    if _gsplat is None:
        so = os.environ.get("GSPLAT_PREBUILT_SO")
        if so and "gsplat.csrc" not in sys.modules:
            if not os.path.exists(so):
                raise UserError(f"GSPLAT_PREBUILT_SO={so} does not exist: unset it to let gsplat compile itself")
            spec = importlib.util.spec_from_file_location("gsplat_cuda", so)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            sys.modules["gsplat.csrc"] = mod  # where gsplat looks for a prebuilt extension first
        try:
            import gsplat  # noqa: PLC0415
        except ImportError as exc:
            raise UserError(f"--backend gsplat needs the gsplat package ({exc}): pip install gsplat==1.5.3 "
                            "(it compiles its CUDA code on first use)") from exc
        _gsplat = gsplat
    return _gsplat


class GaussianRasterizer(torch_rasterizer.GaussianRasterizer):
    """The PyTorch rasterizer's settings and markVisible, gsplat's rendering."""

    def forward(self, means3D, means2D, opacities, shs=None, colors_precomp=None, scales=None,
                rotations=None, cov3D_precomp=None, return_stats=False):
        if return_stats:
            raise UserError("--backend gsplat renders no per-Gaussian stats (accum_weights, area_proj, "
                            "area_max): use --backend cuda or torch for distillation")
        if (shs is None) == (colors_precomp is None):
            raise ValueError("provide exactly one of shs or colors_precomp")
        s = self.raster_settings
        torch_rasterizer.check_image_size(s)  # gsplat 1.5.3 kills the process (SIGFPE) on an empty image
        gsplat = load_gsplat()
        W, H = s.image_width, s.image_height
        viewmat = s.viewmatrix.T.contiguous()  # ours is transposed (row vectors), gsplat's is world-to-camera
        # principal point at the centre: gsplat's pixel centres at +0.5 then put the 2D means where ours are
        fx, fy = W / (2 * s.tanfovx), H / (2 * s.tanfovy)
        K = torch.tensor([[fx, 0.0, W / 2], [0.0, fy, H / 2], [0.0, 0.0, 1.0]], device=means3D.device)
        z = (means3D @ viewmat[:3, :3].T)[:, 2] + viewmat[2, 3]
        if shs is not None:
            dirs = means3D - s.campos
            rgb = gsplat.spherical_harmonics(s.sh_degree, dirs, torch_rasterizer.sh_features(shs))
            rgb = torch.clamp_min(rgb + 0.5, 0.0)
        else:
            rgb = colors_precomp
        colors = torch.cat([rgb, 1.0 / z.clamp_min(NEAR_Z)[:, None]], 1)
        bg = torch.cat([s.bg, s.bg.new_zeros(1)])[None]
        if cov3D_precomp is not None:
            geom = dict(quats=None, scales=None, covars=torch_rasterizer.cov_from_upper(cov3D_precomp))
        else:
            geom = dict(quats=rotations, scales=scales * s.scale_modifier)
        out, _, meta = gsplat.rasterization(
            means3D, opacities=opacities.reshape(-1), colors=colors, viewmats=viewmat[None], Ks=K[None],
            width=W, height=H, near_plane=NEAR_Z, eps2d=0.3, packed=False, backgrounds=bg,
            rasterize_mode="antialiased" if s.antialiasing else "classic", **geom)
        m2d = meta["means2d"]
        if m2d.requires_grad and means2D.requires_grad:
            scale = torch.tensor([W / 2.0, H / 2.0], device=m2d.device)
            m2d.register_hook(lambda g: _accumulate(means2D, g[0] * scale))
        img = out[0].permute(2, 0, 1)
        return img[:3].contiguous(), meta["radii"][0].amax(-1).int(), img[3:].contiguous()


def _accumulate(means2D, g2):
    """Add the screen-space gradient to means2D.grad (means2D is a [P, 2+] leaf outside gsplat's graph)."""
    g = torch.zeros_like(means2D)
    g[:, :2] = g2
    means2D.grad = g if means2D.grad is None else means2D.grad + g
