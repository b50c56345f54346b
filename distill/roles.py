"""The three teacher variants and the student, as small Roles plugged into the one training loop."""
import random
from dataclasses import dataclass

import torch

from arguments.groups import prune_cut_iterations
from distill.depth_reinit import surface_points
from distill.importance import gaussian_importance, prune_least_important, sample_by_importance, sample_kept
from distill.mcmc import add_position_noise, relocate_and_grow, thin_to
from distill.relocate import relocate_transparent
from distill.structure import structure_loss
from gaussian_renderer import render
from scene.gaussian_model import PARAM_NAMES, GaussianModel
from training.densify import DensifyConfig, DensifyStrategy, accumulate_grad_norms, restart_stats
from training.loop import Role
from training.pair_budget import QueuedRenders
from utils.general_utils import exponential_lr, to_staging
from utils.graphics_utils import matrix_to_quaternion, quaternion_to_matrix
from utils.loss_utils import photometric_loss

MODEL_NAMES = ("G_perb", "G_drop", "G_std", "student")
STUDENT_INITS = ("sfm", "std")


def schedule(start, end, interval):
    """Iterations strictly between start and end that are multiples of interval."""
    return {it for it in range(start + 1, end) if it % interval == 0}


def _noise_like(t, frac, rows):
    """N(0,1) x frac x max(1, mean |t|) on the selected rows, zero elsewhere."""
    s = max(1.0, float(t.abs().mean())) if t.numel() else 1.0
    return torch.randn_like(t) * frac * s * rows.reshape(-1, *([1] * (t.dim() - 1)))


def gram_schmidt_6d(six):
    """[P, 6] (first two rows of a rotation) -> rotation matrices [P, 3, 3]."""
    a1, a2 = six[:, :3], six[:, 3:]
    r1 = torch.nn.functional.normalize(a1, dim=-1)
    r2 = torch.nn.functional.normalize(a2 - (r1 * a2).sum(-1, keepdim=True) * r1, dim=-1)
    return torch.stack([r1, r2, torch.cross(r1, r2, dim=-1)], 1)


class PerturbRole(Role):
    """G_perb: permanent noise on the clone candidates at scheduled events.

    Candidate statistics (mean view-space gradient) accumulate every step, also after
    densification stops (the reference froze them at 15000, so every event hit the same set);
    they restart after each event, so each event sees the steps since the one before (the first:
    those after --perturb_start). None accumulate outside that window. They are two rows of the state
    the loop holds (next to the densification statistics, so every edit carries them and a densification
    restarts them too); the role itself keeps only its log.
    """

    STATS = ("perturb_grad", "perturb_count")

    def __init__(self, dp, opt, extent):
        self.events = schedule(dp.perturb_start, dp.perturb_end, dp.perturb_interval)
        self.window = (dp.perturb_start, max(self.events, default=0))
        self.frac = dp.perturb_scale
        self.threshold = opt.densify_grad_threshold
        self.max_scale = opt.percent_dense * extent
        self.log = []

    def initialize_state(self, n, device):
        return {k: torch.zeros(n, device=device) for k in self.STATS}

    def update_stats(self, it, state, out):
        if self.window[0] < it < self.window[1]:
            accumulate_grad_norms(state, *self.STATS, out)

    def candidates(self, model, state):
        mean = torch.nan_to_num(state["perturb_grad"] / state["perturb_count"], nan=0.0)
        return (mean >= self.threshold) & (model.get_scaling.max(dim=1).values <= self.max_scale)

    @torch.no_grad()
    def before_step(self, it, model, state):
        if it not in self.events:
            return
        rows = self.candidates(model, state).float()
        p = model.params
        for name in ("xyz", "opacity", "scaling"):
            p[name].add_(_noise_like(p[name], self.frac, rows))
        R = quaternion_to_matrix(p["rotation"])
        six = R[:, :2, :].reshape(-1, 6)
        six = six + _noise_like(six, self.frac, rows)
        q = matrix_to_quaternion(gram_schmidt_6d(six))
        sel = rows.bool()
        p["rotation"][sel] = q[sel]
        self.log.append((it, int(sel.sum())))
        for k in self.STATS:
            state[k].zero_()

    def state_dict(self):
        return dict(log=self.log)

    def load_state_dict(self, state):
        self.log = state["log"]


