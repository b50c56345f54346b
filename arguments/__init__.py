"""Typed flag groups (one dataclass each), the command lines built from them and the saved configuration.

    fields.py       flag(): a dataclass field with help, range check and the --steps_scale marker
    groups.py       ModelParams, PipelineParams, OptimizationParams, DistillParams (the reference's names)
    train_flags.py  train.py's own flags and the rules that tie groups together
    cli.py          FlagParser: argparse from the groups; defaults < saved configuration < given flags
    config.py       cfg_args.json: written from the groups, read back typed (earlier versions' files too)
"""
from arguments.cli import FlagParser, add_group
from arguments.config import CONFIG_NAME, config_dict, load_config, save_config, saved_flags
from arguments.fields import (check_group, final_iteration, flag_specs, scale_steps, scaled_count,
                              steps_fields)
from arguments.groups import DistillParams, FlagGroup, ModelParams, OptimizationParams, PipelineParams
from arguments.train_flags import TrainRunParams, check_train_combinations

__all__ = ["CONFIG_NAME", "DistillParams", "FlagGroup", "FlagParser", "ModelParams", "OptimizationParams",
           "PipelineParams", "TrainRunParams", "add_group", "check_group", "check_train_combinations", "config_dict",
           "final_iteration", "flag_specs", "load_config", "save_config", "saved_flags", "scale_steps", "scaled_count",
           "steps_fields"]
