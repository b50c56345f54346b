#!/usr/bin/env python
"""Look at the models of a train.py run in a web browser (viser's Gaussian splat renderer; no GPU needed).

    python view.py -m <model> [--port 8080] [--host 127.0.0.1] [--max_splats 1000000] [--iteration N]
                   [-s <scene>] [--show NAME [NAME]]

Then open http://127.0.0.1:8080 (for a remote machine: `ssh -L 8080:127.0.0.1:8080 <machine>`, or
--host 0.0.0.0 on a trusted network). The panel lists the run's models (G_perb, G_drop, G_std and the
student of a distillation, or the one model of a vanilla run) with their Gaussian count, PLY size and PSNR;
shows one model, or a second one beside it (offset sideways); "Swap" exchanges the two, so switching
between models keeps your camera; "Camera" jumps to a training or test view of the scene (read from
<model>/cfg_args.json, or -s). The splats are drawn with their view-independent colour (the SH DC term).
At most --max_splats Gaussians are sent to the browser at once (split between the models shown): above
that, the most visible Gaussians (opacity x area) are kept, and the panel says so.
"""
import argparse
import errno
import os
import socket
import threading
import time

import numpy as np

from utils.errors import UserError, run_cli
from utils.run_models import discover_models, read_json
from utils.splats import length_unit, read_gaussians, to_splats, visibility_order

DEFAULT_MAX_SPLATS = 1_000_000  # 32 MB of splat data in the browser; sorting that on a laptop CPU takes ~0.1 s
NONE = "(none)"
MAX_FRUSTUMS = 400


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model_path", required=True, help="folder written by train.py")
    p.add_argument("-s", "--source_path", default=None,
                   help="scene folder for the camera list (default: the one saved in <model>/cfg_args.json)")
    p.add_argument("--iteration", type=int, default=-1, help="saved iteration to show; -1 = each model's latest")
    p.add_argument("--port", type=int, default=8080, help="port of the web page (0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--max_splats", type=int, default=DEFAULT_MAX_SPLATS,
                   help="most Gaussians sent to the browser at once, over the models shown; larger models are "
                        "subsampled to their most visible Gaussians")
    p.add_argument("--show", nargs="+", default=None, metavar="NAME",
                   help="model(s) shown at start: one, or two side by side (names as listed, e.g. student "
                        "G_std); default: the last model (the student)")
    return p


# ----------------------------------------------------------------------------------------------------------------
# input