class DropoutRole(Role):
    """G_drop: on scheduled iterations every training render drops each Gaussian with probability p
    and scales the survivors' opacity by 1 / (1 - p). Evaluation renders never drop."""

    def __init__(self, dp):
        self.events = schedule(dp.drop_start, dp.drop_end, dp.drop_interval)
        self.rate, self.r0, self.r1 = dp.drop_rate, dp.drop_ramp_start, dp.drop_ramp_end

    def probability(self, it):
        p = self.rate * (it - self.r0) / max(1, self.r1 - self.r0)
        return min(max(p, 0.0), 0.9)

    def drops(self, it):
        return it in self.events

    def render_opacity(self, it, model):
        if not self.drops(it):
            return None
        p = self.probability(it)
        keep = (torch.rand(model.num_points, 1, device=model.device) >= p).float()
        return model.get_opacity * keep / (1.0 - p)


@dataclass(frozen=True)
class StudentConfig(DensifyConfig):
    """The student's densification: DensifyConfig without opacity reset (unless --student_opacity_reset resolves
    on, see resets_opacity), plus the blur split."""
    blur_split_ratio: float = 5000.0  # split Gaussians whose area_max exceeds H x W / this
    grow: bool = True  # False (started from G_std): no clone, split or blur split, only the prunes

    @classmethod
    def from_flags(cls, opt, extent, white_background, dp, num_max=None, grow=True, random_start=False):
        """From the optimisation flags and the distillation flags ``dp``; ``num_max`` (default --num_max) is the
        growth cap, 0 without growth; ``random_start``: the scene had no SfM points (resolves the auto flags)."""
        cap = (dp.num_max if num_max is None else num_max) if grow else 0
        return cls.from_opt(opt, extent, white_background, opacity_reset=grow and resets_opacity(dp, random_start),
                            num_max=cap, blur_split_ratio=dp.blur_split_ratio, grow=grow)


class StudentStrategy(DensifyStrategy):
    """Student densification: gradient clone/split plus the Mini-Splatting blur split, no opacity
    reset, no growth at or above num_max. Without ``grow`` (the student started from G_std) only the
    prunes of transparent (and, after --opacity_reset_interval, huge) Gaussians, so it never grows."""

    def initialize_state(self, n, device):
        state = super().initialize_state(n, device)
        state["blur"] = torch.zeros(n, dtype=torch.bool, device=device)  # accumulates between densifications
        return state

    def wants_stats(self, iteration):
        if not self.config.grow:  # no blur split: no stats to ask the rasterizer for
            return ()
        # only area_max: the rasterizer then skips the per-contribution atomics of the other two
        return ("area_max",) if iteration < self.config.densify_until_iter else ()

    def observe(self, state, out, camera):
        limit = camera.image_height * camera.image_width / self.config.blur_split_ratio
        state["blur"] |= out["area_max"] > limit

    def extra_split_mask(self, state):
        return state["blur"]


def unseen_prune_iterations(opt):
    """The iterations of --student_prune_unseen (``opt``: the student's copy): the multiples of
    --opacity_reset_interval inside its densification window, where a teacher resets its opacities (which is
    how the teachers shed hidden points; the student never resets them)."""
    return schedule(opt.densify_from_iter, opt.densify_until_iter, opt.opacity_reset_interval)


def loop_generator(device="cpu"):
    """A torch.Generator on ``device`` seeded from the loop's RNG (Python's, which every data-parallel rank draws in
    step and a checkpoint saves): the student's random edits then make the same draws on every rank and after a
    resume (torch's own generators are not in step across ranks: each renders other views)."""
    return torch.Generator(device=device).manual_seed(random.getrandbits(62))


