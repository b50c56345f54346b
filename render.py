#!/usr/bin/env python
"""Render a trained model's train/test views (and optionally a fly-through video).

    python render.py -m <model> [-s <scene>] [--iteration N] [--itrain N] [--skip_train] [--skip_test]
                     [--quiet] [--video] [--video_frames 240] [--fps 30] [--compare]

Scene settings (source path, resolution, white background, --eval) are read back from
<model>/cfg_args.json unless given here. Writes

    <model>/{train,test}/ours_<it>/renders/00000.png ...   renders, in camera order
    <model>/{train,test}/ours_<it>/gt/00000.png ...        the matching ground-truth images
    <model>/video/ours_<it>.mp4                             with --video (MJPG .avi if mp4 is unavailable)
    <model>/test/ours_<it>/compare/00000.png ...            with --compare (distillation runs): per test view
                                                            student | G_std | ground truth | |student - GT|

A single-model run is read from <model>/point_cloud/iteration_<it>/; a distillation run
(--num_models 4) from <model>/point_cloud_<i>/iteration_<it>/, where --itrain picks i
(0 = G_perb, 1 = G_drop, 2 = G_std, 3 = student; default: the highest present, i.e. the student).
A teacher's renders and video carry its role, ours_<it>_G_std etc., so that they never overwrite the
student's ours_<it> when both ended at the same iteration.
"""
import argparse
import os
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

from arguments import FlagGroup, FlagParser, ModelParams, PipelineParams, load_config, saved_flags
from arguments.fields import at_least, flag, positive
from gaussian_renderer import background, pick_backend, render
from scene import Scene
from scene.gaussian_model import GaussianModel
from utils.camera_path import camera_path
from utils.errors import UserError, run_cli
from utils.image_utils import to_uint8
from utils.system_utils import atomic_path, saved_iterations
from distill.pipeline import unscaled_final_iteration
from utils.run_models import model_folders, renders_name, role_name


@dataclass
class RenderParams(FlagGroup):
    """render.py's own flags (never taken from the training run's cfg_args.json)."""
    title = "Rendering outputs"
    iteration: Optional[int] = flag(None, "saved iteration to render", check=at_least(0), legacy_none=-1,
                                    none="the latest one of the chosen model")
    itrain: Optional[int] = flag(None, "distillation model to render: point_cloud_<N> (0 G_perb, 1 G_drop, 2 G_std, "
                                       "3 student)", check=at_least(0, " (a model index)"),
                                 none="the highest present, or point_cloud for a single-model run")
    skip_train: bool = flag(False, "do not render the training views")
    skip_test: bool = flag(False, "do not render the test views")
    quiet: bool = flag(False, "no progress bars")
    video: bool = flag(False, "also render a fly-through video along a smooth path built from the training cameras")
    video_frames: int = flag(240, "number of video frames", check=at_least(1))
    fps: int = flag(30, "video frame rate", check=positive())
    compare: bool = flag(False, "distillation runs: also write test/ours_<it>/compare/<view>.png, the student | "
                                "G_std | ground truth | the student's error (|student - GT| x4) side by side, per "
                                "test view")


SAVED_GROUPS = (ModelParams, PipelineParams)  # what the training run's cfg_args.json supplies


def build_parser():
    return FlagParser(SAVED_GROUPS + (RenderParams,), description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)


def read_flags(argv=None):
    """(dataset, pipe, own flags): defaults < the model's cfg_args.json < the flags given here."""
    parser = build_parser()
    given = parser.given(argv)
    model_path = given.get("model_path")
    if not model_path:
        raise UserError("-m/--model_path is required: the folder train.py wrote")
    if not os.path.isdir(model_path):
        raise UserError(f"model folder {model_path} (-m) does not exist")
    return parser.build(given, saved_flags(model_path, SAVED_GROUPS))


# ----------------------------------------------------------------------------------------------------------------
# which model / iteration

def _describe(folders):
    return ", ".join(os.path.basename(folder) for _, folder in folders)


def resolve_checkpoint(model_path, itrain=None, iteration=None):
    """(ply path, iteration, label, index) of the model to render (index None for a vanilla run); a UserError
    lists what exists otherwise."""
    kind, folders = model_folders(model_path)
    indexed = dict(folders) if kind == "distill" else {}
    if itrain is not None and itrain not in indexed:
        raise UserError(f"{model_path} has no point_cloud_{itrain} (--itrain {itrain}); found: "
                        f"{_describe(folders)}" + ("; omit --itrain for a single-model run" if not indexed else ""))
    index = itrain if itrain is not None else max(indexed) if indexed else None
    folder = indexed[index] if index is not None else folders[0][1]
    label = f"point_cloud_{index} ({role_name(index)})" if index is not None else "point_cloud"
    its = saved_iterations(folder, "point_cloud.ply")
    if iteration is None:
        if not its:
            raise UserError(f"{folder} has no saved iteration_<N>/point_cloud.ply")
        iteration = max(its)
    elif iteration not in its:
        raise UserError(f"{folder} has no iteration_{iteration}/point_cloud.ply; saved iterations: "
                        f"{', '.join(map(str, its)) if its else 'none'} (without --iteration: the latest)")
    return os.path.join(folder, f"iteration_{iteration}", "point_cloud.ply"), iteration, label, index


