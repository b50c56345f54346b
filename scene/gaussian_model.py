"""GaussianModel: raw parameters, activations, optimizer, and the standard 3DGS PLY format."""
import os

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyElementParseError, PlyHeaderParseError

from training.optim import SparseGaussianAdam, make_optimizer
from utils.errors import NonFiniteError, UserError
from utils.general_utils import exponential_lr, inverse_sigmoid, nonfinite_rows
from utils.knn import mean_sq_dist_3nn
from utils.sh_utils import RGB2SH
from utils.system_utils import atomic_path

PARAM_NAMES = ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")


def check_rows(rows, n):
    """Every per-Gaussian row tensor of ``rows`` has ``n`` entries (an AssertionError names the first that
    does not: an edit forgot it)."""
    for k, t in rows.items():
        assert t.shape[0] == n, f"strategy state {k!r} has {t.shape[0]} rows for {n} Gaussians"


def _ply_matrix(data):
    """A PLY element's rows as float32 [N, F] and {property: column}. A file of float32 properties only (every
    3DGS writer's) is copied in one pass; property by property, a 1.7M-row file took seconds (each property a
    strided pass over every row of the mapped file)."""
    fields = data.dtype.names
    native = np.dtype(np.float32)
    if data.dtype.itemsize == 4 * len(fields) and all(data.dtype.fields[f][0] == native for f in fields):
        matrix = np.array(data.view(np.float32).reshape(len(data), len(fields)))
    else:
        matrix = np.stack([np.asarray(data[f], dtype=np.float32) for f in fields], 1)
    return matrix, {f: i for i, f in enumerate(fields)}


def _ply_take(matrix, column, names):
    """The columns ``names`` of _ply_matrix's result (a view when they are adjacent and in order)."""
    idx = [column[n] for n in names]  # KeyError: a property the file lacks
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return matrix[:, idx[0]:idx[0] + len(idx)]
    return matrix[:, idx]


