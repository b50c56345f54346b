"""The typed flag groups: each field's check, the --steps_scale marker, the CLI builder and cfg_args.json."""
import dataclasses
import json
import math
import typing

import pytest

import render
import train
from arguments import (CONFIG_NAME, DistillParams, ModelParams, OptimizationParams, PipelineParams,
                       TrainRunParams, check_group, config_dict, flag_specs, save_config, saved_flags, scale_steps,
                       steps_fields)
from utils.errors import UserError

GROUPS = (ModelParams, OptimizationParams, PipelineParams, DistillParams, TrainRunParams, render.RenderParams)

# cfg_args.json as the version before typed flags wrote it (-1 / 0 meant automatic / off)
OLD_CONFIG = {
    "source_path": "scene", "model_path": "out", "images": "images", "depths": "", "resolution": -1,
    "white_background": False, "sh_degree": 1, "data_device": "cpu", "eval": True, "num_random_points": 100000,
    "iterations": 25000, "position_lr_max_steps": -1, "max_screen_size": 0, "view_weight": -1.0,
    "optimizer_type": "default", "steps_scale": 0.001, "backend": "auto", "num_models": 4, "start": 0,
    "student_max_ratio": 0.0, "student_init": "sfm", "student_position_lr_init": 0.0, "num_max_ratio": 0.0,
    "test_iterations": [7000, 30000], "save_iterations": [7000, 30000], "checkpoint_iterations": [],
    "start_checkpoint": None, "resume": False, "checkpoint_every_minutes": 10.0, "overwrite": False,
    "dist_timeout_minutes": 30.0, "seed": 0, "quiet": True, "a_flag_since_removed": 3,
}


def _bad_value(spec):
    """A value the field must refuse, or None when every value of its type is allowed."""
    if spec.choices is not None:
        return "no such choice" if spec.base is str else 999
    check = spec.meta["check"]
    if check is None:
        return None
    numbers = (-1e9, -1, -0.5, 0, 0.5, 1.5, 4, 1e9)
    for v in (("bogus",) if spec.base is str else map(spec.base, numbers) if spec.base is int else numbers):
        if not check.ok(v) and not (spec.optional and v == spec.meta["legacy_none"]):
            return v
    raise AssertionError(f"no value breaks the check of --{spec.name}")


FIELDS = [(cls, s) for cls in GROUPS for s in flag_specs(cls)]


@pytest.mark.parametrize("cls,spec", FIELDS, ids=[f"{c.__name__}.{s.name}" for c, s in FIELDS])
def test_each_field_accepts_its_default_and_refuses_a_bad_value_in_one_line(cls, spec):
    check_group(cls())
    assert spec.meta["help"], f"--{spec.name} has no help"
    bad = _bad_value(spec)
    if spec.base is float:  # every float must be finite
        with pytest.raises(UserError, match=f"^--{spec.name} nan must be a finite number$"):
            check_group(dataclasses.replace(cls(), **{spec.name: [math.nan] if spec.is_list else math.nan}))
    if bad is None:
        return
    with pytest.raises(UserError) as err:  # (a list's check applies to each element, which the message names)
        check_group(dataclasses.replace(cls(), **{spec.name: [5, bad] if spec.is_list else bad}))
    assert str(err.value).startswith(f"--{spec.name} {bad} ") and "\n" not in str(err.value)


def test_help_texts_say_what_a_flag_does_not_its_history():
    for _, spec in FIELDS:
        text = spec.meta["help"]
        assert "PR" not in text and " dB" not in text and "#" not in text and "issue" not in text, spec.name


def test_choices_match_the_code_that_uses_them():
    from distill.roles import STUDENT_INITS
    from training.optim import OPTIMIZER_TYPES
    hints = typing.get_type_hints(OptimizationParams)
    assert typing.get_args(hints["optimizer_type"]) == OPTIMIZER_TYPES
    assert typing.get_args(typing.get_type_hints(DistillParams)["student_init"]) == STUDENT_INITS


def test_steps_marker_names_the_iteration_counts():
    # the list --steps_scale rescaled before the marker moved onto the fields
    old = {"iterations", "position_lr_max_steps", "densification_interval", "opacity_reset_interval",
           "densify_from_iter", "densify_until_iter", "sh_increase_interval", "perturb_start", "perturb_end",
           "perturb_interval", "drop_start", "drop_end", "drop_interval", "drop_ramp_start", "drop_ramp_end",
           "first_prune_iter", "second_prune_iter", "structure_start", "structure_end", "structure_interval"}
    marked = set(steps_fields(OptimizationParams)) | set(steps_fields(DistillParams))
    # (added since)
    assert marked == old | {"novel_view_start", "prune_stage_interval", "distill_start", "student_relocate",
                            "student_depth_reinit"}
    assert set(steps_fields(TrainRunParams)) == {"test_iterations", "save_iterations", "checkpoint_iterations"}
    assert not steps_fields(ModelParams) and not steps_fields(PipelineParams)


def test_scale_steps_rescales_marked_fields_only():
    opt = scale_steps(OptimizationParams(position_lr_max_steps=None), 0.001)
    assert (opt.iterations, opt.densification_interval, opt.densify_from_iter) == (30, 1, 1)  # each stays >= 1
    assert opt.position_lr_max_steps is None  # automatic stays automatic
    assert opt.views_per_step == 6 and opt.lambda_dssim == 0.2  # not iteration counts
    run = scale_steps(TrainRunParams(), 0.5)
    assert run.test_iterations == [3500, 15000] and run.seed == 0
    dp = scale_steps(DistillParams(), 0.25)
    assert (dp.perturb_start, dp.structure_interval, dp.structure_bins) == (3750, 250, 256)
    with pytest.raises(UserError, match="--steps_scale"):
        scale_steps(OptimizationParams(), 0)