def compare_checkpoints(model_path, iteration=None):
    """(student ply, G_std ply, student iteration) for --compare; a UserError for a single-model run."""
    kind, folders = model_folders(model_path)
    indexed = dict(folders) if kind == "distill" else {}
    if 2 not in indexed or 3 not in indexed:
        raise UserError(f"--compare needs a distillation run (point_cloud_2 = G_std and point_cloud_3 = student, "
                        f"from train.py --num_models 4); {model_path} has {_describe(folders)}")
    student, it, _, _ = resolve_checkpoint(model_path, 3, iteration)
    std_its = saved_iterations(indexed[2], "point_cloud.ply")
    std, _, _, _ = resolve_checkpoint(model_path, 2, it if it in std_its else iteration)
    return student, std, it


def run_compare(compare, scene, dataset, pipe, bg, device, args):
    from utils.compare import write_compare

    student_ply, std_ply, iteration = compare
    cams = scene.getTestCameras()
    student = GaussianModel(dataset.sh_degree, device).load_ply(student_ply)
    std = GaussianModel(dataset.sh_degree, device).load_ply(std_ply)
    out_dir = os.path.join(dataset.model_path, "test", f"ours_{iteration}", "compare")
    n, ps, pt = write_compare(out_dir, cams, student, std, pipe, bg, write_png, quiet=args.quiet)
    print(f"compare: {n} test views, student {ps:.2f} dB, G_std {pt:.2f} dB (mean PSNR of the 8-bit renders) "
          f"-> {out_dir}")
    return out_dir


def run_last_iteration(model_path, student=False):
    """The last iteration of the run that wrote <model>/cfg_args.json (--iterations x --steps_scale, and for the
    ``student`` x --student_steps_scale plus its --student_tail), or None."""
    cfg = load_config(model_path)
    try:
        its, scale = int(cfg["iterations"]), float(cfg.get("steps_scale", 1.0))
        stretch = float(cfg.get("student_steps_scale", 1.0))  # (absent: a run from before the flag, 1)
        tail = float(cfg.get("student_tail") or 0)  # (absent: before the flag, no tail)
        if its > 0 and scale > 0 and stretch > 0:
            return unscaled_final_iteration(3 if student else 0, its, scale, stretch, tail)
    except (KeyError, TypeError, ValueError, OverflowError):
        pass
    return None


def prefer_run_iteration(model_path, ply, iteration):
    """Without --iteration: the model of the run in cfg_args.json, not a newer-numbered one an earlier, longer
    run left behind; says which iteration it renders when the two differ. Returns (ply, iteration)."""
    folder = os.path.dirname(os.path.dirname(ply))
    last = run_last_iteration(model_path, student=os.path.basename(folder) == "point_cloud_3")
    if last is None or last == iteration:
        return ply, iteration
    own = os.path.join(folder, f"iteration_{last}", "point_cloud.ply")
    if iteration > last and os.path.isfile(own):
        print(f"note: {folder} also holds iteration_{iteration}, newer than the last iteration {last} of the run in "
              f"cfg_args.json (an earlier run left it): rendering iteration {last} (--iteration {iteration} renders "
              f"the other)")
        return own, last
    print(f"note: rendering iteration {iteration} of {folder}: the run in cfg_args.json ends at iteration {last}, "
          f"which it does not hold")
    return ply, iteration


# ----------------------------------------------------------------------------------------------------------------
# writing

def write_png(path, rgb):
    """Write an [H, W, 3] uint8 RGB image as PNG atomically."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise UserError(f"could not encode {path} as PNG")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())


def gt_uint8(camera):
    """The camera's ground-truth image as [H, W, 3] uint8."""
    if camera.image is None:
        raise UserError(f"camera {camera.image_name} has no image to write as ground truth")
    return camera.image[:3].permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def render_image(camera, model, pipe, bg):
    return render(camera, model, pipe, bg)["render"].clamp(0, 1)


