"""The models of a train.py run and what the run recorded about them (for view.py and the report).

A distillation run (``--num_models 4``) holds ``point_cloud_<i>/iteration_<N>/point_cloud.ply`` for
i = 0 G_perb, 1 G_drop, 2 G_std, 3 student, each with a ``training_log.json``, and ``distill.json`` with the
final metrics of every model; a vanilla run holds ``point_cloud/iteration_<N>/point_cloud.ply`` with its
``training_log.json``; metrics.py adds ``results.json`` (PSNR of the renders in ``test/ours_<N>``).
This module only reads JSON and PLY headers: no torch.
"""
import json
import os
import re
from dataclasses import dataclass, field

from utils.errors import UserError
from utils.splats import ply_vertex_count
from utils.system_utils import saved_iterations

MODEL_NAMES = ("G_perb", "G_drop", "G_std", "student")  # as distill.roles.MODEL_NAMES (which imports torch)
SUMMARY_NAME = "distill.json"
LOG_NAME = "training_log.json"


def role_name(index):
    if index is None:
        return "model"
    return MODEL_NAMES[index] if 0 <= index < len(MODEL_NAMES) else f"model_{index}"


def renders_name(iteration, index=None):
    """render.py's folder (and video) name for the model of index ``index`` (None: a vanilla run) at ``iteration``:
    ``ours_<it>`` for a vanilla run and for the student, as the reference writes them; a teacher's carries its role,
    ``ours_<it>_G_std``, so that a teacher and a student of the same iteration never overwrite each other."""
    if index is None or role_name(index) == "student":
        return f"ours_{iteration}"
    return f"ours_{iteration}_{role_name(index)}"


def read_json(path):
    """The JSON object in ``path``, or None when the file is missing or not valid JSON."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def model_folders(model_path):
    """("distill" | "vanilla", [(index or None, folder)]): point_cloud_<i> folders when there are any,
    else the plain point_cloud folder. UserError when the run folder is missing or holds neither."""
    if not os.path.isdir(model_path):
        raise UserError(f"model folder {model_path} (-m) does not exist")
    indexed = []
    for name in os.listdir(model_path):
        m = re.fullmatch(r"point_cloud_(\d+)", name)
        if m and os.path.isdir(os.path.join(model_path, name)):
            indexed.append((int(m.group(1)), os.path.join(model_path, name)))
    if indexed:
        return "distill", sorted(indexed)
    plain = os.path.join(model_path, "point_cloud")
    if os.path.isdir(plain):
        return "vanilla", [(None, plain)]
    raise UserError(f"{model_path} holds no trained model (no point_cloud or point_cloud_<i> folder): train one "
                    f"with `python train.py -s <scene> -m {model_path}`")


@dataclass
class RunModel:
    name: str  # G_perb, G_drop, G_std, student, or "model" for a vanilla run
    index: object  # distillation index, None for a vanilla run
    folder: str
    ply: str
    iteration: int
    gaussians: int  # from the PLY header
    ply_bytes: int
    psnr: object = None  # float or None
    psnr_note: str = ""  # where the PSNR comes from
    log: dict = field(default_factory=dict)  # training_log.json


def _psnr_from_history(log, iteration):
    for h in reversed((log or {}).get("history") or []):
        if h.get("iteration") == iteration and h.get("psnr") is not None:
            return float(h["psnr"]), f"{h.get('split', 'test')} views, {LOG_NAME}"
    return None


def _find_psnr(model_path, kind, name, iteration, log):
    """(psnr, note) for the model at ``iteration``: distill.json (distillation), results.json (vanilla, from
    metrics.py), then the training log's evaluation at that iteration; (None, reason) when none has it."""
    if kind == "distill":
        summary = read_json(os.path.join(model_path, SUMMARY_NAME)) or {}
        entry = (summary.get("models") or {}).get(name) or {}
        # (each entry's own last iteration: the student's differs with --student_steps_scale)
        if entry.get("psnr") is not None and entry.get("iterations", summary.get("iterations")) == iteration:
            return float(entry["psnr"]), f"{entry.get('split') or 'test'} views, {SUMMARY_NAME}"
    else:
        results = read_json(os.path.join(model_path, "results.json")) or {}
        entry = results.get(f"ours_{iteration}") or {}
        if entry.get("PSNR") is not None:
            return float(entry["PSNR"]), f"test renders, results.json (ours_{iteration})"
    found = _psnr_from_history(log, iteration)
    if found:
        return found
    return None, f"no evaluation recorded at iteration {iteration}"


def discover_models(model_path, iteration=-1, notes=None):
    """("distill" | "vanilla", [RunModel]) of the run in ``model_path``, each at ``iteration`` (-1: its latest
    saved one). Folders without that PLY are left out (said in ``notes``, a list, when given); UserError when no
    model has one."""
    kind, folders = model_folders(model_path)
    models, skipped = [], []
    for index, folder in folders:
        its = saved_iterations(folder, "point_cloud.ply")
        if not its or (iteration >= 0 and iteration not in its):
            skipped.append(f"{os.path.basename(folder)} (saved iterations: {', '.join(map(str, its)) or 'none'})")
            if notes is not None:
                notes.append(f"left out {skipped[-1]}")
            continue
        it = its[-1] if iteration < 0 else iteration
        ply = os.path.join(folder, f"iteration_{it}", "point_cloud.ply")
        name = role_name(index)
        log = read_json(os.path.join(folder, LOG_NAME)) or {}
        psnr, note = _find_psnr(model_path, kind, name, it, log)
        models.append(RunModel(name, index, folder, ply, it, ply_vertex_count(ply), os.path.getsize(ply),
                               psnr, note, log))
    if not models:
        what = f"iteration_{iteration}/point_cloud.ply" if iteration >= 0 else "saved iteration_<N>/point_cloud.ply"
        raise UserError(f"{model_path} has no {what} in any model folder: {'; '.join(skipped)}")
    return kind, models


def training_curves(model_path):
    """Per model of the run, what train.py recorded: [dict(name, history, counts, final_psnr, final_ssim,
    final_gaussians, split)] in model order. ``history``: the loop's evaluations (iteration, psnr, ssim,
    gaussians, split); ``counts``: [iteration, Gaussians] pairs (training_log.json's gaussian_counts).
    The final numbers come from distill.json when the run has it (the evaluation of the saved model)."""
    kind, folders = model_folders(model_path)
    summary = (read_json(os.path.join(model_path, SUMMARY_NAME)) or {}).get("models") or {}
    out = []
    for index, folder in folders:
        name = role_name(index)
        log = read_json(os.path.join(folder, LOG_NAME))
        final = summary.get(name) if kind == "distill" else None
        if log is None and final is None:
            continue
        log = log or {}
        final = final or log
        history = [h for h in log.get("history") or [] if h.get("psnr") is not None]
        out.append(dict(name=name, index=index, history=history, counts=log.get("gaussian_counts") or [],
                        final_psnr=final.get("psnr"), final_ssim=final.get("ssim"), final_lpips=final.get("lpips"),
                        final_gaussians=final.get("gaussians"), ply_mb=final.get("ply_mb"),
                        split=final.get("split") or (history[-1].get("split") if history else None)))
    return kind, out