def mcmc_iterations(opt, dp):
    """The events of --student_densify mcmc (``opt``, ``dp``: the student's copies): the multiples of
    --densification_interval strictly between --densify_from_iter and its schedule's end (the tail only fine-tunes);
    none for adc."""
    if dp.student_densify != "mcmc":
        return set()
    return schedule(opt.densify_from_iter, schedule_end(opt, dp), opt.densification_interval)


def relocation_span(opt, dp):
    """(start, end) of --student_relocate's relocations (``opt``, ``dp``: the student's copies): after the last cut
    (after the start for a std-started student, which never cuts), before the schedule's end, so the tail only
    fine-tunes."""
    return 0 if dp.student_init == "std" else max(prune_cut_iterations(dp)), schedule_end(opt, dp)


def relocate_iterations(opt, dp):
    """The iterations of --student_relocate: its multiples strictly inside relocation_span; none when off."""
    if dp.student_relocate is None:
        return set()
    return schedule(*relocation_span(opt, dp), dp.student_relocate)


def grows_by_adc(dp):
    """Whether the student grows from SfM (or random) points by clone, split and blur split (--student_densify adc)
    and is then cut to its target: not one started from G_std, nor one placed by --student_densify mcmc."""
    return dp.student_init == "sfm" and dp.student_densify == "adc"


def prunes_unseen(dp, random_start):
    """Whether the student drops its importance-0 Gaussians at unseen_prune_iterations: --student_prune_unseen on, or
    auto with a random start (``random_start``: the scene had no SfM points, as NeRF-synthetic). Measured paired over
    four seeds (docs/BENCHMARKS.md): +0.18 dB on lego, whose random points hidden inside the object otherwise hold
    the growth cap; -0.75 dB on bonsai's SfM start, whose growing Gaussians it thins."""
    if not grows_by_adc(dp):  # (mcmc: relocation frees what the cap holds)
        return False
    return dp.student_prune_unseen == "on" or (dp.student_prune_unseen == "auto" and bool(random_start))


def resets_opacity(dp, random_start):
    """Whether a growing student resets its opacities as the teachers do: --student_opacity_reset on, or auto with a
    random start. Measured paired over four seeds (docs/BENCHMARKS.md, eighth session): +0.56 dB on lego, where a
    student without it keeps the random start's floaters (every other student part off: -10.7 dB against G_std
    without the reset, -0.38 with it); -0.13 dB (-0.39, +0.14) and SSIM -0.003 on bonsai's SfM start."""
    if not grows_by_adc(dp):  # (mcmc: no reset, its own regularisation)
        return False
    return dp.student_opacity_reset == "on" or (dp.student_opacity_reset == "auto" and bool(random_start))


def reinitialises_depth(dp, random_start):
    """Whether the student re-initialises on its surfaces (``dp``: its flags): --depth_reinit on, or auto with a
    random start, and only for a growing (sfm) student. Measured paired (docs/BENCHMARKS.md, twenty-sixth and
    twenty-seventh sessions): at 10000, +0.16 dB (+0.14, +0.18) on lego over 12 seeds; -0.26 dB (-0.49, -0.03) on
    bonsai's SfM start over 6."""
    return dp.student_init == "sfm" and (dp.depth_reinit == "on" or (dp.depth_reinit == "auto" and bool(random_start)))


def late_depth_reinits(dp):
    """--student_depth_reinit's iterations at or after the student's first cut (``dp``: the student's copy)."""
    return [it for it in dp.student_depth_reinit if it >= prune_cut_iterations(dp)[0]]


def depth_reinit_iterations(dp, random_start):
    """The iterations of the student's depth re-initialisation (``dp``: the student's copy): --student_depth_reinit's
    when reinitialises_depth, where auto leaves out the late ones (an explicit on stops at them before training:
    distill.student_schedule.check_student_events)."""
    if not reinitialises_depth(dp, random_start):
        return set()
    late = late_depth_reinits(dp) if dp.depth_reinit == "auto" else []
    return set(dp.student_depth_reinit) - set(late)


