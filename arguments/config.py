"""The saved configuration, <model>/cfg_args.json: the run's flags as one flat JSON object (never evaluated as code).

Written from the flag groups of train.py; read back into typed values for the groups a CLI asks for. Files of
earlier versions load too: their -1/0 numbers for "automatic/off" are read as None.
"""
import dataclasses
import json
import os

from arguments.fields import flag_specs, from_legacy
from utils.errors import UserError
from utils.system_utils import write_json

CONFIG_NAME = "cfg_args.json"


def config_dict(*groups):
    """The flat {flag: value} of flag group instances (what cfg_args.json holds)."""
    out = {}
    for g in groups:
        out.update(dataclasses.asdict(g))
    return out


def save_config(model_path, config):
    """Write a config_dict to <model>/cfg_args.json."""
    write_json(os.path.join(model_path, CONFIG_NAME), config)


def load_config(model_path):
    """The raw flag dictionary in <model>/cfg_args.json ({} when there is none)."""
    path = os.path.join(model_path, CONFIG_NAME)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            cfg = json.load(f)
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-run train.py or delete it and pass the flags")
    if not isinstance(cfg, dict):
        raise UserError(f"{path} does not hold a flag dictionary")
    return cfg


_JSON_TYPES = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def _typed(spec, value, where):
    """A saved value as the field's type; a UserError naming the file and flag when it is not one."""
    value = from_legacy(spec, value)
    if value is None and spec.optional:
        return None
    items = value if spec.is_list and isinstance(value, list) else [value]
    ok = (spec.is_list == isinstance(value, list) and all(
        isinstance(v, _JSON_TYPES[spec.base]) and (spec.base is bool or not isinstance(v, bool)) for v in items))
    if not ok:
        kind = ("a list of " if spec.is_list else "") + spec.base.__name__
        raise UserError(f"{where}: {spec.name} is {json.dumps(value)}, not {kind}: fix the file, or pass "
                        f"--{spec.name} explicitly")
    if spec.base is float:
        return [float(v) for v in value] if spec.is_list else float(value)
    return value


def saved_flags(model_path, groups, cfg=None):
    """{flag: typed value} of the fields of ``groups`` saved in <model>/cfg_args.json (``cfg``: its contents,
    when already read). Keys of other flags (another CLI's, a removed flag) are ignored; a flag the file lacks (it
    was written before the flag existed) gets the value that means that version's behaviour, where declared."""
    where = os.path.join(model_path, CONFIG_NAME)
    cfg = load_config(model_path) if cfg is None else cfg
    out = {}
    for cls in groups:
        for spec in flag_specs(cls):
            if spec.name in cfg:
                out[spec.name] = _typed(spec, cfg[spec.name], where)
            elif cfg and spec.absent_value() != spec.default:
                out[spec.name] = spec.absent_value()
    return out