class GaussianModel:
    """Raw parameters (positions, SH, opacity logits, log-scales, quaternions) and their Adam state.

    Every edit that adds or removes Gaussians goes through :meth:`edit_params`, so parameters, optimizer
    moments and the strategy's per-Gaussian statistics (when the caller passes them) stay aligned.
    """

    def __init__(self, sh_degree=3, device="cpu"):
        self.max_sh_degree = sh_degree
        self.active_sh_degree = 0
        self.device = torch.device(device)
        self.params = {}
        self.optimizer = None
        self.spatial_lr_scale = 1.0
        self._xyz_lr = None

    # ---- activations -------------------------------------------------------------------------
    @property
    def num_points(self):
        return self.params["xyz"].shape[0] if self.params else 0

    @property
    def get_xyz(self):
        return self.params["xyz"]

    @property
    def get_scaling(self):
        return torch.exp(self.params["scaling"])

    @property
    def get_rotation(self):
        return torch.nn.functional.normalize(self.params["rotation"], dim=-1)

    @property
    def get_opacity(self):
        return torch.sigmoid(self.params["opacity"])

    @property
    def get_features(self):
        return torch.cat([self.params["f_dc"], self.params["f_rest"]], dim=1)  # [N, K, 3]

    def oneup_sh_degree(self):
        self.active_sh_degree = min(self.active_sh_degree + 1, self.max_sh_degree)

    # ---- construction ------------------------------------------------------------------------
    def _set(self, xyz, f_dc, f_rest, opacity, scaling, rotation):
        vals = dict(xyz=xyz, f_dc=f_dc, f_rest=f_rest, opacity=opacity, scaling=scaling, rotation=rotation)
        self.params = {k: torch.nn.Parameter(v.float().to(self.device).contiguous()) for k, v in vals.items()}

    def to(self, device):
        """Move the parameters (not the optimizer, which is dropped) to ``device``; returns self."""
        self.device = torch.device(device)
        self._set(*(self.params[k].detach() for k in PARAM_NAMES))
        self.optimizer = None
        return self

    def create_from_points(self, xyz, rgb, spatial_lr_scale=1.0):
        """Initialise from points [N, 3] with colours [N, 3] in [0, 1]: kNN scales, opacity 0.1."""
        # tensors (any device, e.g. the student's re-initialisation on the GPU) or array-likes
        xyz, rgb = (torch.as_tensor(v if torch.is_tensor(v) else np.asarray(v), dtype=torch.float32,
                                    device=self.device) for v in (xyz, rgb))
        xyz = xyz.clone()  # as_tensor shares float32 memory: training would move the caller's points in place
        n = xyz.shape[0]
        k = (self.max_sh_degree + 1) ** 2
        dist2 = torch.clamp_min(mean_sq_dist_3nn(xyz), 1e-7)
        rot = torch.zeros(n, 4, device=self.device)
        rot[:, 0] = 1.0
        self._set(xyz, RGB2SH(rgb)[:, None, :], torch.zeros(n, k - 1, 3, device=self.device),
                  inverse_sigmoid(torch.full((n, 1), 0.1, device=self.device)),
                  torch.log(torch.sqrt(dist2))[:, None].repeat(1, 3), rot)
        self.spatial_lr_scale = float(spatial_lr_scale)

    # ---- optimisation ------------------------------------------------------------------------
    def training_setup(self, opt):
        lrs = dict(xyz=opt.position_lr_init * self.spatial_lr_scale, f_dc=opt.feature_lr,
                   f_rest=opt.feature_lr / 20.0, opacity=opt.opacity_lr, scaling=opt.scaling_lr,
                   rotation=opt.rotation_lr)
        groups = [{"params": [self.params[k]], "lr": lrs[k], "name": k} for k in PARAM_NAMES]
        self.optimizer = make_optimizer(groups, opt.optimizer_type, self.device)
        self._xyz_lr = exponential_lr(opt.position_lr_init * self.spatial_lr_scale,
                                      opt.position_lr_final * self.spatial_lr_scale,
                                      opt.position_lr_max_steps if opt.position_lr_max_steps is not None
                                      else opt.iterations)

    def optimizer_step(self, visible):
        """One optimizer step (``visible`` [N] bool: Gaussians seen in this step's views), then clear grads."""
        if isinstance(self.optimizer, SparseGaussianAdam):
            self.optimizer.step(visible)
        else:
            self.optimizer.step()
        for p in self.params.values():  # zero_grad(set_to_none=True) without the optimizer's hook machinery
            p.grad = None

    def position_lr(self):
        """The position learning rate the optimizer holds now (update_learning_rate's last)."""
        return next(g["lr"] for g in self.optimizer.param_groups if g["name"] == "xyz")

    def update_learning_rate(self, iteration):
        for g in self.optimizer.param_groups:
            if g["name"] == "xyz":
                g["lr"] = self._xyz_lr(iteration)
                return g["lr"]

    def edit_params(self, fn, state_fn=None, rows=None, row_fn=None):
        """Replace every parameter p by fn(name, p), its Adam moments by state_fn(name, m) and, in the same call,
        every per-Gaussian row tensor of ``rows`` (the strategy state the loop holds, edited in place) by
        row_fn(t), so parameters, optimizer state and statistics never disagree on the Gaussians.

        ``state_fn`` defaults to ``fn``; to append Gaussians, pass a state_fn that appends zeros. An edit that
        changes the count needs ``row_fn`` when ``rows`` is given; afterwards every row must have one entry per
        Gaussian (a mismatch is a bug, never reset).
        """
        state_fn = state_fn or fn
        if rows is not None:
            check_rows(rows, self.num_points)
        for k in PARAM_NAMES:
            old = self.params[k]
            new = torch.nn.Parameter(fn(k, old.detach()).contiguous())
            if self.optimizer is not None:
                group = next(g for g in self.optimizer.param_groups if g["name"] == k)
                st = self.optimizer.state.pop(old, None)
                if st:
                    st["exp_avg"] = state_fn(k, st["exp_avg"])
                    st["exp_avg_sq"] = state_fn(k, st["exp_avg_sq"])
                    self.optimizer.state[new] = st
                group["params"][0] = new
            self.params[k] = new
        if rows is not None:
            for k in rows if row_fn is not None else ():
                rows[k] = row_fn(rows[k])
            check_rows(rows, self.num_points)

    def prune(self, remove_mask, rows=None):
        """Remove the Gaussians of ``remove_mask`` [N] bool, with their Adam moments and their ``rows``."""
        keep = ~remove_mask
        self.edit_params(lambda k, t: t[keep], rows=rows, row_fn=lambda t: t[keep])

    def append(self, new_values, rows=None):
        """Add Gaussians given raw values for every parameter name; their Adam moments and ``rows`` start at
        zero."""
        n_new = new_values["xyz"].shape[0]
        self.edit_params(lambda k, t: torch.cat([t, new_values[k].to(t.dtype)], 0),
                         lambda k, t: torch.cat([t, torch.zeros_like(new_values[k], dtype=t.dtype)], 0),
                         rows, lambda t: torch.cat([t, t.new_zeros((n_new, *t.shape[1:]))], 0))

    def replace(self, keep, new_values, rows=None):
        """Keep the Gaussians ``keep`` (an index or [N] bool) with new raw values for every parameter: their Adam
        moments and ``rows`` follow them (the student's re-initialisation)."""
        self.edit_params(lambda k, t: new_values[k].to(t.dtype), lambda k, t: t[keep], rows,
                         lambda t: t[keep])

    def reset_to(self, new_values, rows=None):
        """Replace every Gaussian by those of ``new_values`` (raw values for every parameter name, any count): Adam
        moments and ``rows`` start at zero (the student's depth re-initialisation)."""
        n = new_values["xyz"].shape[0]
        self.edit_params(lambda k, t: new_values[k].to(t.dtype),
                         lambda k, t: torch.zeros_like(new_values[k], dtype=t.dtype), rows,
                         lambda t: t.new_zeros((n, *t.shape[1:])))

    @torch.no_grad()
    def overwrite_rows(self, index, new_values, rows=None):
        """Write ``new_values`` (raw values for every parameter name, one row per entry of ``index``) into the rows
        ``index`` in place, the count unchanged: their Adam moments and ``rows`` (the strategy state) restart at
        zero, the tensors stay the same objects (a graphed step's graph stays valid)."""
        if rows is not None:
            check_rows(rows, self.num_points)
        for k in PARAM_NAMES:
            p = self.params[k]
            p.data[index] = new_values[k].to(p.dtype)
            st = self.optimizer.state.get(p) if self.optimizer is not None else None
            for m in ("exp_avg", "exp_avg_sq"):
                if st and torch.is_tensor(st.get(m)):
                    st[m][index] = 0
        for t in (rows or {}).values():
            t[index] = 0

    def restart_optimizer(self, opt, iteration):
        """A new optimizer (no Adam state) at ``iteration``'s learning rates, after an edit whose survivors should
        not keep their moments (the student's prunes, as the reference)."""
        self.training_setup(opt)
        self.update_learning_rate(iteration)

    def set_param(self, name, value, reset_state=True):
        """Overwrite one parameter's values (same shape); optionally zero its Adam moments."""
        def fn(k, t):
            return value.to(t.dtype) if k == name else t

        def sfn(k, t):
            return torch.zeros_like(t) if (k == name and reset_state) else t
        self.edit_params(fn, sfn)

    def reset_opacity(self, ceiling=0.01):
        capped = torch.minimum(self.get_opacity, torch.full_like(self.get_opacity, ceiling))
        self.set_param("opacity", inverse_sigmoid(capped))

    # ---- PLY ---------------------------------------------------------------------------------
    def _attribute_names(self):
        names = ["x", "y", "z", "nx", "ny", "nz"]
        names += [f"f_dc_{i}" for i in range(3)]
        names += [f"f_rest_{i}" for i in range(self.params["f_rest"].shape[1] * 3)]
        names += ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
        return names

    def nonfinite_summary(self):
        """None when every parameter is finite, else 'k of n Gaussians (xyz, scaling)': what is not (read only
        when the divergence guard fires)."""
        rows, names = nonfinite_rows(self.params)
        return f"{int(rows.sum())} of {self.num_points} Gaussians ({', '.join(names)})" if rows.any() else None

    def save_ply(self, path):
        p = {k: v.detach().cpu().float().numpy() for k, v in self.params.items()}
        bad = [k for k, v in p.items() if not np.isfinite(v).all()]
        if bad:  # never write a PLY that no viewer can use
            raise NonFiniteError(f"refusing to write {path}: the Gaussians' {', '.join(bad)} hold NaN or infinite "
                                 f"values (the training diverged: lower the learning rates or loss weights)")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        n = p["xyz"].shape[0]
        # PLY stores SH channel-major per Gaussian (f_rest_0..14 = red, ...), as graphdeco
        f_dc = p["f_dc"].transpose(0, 2, 1).reshape(n, -1)
        f_rest = p["f_rest"].transpose(0, 2, 1).reshape(n, -1)
        attrs = np.concatenate([p["xyz"], np.zeros_like(p["xyz"]), f_dc, f_rest, p["opacity"], p["scaling"],
                                p["rotation"]], axis=1)
        dtype = [(name, "f4") for name in self._attribute_names()]
        elements = np.ascontiguousarray(attrs, dtype=np.float32).view(dtype).reshape(n)
        with atomic_path(path) as tmp:
            PlyData([PlyElement.describe(elements, "vertex")]).write(tmp)

    def load_ply(self, path):
        try:
            v = PlyData.read(path)["vertex"]
            m, col = _ply_matrix(v.data)
            rest = sorted([n for n in col if n.startswith("f_rest_")], key=lambda s: int(s.split("_")[-1]))
            n, k_rest = m.shape[0], len(rest) // 3
            take = lambda names: _ply_take(m, col, names)  # noqa: E731
            # f_rest: the file is channel-major per Gaussian (f_rest_0..K-1 = red, ...), the parameter [N, K, 3]
            f_rest = (take(rest[:3 * k_rest]) if rest else m[:, :0]).reshape(n, 3, k_rest).transpose(0, 2, 1)
            arrays = dict(xyz=take(["x", "y", "z"]), f_dc=take([f"f_dc_{i}" for i in range(3)]).reshape(n, 1, 3),
                          f_rest=f_rest, opacity=take(["opacity"]), scaling=take([f"scale_{i}" for i in range(3)]),
                          rotation=take([f"rot_{i}" for i in range(4)]))
        except (OSError, ValueError, KeyError, IndexError, PlyHeaderParseError, PlyElementParseError) as exc:
            raise UserError(f"cannot read Gaussians from {path} ({exc.__class__.__name__}: {exc}); "
                            f"is it a 3DGS point_cloud.ply?")
        if not all(np.isfinite(a).all() for a in arrays.values()):
            rows, bad = nonfinite_rows(arrays)
            raise NonFiniteError(f"{path} holds {int(rows.sum())} of {n} Gaussians with NaN or infinite values (in "
                                 f"{', '.join(bad)}); it cannot be rendered: re-train the model")
        degree = int(round(np.sqrt(k_rest + 1))) - 1
        if (degree + 1) ** 2 != k_rest + 1 or len(rest) != 3 * k_rest:
            raise UserError(f"{path} has {len(rest)} f_rest values per Gaussian, not an SH layout")
        self.max_sh_degree = degree
        self.active_sh_degree = degree
        self._set(*(torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in
                    ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")))
        return self