def student_num_max(dp, std_count):
    """The student's growth cap: --num_max_ratio x G_std's count when that ratio is set, else --num_max;
    0 (no growth) for a student started from G_std; the target itself for --student_densify mcmc."""
    if dp.student_init == "std":
        return 0
    if dp.student_densify == "mcmc":
        return student_target(dp, std_count)
    return int(round(dp.num_max_ratio * std_count)) if dp.num_max_ratio is not None else dp.num_max


def student_target(dp, std_count):
    """--student_max_ratio x G_std's count (the second prune's cap, the std start's size), or None when off."""
    return int(dp.student_max_ratio * std_count) if dp.student_max_ratio is not None else None


def novel_view_start(dp):
    """The first iteration of the novel-view losses: --novel_view_start, else the second prune's for a student
    that grows (the growth phase's steps are its dearest) and 0 for a std-started one."""
    if dp.novel_view_start is not None:
        return dp.novel_view_start
    return dp.second_prune_iter if dp.student_init == "sfm" else 0


def learns_novel_views(dp, opt):
    """Whether a student step can add a novel view's loss (``dp``, ``opt``: the student's copies): poses, a weight
    and a probability above 0, and a start before its last iteration; else its teachers need not render them."""
    return (dp.novel_views > 0 and dp.lambda_novel > 0 and dp.novel_view_prob > 0
            and novel_view_start(dp) < opt.iterations)


def cut_count(j, stages, before, target):
    """How many Gaussians cut ``j`` (0-based) of ``stages`` keeps: geometrically between ``before`` (the count at
    the first cut) and ``target``, which the last cut reaches; never fewer than ``target``. None (no count) when
    there is no target."""
    if target is None or j == stages - 1 or before <= target:
        return target
    return max(target, int(round(before * (target / before) ** ((j + 1) / stages))))


def prune_fraction(dp):
    """The share of the total importance the second prune removes: --prune_importance_fraction, else 0 when
    --student_max_ratio caps the count (on lego the reference's 1% cut took the student to 10% of G_std under a
    12% cap, 0.17 dB worse; where the cap binds, as on bonsai, both keep the same Gaussians) and the
    reference's 0.01 without a cap."""
    if dp.prune_importance_fraction is not None:
        return dp.prune_importance_fraction
    return 0.0 if dp.student_max_ratio is not None else 0.01


def student_position_lr(opt, dp):
    """The std-started student's initial position LR (times the extent): --student_position_lr_init when
    set, else the rate G_std's schedule (the same flags) reached at its last iteration."""
    if dp.student_position_lr_init is not None:
        return dp.student_position_lr_init
    end = schedule_end(opt, dp)
    steps = opt.position_lr_max_steps if opt.position_lr_max_steps is not None else end
    return exponential_lr(opt.position_lr_init, opt.position_lr_final, steps)(end)


def schedule_end(opt, dp):
    """The last iteration of the student's schedule: its iterations (``opt``: the student's copy) before the
    --student_tail. Exact: the tail adds round(S x t) to S, so S + t S is within 1/2 of the total and
    total / (1 + t) within 1/2 / (1 + t) of S."""
    return int(round(opt.iterations / (1.0 + dp.student_tail)))


def fine_tune_schedule(opt, dp):
    """Set ``opt`` (the student's copy) to the std start's position schedule: from student_position_lr
    log-linearly to --position_lr_final over the student's schedule (constant when G_std's decay had
    finished, as with the default 30000-step decay over 30000 iterations). Returns ``opt``."""
    opt.position_lr_init = student_position_lr(opt, dp)
    opt.position_lr_max_steps = schedule_end(opt, dp)
    return opt