def render_set(out_dir, split, cameras, model, pipe, bg, quiet=False):
    """Render ``cameras`` into <out_dir>/{renders,gt}/00000.png...; returns the number written."""
    renders_dir, gt_dir = os.path.join(out_dir, "renders"), os.path.join(out_dir, "gt")
    os.makedirs(renders_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    for idx, cam in enumerate(tqdm(cameras, desc=f"Rendering {split}", disable=quiet, leave=False)):
        img = render_image(cam, model, pipe, bg)
        name = f"{idx:05d}.png"
        write_png(os.path.join(renders_dir, name), to_uint8(img))
        write_png(os.path.join(gt_dir, name), gt_uint8(cam))
    return len(cameras)


def _open_writer(path, fourcc, fps, size):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
    if writer.isOpened():
        return writer
    writer.release()
    return None


def render_video(video_dir, name, cameras, model, pipe, bg, frames, fps, quiet=False):
    """Render a path of ``frames`` views along the training cameras into <name>.mp4 (or .avi)."""
    if fps <= 0:
        raise UserError(f"--fps {fps} must be positive")
    pts = model.get_xyz.detach()
    if pts.shape[0] > 20000:
        pts = pts[torch.randperm(pts.shape[0], device=pts.device)[:20000]]
    path = camera_path(cameras, frames, points=pts.cpu().numpy())
    size = (path[0].image_width, path[0].image_height)
    os.makedirs(video_dir, exist_ok=True)
    writer = None
    for ext, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
        final = os.path.join(video_dir, f"{name}{ext}")
        tmp = os.path.join(video_dir, f".{name}.partial{ext}")  # VideoWriter picks the container by name
        writer = _open_writer(tmp, fourcc, fps, size)
        if writer is not None:
            break
        print(f"OpenCV cannot write {fourcc} {ext} video here; trying the next format")
    if writer is None:
        raise UserError("OpenCV could not open a video writer for mp4v (.mp4) or MJPG (.avi); install an "
                        "opencv-python build with video support (FFmpeg)")
    try:
        for cam in tqdm(path, desc="Rendering video", disable=quiet, leave=False):
            frame = to_uint8(render_image(cam, model, pipe, bg))
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        writer.release()
        os.replace(tmp, final)
    finally:
        writer.release()
        if os.path.exists(tmp):
            os.remove(tmp)
    return final


# ----------------------------------------------------------------------------------------------------------------

def main(argv=None):
    dataset, pipe, args = read_flags(argv)
    ply, iteration, label, index = resolve_checkpoint(dataset.model_path, args.itrain, args.iteration)
    if args.iteration is None:
        ply, iteration = prefer_run_iteration(dataset.model_path, ply, iteration)
    name = renders_name(iteration, index)
    compare = compare_checkpoints(dataset.model_path, args.iteration) if args.compare else None
    if not dataset.source_path:
        raise UserError(f"no scene folder: pass -s <scene> (none saved in {dataset.model_path}/cfg_args.json)")
    if not os.path.isdir(dataset.source_path):
        raise UserError(f"scene folder {dataset.source_path} does not exist: pass -s <scene>")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pick_backend(device, pipe.backend)  # an unknown or unusable --backend stops here, before any output
    model = GaussianModel(dataset.sh_degree, device).load_ply(ply)
    scene = Scene(dataset)
    if compare and not scene.getTestCameras():
        raise UserError("--compare needs test views: this run was trained without --eval (pass --eval to hold out "
                        "every 8th image as train.py --eval does)")
    bg = background(dataset.white_background, device)
    print(f"Rendering {label} at iteration {iteration} ({model.num_points} Gaussians, device {device})")

    written = {}
    for split, skip, cams in (("train", args.skip_train, scene.getTrainCameras()),
                              ("test", args.skip_test, scene.getTestCameras())):
        if skip:
            continue
        out_dir = os.path.join(dataset.model_path, split, name)
        if not cams:
            print(f"No {split} cameras" + (" (trained without --eval)" if split == "test" else "") + "; skipped")
            continue
        n = render_set(out_dir, split, cams, model, pipe, bg, quiet=args.quiet)
        written[split] = out_dir
        print(f"{split}: {n} views -> {out_dir}/{{renders,gt}}")
    if args.video:
        if not scene.getTrainCameras():
            raise UserError("--video needs training cameras to build its camera path")
        video = render_video(os.path.join(dataset.model_path, "video"), name, scene.getTrainCameras(), model,
                             pipe, bg, args.video_frames, args.fps, quiet=args.quiet)
        written["video"] = video
        print(f"video: {args.video_frames} frames at {args.fps} fps -> {video}")
    if compare:
        written["compare"] = run_compare(compare, scene, dataset, pipe, bg, device, args)
    return dict(iteration=iteration, ply=ply, outputs=written)


if __name__ == "__main__":
    run_cli(main)
