"""The four-model Distilled-3DGS run: G_perb, G_drop, G_std, then the student (in one process, or under torchrun:
the teachers spread over the ranks, the student data-parallel over all of them)."""
import json
import os
import sys
import time

import torch

from arguments import final_iteration, scaled_count
from distill import distributed
from distill.importance import gaussian_importance
from distill.novel_views import interpolated_cameras
from distill.roles import (MODEL_NAMES, DropoutRole, PerturbRole, StudentRole, fine_tune_schedule,
                           learns_novel_views, student_from_std, student_target, teacher_renders)
from distill.student_schedule import (check_student_target, stage_schedule, warn_auto_events_left_out,
                                      warn_events_past_the_end, warn_unused_reinit_flags)
from gaussian_renderer import background, render
from scene.gaussian_model import GaussianModel
from training import data_parallel
from training.loop import Role, evaluate, train_model
from utils.errors import UserError
from utils.general_utils import seed_all
from utils.lpips_utils import load_lpips
from utils.system_utils import saved_iterations, search_for_max_iteration, write_json

SUMMARY_NAME = "distill.json"


def model_dir(model_path, index):
    return os.path.join(model_path, f"point_cloud_{index}")


def load_trained(model_path, index, device, sh_degree, iteration=None):
    """Load model ``index`` at ``iteration`` (the run's last, so a longer or shorter earlier run's model is
    never taken for this one's; None: the last iteration it wrote); clear errors if missing or mismatched."""
    folder = model_dir(model_path, index)
    latest = search_for_max_iteration(folder)
    if latest is None:
        raise UserError(f"{MODEL_NAMES[index]} (model {index}) has no saved iteration in {folder}: train it "
                        f"first (use a --start of {index} or lower)")
    it = latest if iteration is None else iteration
    path = os.path.join(folder, f"iteration_{it}", "point_cloud.ply")
    if not os.path.isfile(path):
        saved = saved_iterations(folder, "point_cloud.ply")
        raise UserError(f"{MODEL_NAMES[index]} (model {index}) has no {path}: this run ends at iteration {it} "
                        f"(--iterations after --steps_scale) but {folder} holds iteration(s) "
                        f"{', '.join(map(str, saved)) or 'none'}; pass the --iterations/--steps_scale it was trained "
                        f"with, or train it again (use a --start of {index} or lower)")
    model = GaussianModel(sh_degree, device).load_ply(path)
    if model.max_sh_degree != sh_degree:
        raise UserError(f"{path} has SH degree {model.max_sh_degree} but this run uses --sh_degree {sh_degree}: "
                        f"re-train it or pass the same --sh_degree")
    return model, it


def _lpips_of(model, cameras, pipe, bg):
    net, reason = load_lpips(str(model.device))
    if net is None:
        return None, reason
    vals = []
    with torch.no_grad():
        for cam in cameras:
            img = render(cam, model, pipe, bg)["render"].clamp(0, 1)
            gt = cam.original_image(img.device)
            vals.append(float(net(img[None] * 2 - 1, gt[None] * 2 - 1).mean()))
    return sum(vals) / max(1, len(vals)), None


def final_metrics(model, scene, pipe, bg, history=(), final_iteration=None):
    """Test PSNR/SSIM/LPIPS of the trained model; PSNR/SSIM come from the training loop's last
    evaluation when it tested the final model, instead of rendering the test views again."""
    cams = scene.getTestCameras()
    last = history[-1] if history else None
    # (the count check: an edit after the loop's last evaluation, such as a prune, invalidates it)
    if last and last["split"] == "test" and last["iteration"] == final_iteration \
            and last["gaussians"] == model.num_points:
        res = last
    else:
        res = evaluate(model, cams, pipe, bg) if cams else None
    out = dict(split="test" if cams else None, psnr=None, ssim=None, lpips=None)
    if res:
        out.update(psnr=round(res["psnr"], 3), ssim=round(res["ssim"], 4))
        out["lpips"], reason = _lpips_of(model, cams, pipe, bg)
        if reason:
            out["lpips_note"] = reason
    return out