@torch.no_grad()
def student_from_std(std, imp, target, spatial_lr_scale):
    """The std start: a GaussianModel holding G_std's ``target`` most important Gaussians (importance
    ``imp``; never one of importance 0, so fewer when fewer are > 0), every parameter copied, SH degree
    at its maximum."""
    student = GaussianModel(std.max_sh_degree, std.device)
    student._set(*(std.params[k].detach() for k in PARAM_NAMES))  # shares storage until the prune below
    student.prune(prune_least_important(imp, 0.0, target))  # the edit path: new tensors, G_std untouched
    student.active_sh_degree = student.max_sh_degree
    student.spatial_lr_scale = float(spatial_lr_scale)
    return student


class StudentRole(Role):
    """The student: distillation against the cached teacher renders (combined by --teacher_combine), importance
    pruning, and the structure loss against G_std's positions."""

    def __init__(self, dp, opt, pipe, bg, teacher_targets, std_xyz, train_cameras, novel_cameras=(), sync=None,
                 random_start=False):
        self.dp, self.opt, self.pipe, self.bg = dp, opt, pipe, bg
        self.sync = sync  # data-parallel: the importance scores are split over the ranks
        # uid -> fp16 [3, H, W] (teacher_renders), also of the novel cameras (negative uids); or a function of the
        # iteration that makes them, called when a step first needs one (torchrun: rank 0's student starts before
        # the other ranks' teachers end)
        self._targets = teacher_targets
        self.novel = list(novel_cameras)
        self.std_xyz = std_xyz
        self.init = dp.student_init
        self.num_max = student_num_max(dp, std_xyz.shape[0])
        self.target = student_target(dp, std_xyz.shape[0])
        self.cameras = train_cameras
        self.cuts = prune_cut_iterations(dp)
        self.structure_events = set(range(dp.structure_start, dp.structure_end + 1, dp.structure_interval))
        self.novel_start = novel_view_start(dp)
        self.random_start = random_start  # the scene had no SfM points (resolves the auto flags)
        self.prunes_unseen = prunes_unseen(dp, random_start)
        self.resets_opacity = resets_opacity(dp, random_start)
        self.unseen_events = unseen_prune_iterations(opt) if self.prunes_unseen else set()
        self.relocate_events = relocate_iterations(opt, dp)
        self.mcmc = dp.student_densify == "mcmc"
        self.mcmc_events = mcmc_iterations(opt, dp)
        self.depth_reinit_events = depth_reinit_iterations(dp, random_start)
        # --relocate_opacity_reg's steps: after the last cut (the relocations' start) to the last relocation
        self.reg_window = ((relocation_span(opt, dp)[0], max(self.relocate_events))
                           if self.relocate_events and dp.relocate_opacity_reg > 0 else None)
        self.log = []

    def make_strategy(self, opt, extent, white_background):
        if self.mcmc:  # (no clone, split or prune, no statistics: after_step relocates and grows)
            return DensifyStrategy(DensifyConfig.from_opt(opt, extent, white_background, densify_until_iter=0,
                                                          opacity_reset=False))
        return StudentStrategy(StudentConfig.from_flags(opt, extent, white_background, self.dp, self.num_max,
                                                        grow=self.init == "sfm", random_start=self.random_start))

    def targets(self, it=None):
        """The teachers' combined renders by camera uid (made here, once, at iteration ``it``, when they were
        deferred)."""
        if callable(self._targets):
            self._targets = self._targets(it)
        return self._targets

    def view_target(self, it, camera, device):
        if self.dp.lambda_distill == 0 or (self.dp.distill_start is not None and it < self.dp.distill_start):
            return None
        # (half precision, as stored: the loss reads it so, and a graph's buffer copies it without a conversion)
        return self.targets(it)[camera.uid].to(device, non_blocking=True), self.dp.lambda_distill

    def step_loss(self, it, model):
        loss = None
        cam = None
        if (self.novel and self.dp.lambda_novel > 0 and it >= self.novel_start
                and random.random() < self.dp.novel_view_prob):
            cam = self.novel[random.randrange(len(self.novel))]  # the loop's RNG: a resumed run draws the same
        if self.sync is not None and not self.sync.is_writer:
            return None  # data-parallel: the writer rank adds this once-per-step loss (the others only draw)
        if cam is not None:
            target = self.targets(it)[cam.uid].to(model.device, non_blocking=True)  # (half, as view_target's)
            # (--cuda_graphs: a graph of its own adds the view's gradients to those the step's replay left)
            added = self.graphed.add_view(cam, target, self.dp.lambda_novel) if self.graphed is not None else None
            if added is None:
                out = (self.pairs.render if self.pairs else render)(cam, model, self.pipe, self.bg)
                added = photometric_loss(out["render"], target, self.opt.lambda_dssim)
            loss = self.dp.lambda_novel * added
        if self.reg_window is not None and self.reg_window[0] < it <= self.reg_window[1]:
            # (3DGS-MCMC's: the Gaussians the views need least fade below --relocate_opacity, for the next move)
            r = self.dp.relocate_opacity_reg * model.get_opacity.mean()
            loss = r if loss is None else loss + r
        if self.mcmc and (self.dp.mcmc_opacity_reg > 0 or self.dp.mcmc_scale_reg > 0):
            r = self.dp.mcmc_opacity_reg * model.get_opacity.mean() + self.dp.mcmc_scale_reg * model.get_scaling.mean()
            loss = r if loss is None else loss + r
        if it in self.structure_events and self.dp.lambda_structure > 0:
            s = self.dp.lambda_structure * structure_loss(model.get_xyz, self.std_xyz, self.dp.structure_bins)
            loss = s if loss is None else loss + s
        return loss

    @torch.no_grad()
    def after_step(self, it, model, state, out):
        if it in self.unseen_events:
            self._prune_unseen(it, model, state)
        if it in self.relocate_events:
            self._relocate(it, model, state)
        if it in self.depth_reinit_events:
            self._depth_reinit(it, model, state)
        if self.mcmc:  # (it never cuts)
            self._mcmc(it, model, state)
            return
        first = self.dp.firstPrune and it == self.dp.first_prune_iter
        if not first and it not in self.cuts:
            return
        if self.init == "std" and model.num_points <= self.target:
            return  # started at the target and never grows: no second prune
        n0 = model.num_points
        if first:
            reinitialise(model, sample_by_importance(self._importance(model), self.dp.factor), state)
        else:
            j = self.cuts.index(it)
            before = n0 if j == 0 else next(e["before"] for e in self.log if e["kind"] == "second")
            last = j == len(self.cuts) - 1  # (the importance fraction, when one is set, goes at the last cut)
            # --never_strongest_at last: the earlier cuts rank by contribution alone, so that they keep their
            # geometric counts (on bonsai 55-60% of the grown student is never a pixel's strongest contributor)
            imp = self._importance(model, strongest_rule=last or self.dp.never_strongest_at == "every")
            count = cut_count(j, len(self.cuts), before, self.target)
            if self.dp.cut_selection == "sample" and count is not None:
                model.prune(~sample_kept(imp, count, loop_generator()), rows=state)
            else:
                model.prune(prune_least_important(imp, prune_fraction(self.dp) if last else 0.0, count), rows=state)
        # the reference's state after each prune: a fresh optimizer, and the statistics start over
        model.restart_optimizer(self.opt, it)
        restart_stats(state)
        self.log.append(dict(iteration=it, kind="first" if first else "second", before=n0,
                             after=model.num_points))

    def thin_start(self, model):
        """--student_densify mcmc: the start (the SfM points) drawn down to the target count at random, logged as
        iteration 0's event."""
        if not self.mcmc:
            return
        n0 = model.num_points
        if thin_to(model, self.target, loop_generator()):
            self.log.append(dict(iteration=0, kind="mcmc", before=n0, after=model.num_points, moved=0, added=0))

    def _mcmc(self, it, model, state):
        """--student_densify mcmc after each optimizer step: at its events the transparent Gaussians move and the count
        grows toward the target (logged when anything changed); then the position noise (distill/mcmc.py)."""
        if it in self.mcmc_events:
            n0 = model.num_points
            moved, added = relocate_and_grow(model, self.target, self.dp.relocate_opacity, loop_generator(), state)
            if moved or added:
                self.log.append(dict(iteration=it, kind="mcmc", before=n0, after=model.num_points, moved=moved,
                                     added=added))
        if self.dp.mcmc_noise_lr > 0:
            add_position_noise(model, model.position_lr(), self.dp.mcmc_noise_lr, self.dp.relocate_opacity,
                               loop_generator(model.device))

    def _importance(self, model, strongest_rule=True):
        """--imp_metric importance of ``model``'s Gaussians over the training views (split over the ranks)."""
        return gaussian_importance(model, self.cameras, self.pipe, self.bg, self.dp.imp_metric, self.sync,
                                   strongest_rule)

    def _relocate(self, it, model, state):
        """--student_relocate: the Gaussians below --relocate_opacity moved onto live ones (distill/relocate.py), in
        place; logged when any moved."""
        moved = relocate_transparent(model, self.dp.relocate_opacity, loop_generator(), rows=state)
        if moved:
            self.log.append(dict(iteration=it, kind="relocate", before=model.num_points, after=model.num_points,
                                 moved=moved))

    def _depth_reinit(self, it, model, state):
        """--depth_reinit: the Gaussians re-created, as many, at points of the surfaces the student renders
        (distill/depth_reinit.py) with kNN scales, opacity 0.1, no rotation and the photo's colour as the DC term, as
        the first prune's re-initialisation (--depth_reinit_colour strongest: every SH band of each point's strongest
        contributor instead); then, as after a cut, a fresh optimizer and the statistics start over.
        Data-parallel: rank 0 draws the points for every rank (their renders may differ in the last bits)."""
        n0 = model.num_points
        generator = loop_generator()  # (on every rank: the loop's RNG stays in step)
        if self.sync is None or self.sync.rank == 0:
            xyz, rgb, strongest = surface_points(model, self.cameras, self.pipe, n0, generator)
        else:
            xyz = rgb = torch.zeros(0, 3, device=model.device)
            strongest = torch.zeros(0, dtype=torch.int64, device=model.device)
        if self.sync is not None:
            xyz, rgb, strongest = self.sync.broadcast([xyz, rgb, strongest],
                                                      "broadcasting the student's depth re-initialisation")
        if xyz.shape[0] == 0:  # (nothing rendered: keep the Gaussians, say so in the log)
            self.log.append(dict(iteration=it, kind="depth_reinit", before=n0, after=n0, points=0))
            return
        values = fresh_gaussians(model, xyz, rgb)
        if self.dp.depth_reinit_colour == "strongest":  # (the ranks' models are equal: the same rows everywhere)
            values["f_dc"], values["f_rest"] = (model.params[k].detach()[strongest] for k in ("f_dc", "f_rest"))
        model.reset_to(values, rows=state)
        model.restart_optimizer(self.opt, it)
        restart_stats(state)
        self.log.append(dict(iteration=it, kind="depth_reinit", before=n0, after=model.num_points,
                             points=int(xyz.shape[0])))

    def _prune_unseen(self, it, model, state):
        """--student_prune_unseen: drop the Gaussians of importance 0; the rows of the statistics and of Adam follow
        (a densification-like edit: no fresh optimizer, the statistics go on)."""
        n0 = model.num_points
        model.prune(self._importance(model) == 0, rows=state)
        self.log.append(dict(iteration=it, kind="unseen", before=n0, after=model.num_points))

    def state_dict(self):
        # the prune schedule is fixed by the iteration; log says which prunes ran, and the caps they used
        return dict(log=self.log, num_max=self.num_max, target=self.target)

    def load_state_dict(self, state):
        if (state.get("num_max"), state.get("target")) != (self.num_max, self.target):
            raise ValueError(f"the student's growth cap / prune target {state.get('num_max')}/{state.get('target')} "
                             f"differ from this run's {self.num_max}/{self.target} (another G_std or other flags)")
        self.log = list(state["log"])