class LoadedModel:
    """A run's model with its raw Gaussians; converts (and subsamples) on demand, caching the last result."""

    def __init__(self, info):
        self.info = info
        self.raw = read_gaussians(info.ply)
        self.count = len(self.raw["xyz"])
        self.unit = length_unit(self.raw["scale"])
        self._order = None
        self._cache = (None, None)

    def splats(self, limit):
        """(viewer arrays of at most ``limit`` Gaussians, how many)."""
        k = min(limit, self.count)
        if self._cache[0] != k:
            idx = None
            if k < self.count:
                if self._order is None:
                    self._order = visibility_order(self.raw)
                idx = np.sort(self._order[:k])
            self._cache = (k, to_splats(self.raw, idx, self.unit))
        return self._cache[1], k

    def robust_box(self):
        """(low, high) corners holding the central 96% of the centres along each axis."""
        xyz = self.raw["xyz"]
        if len(xyz) > 200_000:
            xyz = xyz[:: len(xyz) // 200_000]
        return np.percentile(xyz, 2, axis=0).astype(np.float64), np.percentile(xyz, 98, axis=0).astype(np.float64)


def load_cameras(model_path, source_override=None):
    """(train cameras, test cameras, white background, note): pose-only cameras of the run's scene. Never
    raises for a missing or unreadable scene: the note says why there are no cameras."""
    cfg = read_json(os.path.join(model_path, "cfg_args.json")) or {}
    white = bool(cfg.get("white_background", False))
    source = source_override or cfg.get("source_path")
    if not source:
        return [], [], white, (f"no scene: {model_path}/cfg_args.json names none; pass -s <scene> to list its "
                               f"cameras")
    if not os.path.isdir(source):
        return [], [], white, f"scene folder {source} is not reachable from here; pass -s <scene> to list its cameras"
    try:
        from scene.dataset_readers import read_blender_scene, read_colmap_scene  # imports torch: only when needed
        from arguments import ModelParams, saved_flags
        res = saved_flags(model_path, [ModelParams], cfg).get("resolution")  # earlier versions saved -1 for None
        if os.path.isdir(os.path.join(source, "sparse")):
            info = read_colmap_scene(source, cfg.get("images") or "images", bool(cfg.get("eval")), res,
                                     load_images=False)
        elif os.path.isfile(os.path.join(source, "transforms_train.json")):
            info = read_blender_scene(source, white, bool(cfg.get("eval")), res, num_random_points=1,
                                      load_images=False)
        else:
            return [], [], white, f"{source} is not a COLMAP or NeRF-synthetic scene; no cameras"
    except UserError as exc:
        return [], [], white, f"cannot read the cameras of {source}: {exc}"
    except Exception as exc:  # a viewer still shows the models when the scene is broken
        return [], [], white, f"cannot read the cameras of {source} ({exc.__class__.__name__}: {exc})"
    return list(info.train_cameras), list(info.test_cameras), white, (
        f"scene {source}: {len(info.train_cameras)} training and {len(info.test_cameras)} test cameras")


def camera_pose(cam):
    """(R camera-to-world [3, 3] with columns right, down, forward, centre [3]) of a scene Camera."""
    R = np.asarray(cam.R, dtype=np.float64)
    return R, -R @ np.asarray(cam.T, dtype=np.float64)


def mean_up(cameras):
    up = np.mean([-camera_pose(c)[0][:, 1] for c in cameras], axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-6 else None


def check_port(host, port):
    """UserError when ``host:port`` cannot be listened on (viser would silently take the next port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"--host {host} is not an address of this machine ({exc})")
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use (another viewer?): pass another --port, "
                                f"or --port 0 for any free one")
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})")


def check_show(show, names, model_path):
    """The --show list (default: the last model) after checking it names one or two models of the run."""
    show = list(show or [names[-1]])
    for n in show:
        if n not in names:
            raise UserError(f"--show {n}: no such model in {model_path}; its models: {', '.join(names)}")
    if len(show) > 2:
        raise UserError("--show takes one model, or two to see side by side")
    return show


def sentence(text):
    return text[:1].upper() + text[1:]


def fmt_bytes(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def stats_markdown(models, shown):
    """The model table (◀ marks the models shown) and where its numbers come from."""
    rows = ["| model | Gaussians | PLY | PSNR |", "|:--|--:|--:|--:|"]
    notes = {}  # note -> model names, so a run whose models agree gets one line
    for m in models:
        i = m.info
        mark = " ◀" if i.name in shown else ""
        psnr = f"{i.psnr:.2f}" if i.psnr is not None else "–"
        rows.append(f"| **{i.name}**{mark} | {i.gaussians:,} | {fmt_bytes(i.ply_bytes)} | {psnr} |")
        notes.setdefault(f"iteration {i.iteration}; PSNR: {i.psnr_note}", []).append(i.name)
    lines = [note if len(notes) == 1 else f"{', '.join(names)}: {note}" for note, names in notes.items()]
    return "\n".join(rows) + "\n\n" + "  \n".join(f"*{line}*" for line in lines)


# ----------------------------------------------------------------------------------------------------------------
# the viewer

class Viewer:
    def __init__(self, server, kind, models, train_cams, test_cams, white, scene_note, max_splats, show,
                 model_path):
        import viser.transforms as vtf

        self.vtf = vtf
        self.server, self.kind, self.models = server, kind, models
        self.by_name = {m.info.name: m for m in models}
        self.cameras = [("train", i, c) for i, c in enumerate(train_cams)] + \
                       [("test", i, c) for i, c in enumerate(test_cams)]
        self.max_splats = max_splats
        self.lock = threading.RLock()
        self.nodes = {}  # name -> (handle, count, offset tuple)
        self.frustums = None
        self._hold = False

        names = [m.info.name for m in models]
        show = check_show(show, names, model_path)
        # world frame: up from the training cameras, the side-by-side direction from the first one
        self.up = mean_up(train_cams) if train_cams else None
        primary = self.by_name[show[0]]
        lo, hi = primary.robust_box()
        self.centre, self.size = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) or 1.0
        up = self.up if self.up is not None else np.array([0.0, 0.0, 1.0])
        right = camera_pose(train_cams[0])[0][:, 0] if train_cams else np.array([1.0, 0.0, 0.0])
        right = right - (right @ up) * up
        if np.linalg.norm(right) < 1e-6:
            right = np.cross(up, np.eye(3)[int(np.argmin(np.abs(up)))])
        self.side = right / np.linalg.norm(right)
        width = float(np.abs(hi - lo) @ np.abs(self.side))  # of the box, along the side direction
        default_offset = 1.3 * width if width > 0 else self.size  # centres 98% of the Gaussians apart, plus a gap
        self.start_shift = self.side * default_offset / 2 if len(show) > 1 else np.zeros(3)  # frame both

        if self.up is not None:
            server.scene.set_up_direction(tuple(float(v) for v in self.up))
        bg = 255 if white else 0
        server.scene.set_background_image(np.full((8, 8, 3), bg, dtype=np.uint8), format="png")
        server.gui.configure_theme(control_width="medium", show_share_button=False)
        server.gui.main_panel.dock_right()  # beside the canvas, not over the models
        self._initial_camera(train_cams)

        title = "Distillation run" if kind == "distill" else "Vanilla 3DGS run"
        server.gui.add_markdown(f"**{title}** `{os.path.abspath(model_path)}`: {len(models)} model"
                                f"{'s' if len(models) != 1 else ''}")
        with server.gui.add_folder("Models"):
            self.gui_a = server.gui.add_dropdown("Model", names, initial_value=show[0],
                                                 hint="the model shown (switching keeps your camera)")
            self.gui_b = server.gui.add_dropdown("Beside it", [NONE] + names,
                                                 initial_value=show[1] if len(show) > 1 else NONE,
                                                 hint="a second model, shown offset sideways")
            self.gui_swap = server.gui.add_button("Swap the two", hint="exchange the model and the one beside it")
            self.gui_offset = server.gui.add_number("Offset", initial_value=round(default_offset, 4),
                                                    step=round(default_offset / 20, 4) or 0.01,
                                                    hint="distance between the two models (scene units)")
            self.gui_note = server.gui.add_markdown("")
            self.gui_stats = server.gui.add_markdown(stats_markdown(models, show))
        with server.gui.add_folder("Cameras"):
            server.gui.add_markdown(scene_note)
            labels = [f"{split} {i}: {c.image_name}" for split, i, c in self.cameras]
            self.camera_labels = labels
            self.gui_cam = server.gui.add_dropdown("Camera", labels or ["(no cameras)"], disabled=not labels,
                                                   hint="jump to this view (keeps the models shown)")
            self.gui_go = server.gui.add_button("Go to camera", disabled=not labels)
            self.gui_frustums = server.gui.add_checkbox("Show cameras", False, disabled=not labels,
                                                        hint="draw the cameras; click one to jump to it")

        self.gui_a.on_update(lambda _: self.refresh())
        self.gui_b.on_update(lambda _: self.refresh())
        self.gui_offset.on_update(lambda _: self.refresh())
        self.gui_swap.on_click(lambda _: self.swap())
        self.gui_cam.on_update(lambda e: self.jump(e.client, self.gui_cam.value))
        self.gui_go.on_click(lambda e: self.jump(e.client, self.gui_cam.value))
        self.gui_frustums.on_update(lambda _: self.show_frustums(self.gui_frustums.value))
        self.refresh()

    # ---- camera ------------------------------------------------------------------------------------------------
    def _look_distance(self, centre, forward):
        return max(float((self.centre - centre) @ forward), 0.05 * self.size)

    def _initial_camera(self, train_cams):
        ic = self.server.initial_camera
        ic.far = max(1000.0, 20 * self.size)
        ic.near = max(1e-4, 1e-4 * self.size)
        if train_cams:
            R, c = camera_pose(train_cams[0])
            ic.position = tuple(c + self.start_shift)
            ic.look_at = tuple(c + self.start_shift + R[:, 2] * self._look_distance(c, R[:, 2]))
            ic.up = tuple(-R[:, 1])
            ic.fov = float(train_cams[0].FoVy)
        else:
            ic.look_at = tuple(self.centre + self.start_shift)
            ic.position = tuple(self.centre + self.start_shift + self.size * np.array([0.0, -1.0, 0.6]))
            ic.up = (0.0, 0.0, 1.0)

    def jump(self, client, label):
        if client is None or label not in self.camera_labels:
            return
        _, _, cam = self.cameras[self.camera_labels.index(label)]
        R, c = camera_pose(cam)
        with client.atomic():
            client.camera.fov = float(cam.FoVy)
            client.camera.wxyz = self.vtf.SO3.from_matrix(R).wxyz
            client.camera.position = c
            client.camera.look_at = c + R[:, 2] * self._look_distance(c, R[:, 2])

    def show_frustums(self, visible):
        with self.lock:
            if self.frustums is None and visible:
                step = max(1, len(self.cameras) // MAX_FRUSTUMS)
                self.frustums = []
                centres = np.array([camera_pose(c)[1] for _, _, c in self.cameras])
                spread = float(np.linalg.norm(centres.max(0) - centres.min(0))) or self.size
                for k in range(0, len(self.cameras), step):
                    split, i, cam = self.cameras[k]
                    R, c = camera_pose(cam)
                    h = self.server.scene.add_camera_frustum(
                        f"/cameras/{split}_{i:05d}", fov=float(cam.FoVy),
                        aspect=cam.image_width / max(1, cam.image_height), scale=0.03 * spread,
                        thickness=0.002 * spread, color=(40, 90, 220) if split == "train" else (230, 120, 20),
                        wxyz=self.vtf.SO3.from_matrix(R).wxyz, position=c)
                    label = self.camera_labels[k]
                    h.on_click(lambda e, label=label: self.jump(e.client, label))
                    self.frustums.append(h)
            for h in self.frustums or []:
                h.visible = visible

    # ---- models ------------------------------------------------------------------------------------------------
    def shown(self):
        a, b = self.gui_a.value, self.gui_b.value
        return [a] + ([b] if b not in (NONE, a) else [])

    def swap(self):
        with self.lock:
            a, b = self.gui_a.value, self.gui_b.value
            if b == NONE or b == a:
                return
            self._hold = True  # an assignment calls refresh at once: wait for both
            try:
                self.gui_a.value, self.gui_b.value = b, a
            finally:
                self._hold = False
            self.refresh()

    def refresh(self):
        with self.lock:
            if self._hold:
                return
            shown = self.shown()
            self.gui_offset.visible = len(shown) > 1
            budget = max(1, self.max_splats // len(shown))
            offsets = {shown[0]: (0.0, 0.0, 0.0)}
            if len(shown) > 1:
                offsets[shown[1]] = tuple(float(v) for v in self.side * float(self.gui_offset.value))
            for name in list(self.nodes):
                if name not in offsets:
                    self.nodes.pop(name)[0].remove()
            notes = []
            for name in shown:
                model = self.by_name[name]
                k = min(budget, model.count)
                node = self.nodes.get(name)
                if node is None or node[1] != k:
                    if node is not None:
                        node[0].remove()
                    self.gui_note.content = f"*Loading {name} ({k:,} Gaussians)…*"
                    arrays, k = model.splats(budget)
                    handle = self.server.scene.add_gaussian_splats(
                        f"/splats/{name}", **arrays, scale=model.unit, position=offsets[name])
                    node = self.nodes[name] = (handle, k, offsets[name])
                elif node[2] != offsets[name]:
                    node[0].position = offsets[name]
                    self.nodes[name] = (node[0], k, offsets[name])
                if k < model.count:
                    notes.append(f"**{name}: showing {k:,} of {model.count:,} Gaussians** (the most visible: "
                                 f"opacity × area; --max_splats {self.max_splats:,} over the models shown)")
            self.gui_note.content = "  \n".join(notes)
            self.gui_note.visible = bool(notes)
            self.gui_stats.content = stats_markdown(self.models, shown)


# ----------------------------------------------------------------------------------------------------------------

def start(argv=None):
    """Check the input, load the models, start the server; returns (server, viewer, url)."""
    args = build_parser().parse_args(argv)
    if args.max_splats < 1:
        raise UserError(f"--max_splats {args.max_splats} must be at least 1")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} must be between 0 and 65535")
    notes = []
    kind, infos = discover_models(args.model_path, args.iteration, notes)
    for note in notes:
        print(sentence(note), flush=True)
    check_show(args.show, [i.name for i in infos], args.model_path)
    models = []
    for info in infos:
        print(f"Loading {info.name} ({info.gaussians:,} Gaussians, {fmt_bytes(info.ply_bytes)}) from {info.ply}",
              flush=True)
        models.append(LoadedModel(info))
    train_cams, test_cams, white, scene_note = load_cameras(args.model_path, args.source_path)
    print(sentence(scene_note), flush=True)
    check_port(args.host, args.port)
    try:
        import viser
    except ImportError:
        raise UserError("view.py needs the viser package: pip install viser (it is in requirements.txt)")
    server = viser.ViserServer(host=args.host, port=args.port, label="Distilled-3DGS viewer", verbose=False)
    try:
        if args.port and server.get_port() != args.port:  # taken between the check and the server's bind
            raise UserError(f"port {args.port} on {args.host} is in use: pass another --port, or --port 0")
        viewer = Viewer(server, kind, models, train_cams, test_cams, white, scene_note, args.max_splats,
                        args.show, args.model_path)
    except BaseException:
        server.stop()
        raise
    url = f"http://{args.host}:{server.get_port()}"
    return server, viewer, url


def main(argv=None):
    server, _, url = start(argv)
    print(f"Viewer running at {url} (Ctrl+C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Stopping the viewer", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    run_cli(main)
