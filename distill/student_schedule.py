"""The student's schedule: its own copy of the run's flags (stretched by --student_steps_scale, then its tail),
and the checks made before it trains: refusals for events that cannot happen as asked and for a target count of
no Gaussian, warnings for events a shortened run or an automatic setting leaves out."""
import copy
import sys

from arguments import final_iteration, scale_steps, scaled_count
from arguments.groups import prune_cut_iterations
from distill.roles import (grows_by_adc, late_depth_reinits, prunes_unseen, reinitialises_depth, relocate_iterations,
                           relocation_span, student_target, unseen_prune_iterations)
from utils.errors import UserError


def stage_schedule(index, opt, dp, tests, saves, ckpts):
    """Model ``index``'s own copies of the flags and its test, save and checkpoint iterations: the run's, and for
    the student the teachers' schedule stretched by --student_steps_scale (the same at 1), then its
    --student_tail (evaluated and saved at the end of both)."""
    f = dp.student_steps_scale if index == 3 else 1.0
    opt_i = scale_steps(copy.deepcopy(opt), f)
    dp_i = scale_steps(copy.deepcopy(dp), f) if f != 1.0 else dp
    at = lambda its: {scaled_count(it, f) for it in its}  # noqa: E731
    tests_i, saves_i = at(tests), at(saves) | {opt_i.iterations}
    last = final_iteration(index, opt.iterations, f, dp.student_tail)
    if last > opt_i.iterations:  # the student's tail
        if opt_i.position_lr_max_steps is None:  # (decay over the schedule: the tail keeps its final rate)
            opt_i.position_lr_max_steps = opt_i.iterations
        opt_i.iterations = last
        tests_i.add(opt_i.iterations)
        saves_i.add(opt_i.iterations)
    return opt_i, dp_i, sorted(tests_i), saves_i, at(ckpts)


def check_student_events(opt, dp):
    """Stops a run whose student events (``opt``, ``dp``: the run's, after --steps_scale) cannot happen as asked,
    before anything trains: a growing student's first cut inside its densification window, a --student_prune_unseen
    on without an unseen prune, a --student_relocate interval that leaves no relocation, a --depth_reinit on at or
    after the first cut."""
    if dp.num_models != 4:
        return
    opt_s, dp_s = stage_schedule(3, opt, dp, [], [], [])[:2]
    first_cut = prune_cut_iterations(dp_s)[0]
    if grows_by_adc(dp) and first_cut < min(opt_s.iterations, opt_s.densify_until_iter):
        # (the clone and split steps after the cuts grow it back to its cap: a lego student asked for 0.12x G_std's
        # count at --second_prune_iter 12000 ended at 0.41x, without a word)
        raise UserError(f"--second_prune_iter {dp.second_prune_iter}: the student's first cut (iteration {first_cut} "
                        f"after the step scales) comes before its densification ends (--densify_until_iter "
                        f"{opt_s.densify_until_iter} after them), which would grow it back after the cuts; pass a "
                        f"--second_prune_iter of at least --densify_until_iter, or an earlier --densify_until_iter")
    if dp.student_prune_unseen == "on" and prunes_unseen(dp_s, False) and not unseen_prune_iterations(opt_s):
        raise UserError(f"--student_prune_unseen on: no multiple of --opacity_reset_interval "
                        f"({opt_s.opacity_reset_interval} after the step scales) lies inside the student's "
                        f"densification window ({opt_s.densify_from_iter} to {opt_s.densify_until_iter}), where it "
                        f"prunes; lower --opacity_reset_interval, or leave the flag out")
    if dp.student_relocate is not None and not relocate_iterations(opt_s, dp_s):
        start, end = relocation_span(opt_s, dp_s)
        raise UserError(f"--student_relocate: its interval ({dp_s.student_relocate} iterations after the step scales) "
                        f"leaves no relocation between the student's {'start' if start == 0 else 'last cut'} "
                        f"(iteration {start}) and its schedule's end ({end}): lower it")
    late = late_depth_reinits(dp_s)
    if late and dp_s.depth_reinit == "on":  # (on with --student_init std is refused with the other flags)
        raise UserError(f"--student_depth_reinit: iteration {late[0]} (after the step scales) is not before the "
                        f"student's first cut ({first_cut}), where it would undo the cuts: give "
                        f"iterations of its growth phase (e.g. 5000 10000)")