def test_cli_reads_types_choices_switches_lists_and_the_old_sentinels():
    parser = train.build_parser()
    given = parser.given(["-s", "x", "-r", "2", "--eval", "--test_iterations", "5", "9", "--view_weight", "0.5",
                          "--backend", "torch", "--max_screen_size", "20"])
    assert given == dict(source_path="x", resolution=2, eval=True, test_iterations=[5, 9], view_weight=0.5,
                         backend="torch", max_screen_size=20)  # only what was typed
    dataset, opt, pipe, dp, run = parser.build(given)
    assert (dataset.resolution, opt.view_weight, pipe.backend, run.test_iterations) == (2, 0.5, "torch", [5, 9])
    assert dp == DistillParams() and opt.iterations == 30_000
    old = parser.given(["-r", "-1", "--max_screen_size", "0", "--view_weight", "-1", "--position_lr_max_steps",
                        "-1", "--student_max_ratio", "0", "--num_max_ratio", "0", "--student_position_lr_init", "0"])
    assert set(old.values()) == {None}


@pytest.mark.parametrize("argv,fragment", [
    (["--iterations", "ten"], "--iterations: invalid int value: 'ten'"),
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["--test_iterations"], "--test_iterations"),
])
def test_cli_syntax_errors_are_one_line_user_errors(argv, fragment):
    with pytest.raises(UserError, match=fragment):
        train.build_parser().given(argv)


def test_config_round_trip(tmp_path):
    parser = train.build_parser()
    groups = parser.build(parser.given(["-s", "scene", "-m", str(tmp_path), "-r", "4", "--view_weight", "0.25",
                                        "--num_models", "4", "--student_max_ratio", "0.2", "--firstPrune",
                                        "--checkpoint_iterations", "10", "20", "--steps_scale", "0.5"]))
    save_config(str(tmp_path), config_dict(*groups))
    raw = json.load(open(tmp_path / CONFIG_NAME))
    assert raw["resolution"] == 4 and raw["max_screen_size"] is None and raw["checkpoint_iterations"] == [10, 20]
    assert parser.build({}, saved_flags(str(tmp_path), train.TRAIN_GROUPS)) == groups


def test_an_earlier_versions_config_still_loads(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps(OLD_CONFIG))
    dataset, opt, pipe, dp, run = train.build_parser().build({}, saved_flags(str(tmp_path), train.TRAIN_GROUPS))
    assert dataset.resolution is None and opt.position_lr_max_steps is None and opt.max_screen_size is None
    assert opt.view_weight is None and dp.student_max_ratio is None and dp.num_max_ratio is None
    assert dp.student_position_lr_init is None and dp.num_models == 4 and opt.steps_scale == 0.001
    assert isinstance(opt.iterations, int) and run.quiet
    # flags added later with another default: the file means the behaviour of its version (what --resume continues)
    assert dp.student_steps_scale == 1.0 and dp.novel_views == 0 and dp.student_tail == 0 and dp.novel_view_start == 0
    assert dp.prune_importance_fraction == 0.01 and DistillParams().prune_importance_fraction is None
    assert DistillParams().novel_views == 2 and DistillParams().student_tail == 0.4
    assert DistillParams().novel_view_start is None  # (the second prune's iteration)
    assert dp.prune_stages == 1 and DistillParams().prune_stages is None  # (an old run: one cut; new: 3 under a cap)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(dict(OLD_CONFIG, student_steps_scale=1.2, novel_views=3)))
    assert {k: saved_flags(str(tmp_path), train.TRAIN_GROUPS)[k] for k in ("student_steps_scale", "novel_views")} \
        == dict(student_steps_scale=1.2, novel_views=3)
    assert saved_flags(str(tmp_path / "none"), train.TRAIN_GROUPS) == {}  # no saved run: nothing, not the old values
    older = {k: v for k, v in OLD_CONFIG.items()
             if k not in ("num_max_ratio", "student_max_ratio", "second_prune_iter")}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(older))
    dp = train.build_parser().build({}, saved_flags(str(tmp_path), train.TRAIN_GROUPS))[3]
    assert (dp.num_max_ratio, dp.student_max_ratio, dp.second_prune_iter) == (None, None, 20000)
    assert (DistillParams().num_max_ratio, DistillParams().student_max_ratio) == (0.4, 0.12)
    # render.py: the saved scene settings, its own flags never from the file, explicit flags win
    dataset, pipe, own = render.read_flags(["-m", str(tmp_path), "--sh_degree", "2"])
    assert (dataset.source_path, dataset.eval, dataset.resolution) == ("scene", True, None)
    assert dataset.sh_degree == 2 and dataset.model_path == str(tmp_path)
    assert own == render.RenderParams()  # the saved "quiet": true is train.py's


def test_a_config_value_of_the_wrong_type_names_the_file_and_flag(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps(dict(OLD_CONFIG, sh_degree="three")))
    with pytest.raises(UserError, match=r"cfg_args.json: sh_degree is \"three\", not int"):
        render.read_flags(["-m", str(tmp_path)])
    (tmp_path / CONFIG_NAME).write_text(json.dumps(dict(OLD_CONFIG, sh_degree=7)))
    with pytest.raises(UserError, match="--sh_degree 7 must be between 0 and 3"):
        render.read_flags(["-m", str(tmp_path)])