def fresh_gaussians(model, xyz, rgb):
    """Raw parameters of Gaussians at ``xyz`` [P, 3] with colours ``rgb`` [P, 3] in [0, 1], started as SfM points
    are (kNN scales, opacity 0.1, identity rotation, no higher SH) for ``model`` (its SH degree, device, LR scale)."""
    fresh = GaussianModel(model.max_sh_degree, model.device)
    fresh.create_from_points(xyz, rgb, model.spatial_lr_scale)
    return {k: v.detach() for k, v in fresh.params.items()}


def reinitialise(model, keep, rows=None):
    """Keep positions and DC colour of the kept Gaussians (``keep``: [N] bool or an index); zero higher SH, kNN
    scales, opacity 0.1, identity rotation (the student's re-initialisation after the first prune). Their Adam
    moments and ``rows`` (the strategy state) follow them."""
    xyz = model.params["xyz"].detach()[keep]
    values = fresh_gaussians(model, xyz, torch.zeros_like(xyz))
    values["f_dc"] = model.params["f_dc"].detach()[keep]  # (the DC colour kept as it is, not through RGB)
    model.replace(keep, values, rows)


AGREEMENT_SPREAD = 0.05  # --teacher_combine agreement: the teachers' per-pixel spread (std of colours in [0, 1], about
# 13 of 255) at which the photo weighs 1 - 1/e against their mean; where they agree to a few levels, the mean holds