def print_table(summary):
    """One row per model; "stage s" is the model's whole stage (the student's includes its teachers' renders), or
    its training seconds in a summary from before stage times were kept."""
    head = f"{'model':<10}{'PSNR':>8}{'SSIM':>8}{'LPIPS':>8}{'Gaussians':>12}{'MB':>9}{'stage s':>9}{'peak GiB':>10}"
    print(head)
    print("-" * len(head))
    fmt = lambda v, f: (f.format(v) if v is not None else "-")  # noqa: E731
    for name in MODEL_NAMES:
        r = summary["models"].get(name)
        if r is None:
            continue
        print(f"{name:<10}{fmt(r.get('psnr'), '{:.2f}'):>8}{fmt(r.get('ssim'), '{:.4f}'):>8}"
              f"{fmt(r.get('lpips'), '{:.4f}'):>8}{r['gaussians']:>12}{r['ply_mb']:>9.2f}"
              f"{fmt(r.get('stage_seconds', r.get('train_seconds')), '{:.1f}'):>9}"
              f"{fmt(r.get('peak_memory_gib'), '{:.2f}'):>10}")
    if summary.get("total_seconds") is not None:
        print(f"total wall time {summary['total_seconds']:.1f} s")


def check_teachers(model_path, start, device, sh_degree, iteration):
    """Load the models before ``start`` (what --start K reuses) at the run's last iteration: a UserError
    names the first that is missing, mismatched or not finite. Called by train.py before it writes anything;
    returns them (run_distillation's ``reused``: read once)."""
    return [load_trained(model_path, i, device, sh_degree, iteration)[0] for i in range(start)]


def earlier_summary(path, start):
    """distill.json's entries of the models before ``start`` (kept when --start K resumes a run)."""
    if start == 0 or not os.path.isfile(path):
        return dict(models={})
    try:
        with open(path) as f:
            summary = json.load(f)
        models = summary["models"]
        if not isinstance(models, dict):
            raise TypeError("models is not a dictionary")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"warning: {path} is unreadable ({exc.__class__.__name__}: {exc}); it is rewritten without the "
              f"entries of the models before --start {start}", file=sys.stderr)
        return dict(models={})
    summary["models"] = {k: v for k, v in models.items() if k in MODEL_NAMES[:start]}
    return summary


def unscaled_final_iteration(index, iterations, steps_scale, student_steps_scale, student_tail=0.0):
    """final_iteration from the counts as given (cfg_args.json, or a command line before --steps_scale applies)."""
    return final_iteration(index, scaled_count(iterations, steps_scale), student_steps_scale, student_tail)


def _sfm_model(scene, dataset, device):
    """A model initialised from the scene's SfM points (every teacher, and the student with --student_init sfm)."""
    model = GaussianModel(dataset.sh_degree, device)
    model.create_from_points(scene.points, scene.colors, scene.cameras_extent)
    return model


class Teachers:
    """Where the student's teachers come from: the models this process trained, else their PLYs at the teachers'
    last iteration ``iteration`` (not the student's, which --student_steps_scale stretches)."""

    KEEP_ON_DEVICE = 10  # a trained teacher stays on the GPU when its free memory is this many times its size

    def __init__(self, iteration, reused=()):
        """``reused``: the models before --start K as check_teachers read them (held as trained ones: read once)."""
        self.iteration = iteration
        self.trained = {}
        # under torchrun with rank 0's student started before the other ranks' teachers end: the _DeferredJoin that
        # waits for them, called where the student first needs their renders (make_student_role)
        self.join = None
        for i, model in enumerate(reused):
            self.keep(i, model)

    def keep(self, index, model):
        """Hold a trained teacher for the student: on its GPU when there is room for it ten times over, else on the
        host. (The round trip through host memory moved 0.4 GB each way per bonsai teacher; on the H200 machines, VMs
        whose memory grows as it is used, 6.5 s of a 150 s pipeline lay between the stages.)"""
        dev = model.device
        model.to(dev)  # (drops the optimizer and its moments)
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # (what the stage freed counts as free below)
            if torch.cuda.mem_get_info(dev)[0] < self.KEEP_ON_DEVICE * self._bytes(model):
                model.to("cpu")
        self.trained[index] = model

    def gpu_bytes(self):
        """Bytes of the held teachers on a GPU: a later stage's peak GPU memory includes them, but they are not its
        own."""
        return sum(self._bytes(m) for m in self.trained.values() if m.device.type == "cuda")

    @staticmethod
    def _bytes(model):
        return sum(p.numel() * p.element_size() for p in model.params.values())

    def load(self, index, dataset, device):
        """Teacher ``index`` on ``device``: the held one, else read from its PLY and held from then on (the student's
        G_std is loaded before its targets are made, which load it again); make_student_role lets them go."""
        if index not in self.trained:
            self.trained[index] = load_trained(dataset.model_path, index, device, dataset.sh_degree,
                                               self.iteration)[0]
        return self.trained[index].to(device)