def check_student_target(dp, std_count):
    """Stop (UserError) when --student_max_ratio of G_std's count leaves the student no Gaussian: its cuts, its
    std start or its mcmc budget would empty it. train.py asks before anything is written where G_std is known
    (--start 3), the pipeline before the student's stage otherwise."""
    target = student_target(dp, std_count)
    if target is not None and target < 1:
        raise UserError(f"--student_max_ratio {dp.student_max_ratio:g} of G_std's {std_count} Gaussians leaves the "
                        f"student none: raise --student_max_ratio")


def warn_events_past_the_end(opt, dp):
    """Warns when the growing student's second prune or its structure loss comes at or after its last iteration
    (``opt``, ``dp``: the run's, after --steps_scale), as when a run is shortened by --iterations alone: the other
    iteration flags keep their 30000-step values, and the student would end unpruned, at its growth cap's count."""
    if dp.num_models != 4:
        return
    opt_s, dp_s = stage_schedule(3, opt, dp, [], [], [])[:2]
    end, missed = opt_s.iterations, []
    if grows_by_adc(dp) and prune_cut_iterations(dp_s)[0] >= end:
        missed.append(f"its second prune (--second_prune_iter: {dp_s.second_prune_iter} after the step scales), so "
                      f"it would end unpruned, at up to its growth cap's count")
    if dp.lambda_structure > 0 and dp_s.structure_start >= end:
        missed.append(f"its structure loss (--structure_start: {dp_s.structure_start} after the step scales)")
    if missed:
        print(f"warning: the student's last iteration ({end}) comes before {' and '.join(missed)}; shorten a run "
              f"with --steps_scale, which scales every iteration flag, or give those flags earlier iterations",
              file=sys.stderr)


def warn_auto_events_left_out(opt, dp, random_start):
    """Warns when a student part that auto turns on for this scene (``random_start``: no SfM points) loses its
    events (``opt``, ``dp``: the run's, after --steps_scale; with on, check_student_events refuses both):
    --depth_reinit auto leaves out --student_depth_reinit's iterations at or after the student's first cut, and
    --student_prune_unseen auto has no iteration inside the student's densification window, so prunes nothing."""
    if dp.num_models != 4:
        return
    opt_s, dp_s = stage_schedule(3, opt, dp, [], [], [])[:2]
    late = late_depth_reinits(dp_s)
    if dp.depth_reinit == "auto" and late and reinitialises_depth(dp_s, random_start):
        print(f"warning: --depth_reinit auto leaves out the student's depth re-initialisation at iteration {late[0]} "
              f"(after the step scales), not before its first cut ({prune_cut_iterations(dp_s)[0]}); give earlier "
              f"--student_depth_reinit iterations, or --depth_reinit off to silence this", file=sys.stderr)
    if (dp.student_prune_unseen == "auto" and prunes_unseen(dp_s, random_start)
            and not unseen_prune_iterations(opt_s)):
        print(f"warning: --student_prune_unseen auto (on for a scene without SfM points) prunes nothing: no multiple "
              f"of --opacity_reset_interval ({opt_s.opacity_reset_interval} after the step scales) lies inside the "
              f"student's densification window ({opt_s.densify_from_iter} to {opt_s.densify_until_iter}); lower "
              f"--opacity_reset_interval, or pass --student_prune_unseen off to silence this", file=sys.stderr)


REINIT_SHAPING_FLAGS = ("student_depth_reinit", "depth_reinit_colour")  # what only the depth re-initialisation reads


def warn_unused_reinit_flags(dp, random_start, given):
    """Warns when flags that only shape the student's depth re-initialisation were given (``given``: the command
    line's flag names) but the student will not re-initialise: --depth_reinit off, auto on a scene with SfM points
    (``random_start`` False), or a student started from G_std."""
    named = [f"--{n}" for n in REINIT_SHAPING_FLAGS if n in given]
    if dp.num_models != 4 or not named or reinitialises_depth(dp, random_start):
        return
    why = ("--depth_reinit off" if dp.depth_reinit == "off" else "--student_init std" if dp.student_init == "std"
           else "--depth_reinit auto is off on a scene with SfM points")
    print(f"warning: {' and '.join(named)} {'have' if len(named) > 1 else 'has'} no effect: the student does not "
          f"re-initialise on its surfaces ({why}); pass --depth_reinit on to run it"
          + (" (with --student_init sfm)" if dp.student_init == "std" else ""), file=sys.stderr)