def combine_renders(imgs, how="mean", photo=None):
    """The student's target from the teachers' renders of one view ([T, 3, H, W]), per pixel and channel: their
    mean (the reference), their median (with three teachers the middle one: what only one teacher shows, a
    floater or a blur of its own, does not reach the target), or agreement: their mean where they agree and the
    view's photo (float [3, H, W], None for a novel view: then the mean) where they disagree, blended per pixel by
    w = exp(-(spread / AGREEMENT_SPREAD)^2), spread = the largest over the channels of the teachers' standard
    deviation."""
    if how == "mean":
        return imgs.mean(dim=0)
    if how == "median":
        return imgs.median(dim=0).values
    if how == "agreement":
        mean = imgs.mean(dim=0)
        if photo is None:
            return mean
        spread = imgs.std(dim=0, unbiased=False).amax(dim=0, keepdim=True)
        return photo + torch.exp(-(spread / AGREEMENT_SPREAD) ** 2) * (mean - photo)
    raise ValueError(f"unknown teacher combination {how}")


@torch.no_grad()
def teacher_renders(teachers, cameras, pipe, bg, store_device="cpu", combine="mean"):
    """uid -> the teachers' renders of each camera combined by ``combine`` (combine_renders), computed once (fp16;
    queued without a wait for each render where the capacity mode applies: a camera whose render overflowed is made
    again with exact renders)."""
    queue = QueuedRenders(teachers[0].device, pipe, len(cameras))

    def target(cam, imgs):
        photo = cam.original_image(imgs.device) if combine == "agreement" and cam.image is not None else None
        return to_staging(combine_renders(imgs, combine, photo).clamp(0, 1).half(), store_device)

    out = {cam.uid: target(cam, torch.stack([queue.render(i, cam, t, pipe, bg)[0]["render"] for t in teachers]))
           for i, cam in enumerate(cameras)}
    for i in queue.overflowed():
        cam = cameras[i]
        out[cam.uid] = target(cam, torch.stack([render(cam, t, pipe, bg)["render"] for t in teachers]))
    if torch.device(store_device).type == "cpu" and teachers[0].device.type == "cuda":  # (the copies were queued:
        torch.cuda.synchronize(teachers[0].device)  # to_staging)
    return out