def _perturb_stage(scene, dataset, opt, pipe, dp, device, bg, teachers, sync=None):
    return _sfm_model(scene, dataset, device), PerturbRole(dp, opt, scene.cameras_extent)


def _dropout_stage(scene, dataset, opt, pipe, dp, device, bg, teachers, sync=None):
    return _sfm_model(scene, dataset, device), DropoutRole(dp)


def _std_stage(scene, dataset, opt, pipe, dp, device, bg, teachers, sync=None):
    return _sfm_model(scene, dataset, device), Role()


def _student_stage(scene, dataset, opt, pipe, dp, device, bg, teachers, sync=None):
    """The student: from the SfM points (made before its role, as the teachers'), or from G_std with
    --student_init std, whose fine-tuning position LR starts where G_std's ended (``opt`` is the student's copy)."""
    model = _sfm_model(scene, dataset, device) if dp.student_init == "sfm" else None
    if dp.student_init == "std":
        fine_tune_schedule(opt, dp)
    role, start = make_student_role(scene, dataset, opt, pipe, dp, device, bg, teachers, sync)
    if model is not None:
        role.thin_start(model)
    return (start if start is not None else model), role


# the four models in training order: name -> factory(scene, dataset, opt (the model's own copy), pipe, dp, device,
# bg, Teachers, data-parallel StepSync or None) -> (initial model, role)
STAGES = dict(zip(MODEL_NAMES, (_perturb_stage, _dropout_stage, _std_stage, _student_stage)))


def run_distillation(scene, dataset, opt, pipe, dp, device, tests, saves, ckpts, start_checkpoint=None,
                     quiet=False, seed=0, checkpoint_every_minutes=0.0, dist=None, given=(), reused=()):
    """Train models dp.start..3 (train.py checked the earlier ones with check_teachers). Each model seeds the
    random generators from (seed, its index) before it is made, so --start K reproduces the uninterrupted
    run's models K..3. distill.json is rewritten after every model.

    ``dist`` (a distributed.DistContext, under torchrun): this rank trains only its teachers (teacher_ranks; rank 0
    writes one that several ranks share); after a barrier rank 0 gathers their entries and writes distill.json;
    every rank trains the student from the teachers' PLYs, data-parallel (rank 0 writes it); the other ranks return
    None. With one view per step rank 0 alone trains the student, right after G_std (teacher_ranks puts G_std there
    and the other teachers on the other ranks): it joins the other ranks where a step first needs the teachers'
    renders (--distill_start, --novel_view_start; at its end if none does), so its photo-only phase overlaps
    their teachers. ``given``: the flag names of the command line (for the warning of flags this scene ignores);
    ``reused``: the models before dp.start as check_teachers read them (else the student reads their PLYs)."""
    path = os.path.join(dataset.model_path, SUMMARY_NAME)
    summary = earlier_summary(path, dp.start)
    summary["total_seconds"] = None
    if dp.start > 0 and os.path.isfile(path) and (dist is None or dist.is_writer):
        write_json(path, summary)  # (at once: the models from --start on are gone from disk, so go their entries)
    bg = background(dataset.white_background, device)
    t_all = time.time()
    if dist is None or dist.is_writer:
        warn_events_past_the_end(opt, dp)
        warn_auto_events_left_out(opt, dp, scene.random_start)
        warn_unused_reinit_flags(dp, scene.random_start, given)
    # (the student reuses the teachers this process trained or checked instead of reading their PLYs again)
    teachers = Teachers(opt.iterations, reused)
    if dist is not None:
        distributed.test_fail_hook(dist)
    plan = dist.teacher_ranks(dp.start, opt.views_per_step) if dist is not None else {}
    # torchrun with one view per step: rank 0 alone trains the student, from right after G_std (teacher_ranks)
    early = dist is not None and dp.start < 3 and data_parallel.on_rank0_alone(opt.views_per_step)
    if dist is not None and dist.is_writer:
        where = lambda ranks: (f"rank {ranks[0]}" if len(ranks) == 1  # noqa: E731
                               else f"ranks 0-{len(ranks) - 1} (data-parallel)")
        print("torchrun: " + ", ".join(f"{MODEL_NAMES[i]} on {where(r)}" for i, r in plan.items())
              + (", the student on rank 0 after G_std, joining the other teachers where it first needs their renders"
                 if early else "")
              + ("; with the distillation term from its first step that is at once: --distill_start 16000 (no "
                 "measured quality cost on bonsai) lets it grow on the photos meanwhile"
                 if early and dp.distill_start is None and dp.lambda_distill > 0 else ""), flush=True)
    for i in range(dp.start, 4):
        sync = None  # (data-parallel stages: the student, and a teacher that several ranks share)
        if early and i == 3:
            def join():  # wait for every rank's teachers (rank 0: their entries), then leave the process group
                _join_teachers(dist, summary, path, dp, opt)
                data_parallel.start(dist, opt.views_per_step, "the student")
            if not dist.is_writer:  # this rank's teachers are written: release rank 0's student when it asks
                join()
                return None
            teachers.join = _DeferredJoin(join)
        elif dist is not None and i == 3:
            summary = _join_teachers(dist, summary, path, dp, opt)
            sync = data_parallel.start(dist, opt.views_per_step, "the student")
            if sync is None and not dist.is_writer:
                return None  # (one view per step: rank 0 trains the student alone)
        elif dist is not None:
            if dist.rank not in plan[i]:
                continue
            if len(plan[i]) > 1:
                sync = data_parallel.start(dist, opt.views_per_step, MODEL_NAMES[i])
        t0 = time.time()
        seed_all(seed, i)
        opt_i, dp_i, tests_i, saves_i, ckpts_i = stage_schedule(i, opt, dp, tests, saves, ckpts)
        model, role = STAGES[MODEL_NAMES[i]](scene, dataset, opt_i, pipe, dp_i, device, bg, teachers, sync)
        if sync is not None:  # every rank starts from rank 0's parameters
            sync.broadcast_model(model)
        n_init = model.num_points
        init_seconds = time.time() - t0  # initial Gaussians (kNN) and role (the student's teacher renders)
        held = teachers.gpu_bytes()  # (the student's stage holds none: its role took what it needs)
        res = train_model(scene, model, opt_i, pipe, dataset, model_dir(dataset.model_path, i), role=role,
                          test_iterations=tests_i, save_iterations=saves_i, checkpoint_iterations=ckpts_i,
                          start_checkpoint=start_checkpoint if i == dp.start else None,
                          label=MODEL_NAMES[i], quiet=quiet, stage=i,
                          checkpoint_every_minutes=checkpoint_every_minutes, sync=sync)
        if i == 3 and teachers.join is not None:
            teachers.join()  # (a student that never needed the teachers' renders releases the other ranks here)
        writer = sync is None or sync.is_writer  # (rank 0 writes a model several ranks train, and distill.json)
        if not writer and i == 3:
            return None
        if writer:
            t_end = time.time()
            res["stage_seconds"] = round(t_end - t0, 2)  # includes the teacher renders for the student
            res["init_seconds"] = round(init_seconds, 2)
            res["iterations"] = opt_i.iterations  # the student's differs with --student_steps_scale
            if i == 3 and teachers.join is not None:  # rank 0's student waiting for the other ranks' teachers
                res["wait_seconds"], res["joined_at_iteration"] = teachers.join.seconds, teachers.join.iteration
            if held and res.get("peak_memory_gib") is not None:  # the stage's own peak, without the held teachers
                res["peak_memory_gib"] = round(res["peak_memory_gib"] - held / 2 ** 30, 3)
            res.update(final_metrics(model, scene, pipe, bg, res.get("history"), opt_i.iterations))
            res.pop("history", None)
            if hasattr(role, "log"):
                res["events"] = role.log
            if i == 3:
                res["num_max_effective"] = role.num_max  # the growth cap the student ran with (0: no growth)
                res["init"] = dp.student_init  # how it started, and with how many Gaussians
                res["init_gaussians"] = n_init
                res["novel_views"] = len(role.novel)  # poses between training views the student also learned
                res["prune_unseen"] = role.prunes_unseen  # (--student_prune_unseen, auto resolved)
                res["opacity_reset"] = role.resets_opacity  # (--student_opacity_reset, auto resolved)
                res["densify"] = dp.student_densify
                res["depth_reinit"] = sorted(role.depth_reinit_events)  # (--depth_reinit, auto resolved)
                if dp.student_init == "std":
                    res["init_position_lr"] = opt_i.position_lr_init  # times the extent
            summary["models"][MODEL_NAMES[i]] = res
            summary["iterations"] = opt.iterations
            if dist is None or i == 3:  # (under torchrun rank 0 writes the teachers' entries after the barrier)
                write_json(path, summary)  # after every model: an interrupted run keeps the finished models' entries
            # under torchrun the student reads the other ranks' teachers from their PLYs (the same values), and a rank
            # that will not train it keeps none
            if i < 3 and (dist is None or dist.is_writer or not data_parallel.on_rank0_alone(opt.views_per_step)):
                teachers.keep(i, model)
        del model, role
        if device == "cuda":
            torch.cuda.empty_cache()
        if writer:  # after the stage, before the next: final metrics, distill.json, holding the teacher, the cache
            res["handoff_seconds"] = round(time.time() - t_end, 2)
    summary["total_seconds"] = round(time.time() - t_all, 2) if dp.start == 0 else None
    write_json(path, summary)
    print_table(summary)
    return summary


class _DeferredJoin:
    """Called once (later calls do nothing): the join of the other ranks' teachers, timed, with the student's
    iteration then (None: after its last)."""

    def __init__(self, join):
        self._join, self.seconds, self.iteration, self.done = join, 0.0, None, False

    def __call__(self, iteration=None):
        if not self.done:
            t0 = time.time()
            self._join()
            self.seconds, self.iteration, self.done = round(time.time() - t0, 2), iteration, True


def _join_teachers(dist, summary, path, dp, opt):
    """Under torchrun, before the student: wait until every rank wrote its teachers, then give rank 0 their
    distill.json entries (in model order, as a sequential run writes them) and write it there. Returns the
    summary on rank 0, the rank's own (never written) on the others."""
    distributed.barrier(dist, "the barrier after the teachers")
    mine = {k: v for k, v in summary["models"].items() if k in MODEL_NAMES[dp.start:3]}
    gathered = distributed.gather_to_rank0(dist, mine, "gathering the teachers' distill.json entries")
    if gathered is None:
        return summary
    entries = {k: v for part in gathered for k, v in part.items()}
    earlier = {k: v for k, v in summary["models"].items() if k in MODEL_NAMES[:dp.start]}
    summary["models"] = {**earlier, **{name: entries[name] for name in MODEL_NAMES[dp.start:3]}}  # model order
    summary["iterations"] = opt.iterations
    write_json(path, summary)
    return summary


def make_student_role(scene, dataset, opt, pipe, dp, device, bg, teachers, sync=None):
    """The student's role: the teachers' renders combined by --teacher_combine (``teachers``: a Teachers) and
    G_std's positions for the structure loss. Returns (role, start): ``start`` is the model the student
    starts from with --student_init std (G_std pruned to --student_max_ratio of its count by
    --imp_metric importance over the training views), None with sfm (the caller's SfM model).
    ``sync`` (data-parallel): importance scores are split over the ranks; every rank renders every view's mean
    teacher render (any rank may draw any view). With ``teachers.join`` (torchrun, rank 0 alone: a _DeferredJoin)
    the renders are made when a step first needs them, after it waited for the other ranks' teachers; only G_std
    (this rank's) is needed before."""
    std = teachers.load(2, dataset, device)
    std.active_sh_degree = std.max_sh_degree
    std_xyz = std.get_xyz.detach().clone()
    check_student_target(dp, std_xyz.shape[0])
    start = None
    if dp.student_init == "std":
        imp = gaussian_importance(std, scene.getTrainCameras(), pipe, bg, dp.imp_metric, sync)
        start = student_from_std(std, imp, student_target(dp, std_xyz.shape[0]), scene.cameras_extent)
        del imp
    del std
    # (a run that ends before its novel views start, a short one below the second prune, renders none)
    novel = interpolated_cameras(scene.getTrainCameras(), dp.novel_views, scale=dp.novel_view_scale) \
        if learns_novel_views(dp, opt) else []
    store = device if dataset.data_device == "cuda" else "cpu"

    def make_targets(iteration=None):
        if teachers.join is not None:
            teachers.join(iteration)
        models = [teachers.load(i, dataset, device) for i in range(3)]
        for t in models:
            t.active_sh_degree = t.max_sh_degree
        targets = teacher_renders(models, scene.getTrainCameras() + novel, pipe, bg, store, dp.teacher_combine)
        teachers.trained.clear()  # the teachers themselves: the role holds what it needs of them
        return targets

    role = StudentRole(dp, opt, pipe, bg, make_targets if teachers.join is not None else make_targets(), std_xyz,
                       scene.getTrainCameras(), novel, sync, random_start=scene.random_start)
    return role, start
