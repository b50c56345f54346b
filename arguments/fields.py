"""Typed flags: a dataclass field carries its help, short flag, allowed range and whether --steps_scale rescales it.

A flag group is a @dataclass whose fields are made with ``flag(...)``. The type hint says what the flag holds:
``int``, ``float``, ``str``, ``bool`` (a switch), ``list[int]``, ``Literal[...]`` (fixed choices) and
``Optional[...]`` (None = automatic / off, said by ``none=``). ``check_group`` validates an instance field by field
(one-line UserErrors naming the flag), so every CLI and every saved configuration is checked the same way.
"""
import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

from utils.errors import UserError

_NO_LEGACY = object()


@dataclass(frozen=True)
class Check:
    """A range rule: ``ok(value)`` must hold; ``rule`` completes "--flag <value> must be ..."."""
    ok: Callable[[Any], bool]
    rule: str


def at_least(low, note=""):
    return Check(lambda v: v >= low, f"at least {low}{note}")


def positive(note=""):
    return Check(lambda v: v > 0, f"positive{note}")


def between(low, high, note=""):
    return Check(lambda v: low <= v <= high, f"between {low} and {high}{note}")


def flag(default, help, *, short=None, steps=False, check=None, none=None, legacy_none=_NO_LEGACY,
         absent=_NO_LEGACY, legacy_bool=None):
    """A dataclass field for one flag.

    steps: an iteration count (or list of them) that --steps_scale rescales.
    none: what None means, for Optional fields (shown in --help).
    legacy_none: the number earlier versions used for None (-1 or 0); still accepted on the command line and in
    cfg_args.json, read as None.
    absent: the value a saved cfg_args.json without this flag means (the behaviour of the versions before the flag
    existed), when it differs from the default; so --resume continues such a run as it began.
    legacy_bool: (value for false, value for true) of a choice that earlier versions saved as a switch.
    """
    meta = dict(help=help, short=short, steps=steps, check=check, none=none, legacy_none=legacy_none, absent=absent,
                legacy_bool=legacy_bool)
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def auto_switch(help):
    """A dataclass field for an auto|on|off flag that earlier versions had as a switch (off when absent): a saved
    true/false reads as on/off, a run from before it as off, and given bare it is on."""
    return flag("auto", help, absent="off", legacy_bool=("off", "on"))


@dataclass(frozen=True)
class FlagSpec:
    """What the CLI builder, the config reader and the checks know of one field."""
    name: str
    base: type  # bool, int, float, str (the element type for lists)
    optional: bool
    is_list: bool
    choices: Optional[tuple]
    default: Any
    meta: dict

    @property
    def legacy_none(self):
        return self.meta["legacy_none"]

    def has_legacy_none(self):
        return self.legacy_none is not _NO_LEGACY

    def absent_value(self):
        """What a saved configuration without this flag means: ``absent`` when declared, else the default."""
        absent = self.meta.get("absent", _NO_LEGACY)
        return self.default if absent is _NO_LEGACY else absent


def _unwrap(hint):
    """(base type, optional, is_list, choices) of a field's type hint."""
    optional, is_list, choices = False, False, None
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        optional = True
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        is_list, hint = True, args[0]
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        hint = type(choices[0])
    return hint, optional, is_list, choices


def flag_specs(cls):
    """The FlagSpecs of a flag group class, in declaration order."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        base, optional, is_list, choices = _unwrap(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        specs.append(FlagSpec(f.name, base, optional, is_list, choices, default, dict(f.metadata)))
    return specs


def steps_fields(cls):
    """Names of the fields marked as iteration counts (what --steps_scale rescales)."""
    return tuple(s.name for s in flag_specs(cls) if s.meta["steps"])


def from_legacy(spec, value):
    """``value`` with the earlier versions' sentinel number for "none" read as None, and a switch's saved
    true/false as the choice that replaced it."""
    if isinstance(value, bool) and spec.meta.get("legacy_bool") is not None:
        return spec.meta["legacy_bool"][value]
    if spec.optional and spec.has_legacy_none() and value == spec.legacy_none and not isinstance(value, bool):
        return None
    return value


def _join(items):
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _none_note(spec):
    if spec.optional and spec.has_legacy_none():
        return f", or {spec.legacy_none} ({spec.meta['none']})"
    return ""


def field_error(spec, value):
    """The one-line message for a bad value of this field, or None when the value is fine."""
    if value is None:
        return None if spec.optional else f"--{spec.name} needs a value"
    for v in (value if spec.is_list else [value]):
        if spec.base is float and not math.isfinite(v):
            return f"--{spec.name} {v} must be a finite number"
        if spec.choices is not None and v not in spec.choices:
            return f"--{spec.name} {v} is unknown: use {_join(spec.choices)}{_none_note(spec)}"
        check = spec.meta["check"]
        if check is not None and not check.ok(v):
            return f"--{spec.name} {v} must be {check.rule}"
    return None


def check_group(group):
    """Validate a flag group instance: each field's own rule, then the group's combination rules (if any)."""
    for spec in flag_specs(type(group)):
        msg = field_error(spec, getattr(group, spec.name))
        if msg:
            raise UserError(msg)
    combined = getattr(group, "check_combinations", None)
    if combined is not None:
        combined()
    return group


def scaled_count(count, f):
    """An iteration count rescaled by ``f`` (rounded, at least 1)."""
    return max(1, int(round(count * f)))


def tail_iterations(schedule, tail):
    """The --student_tail iterations after a student schedule of ``schedule`` iterations."""
    return int(round(schedule * tail)) if tail else 0


def final_iteration(index, iterations, student_steps_scale, student_tail=0.0):
    """The last iteration of model ``index`` in a run whose teachers end at ``iterations`` (the student's, index 3:
    their schedule stretched by --student_steps_scale, then its --student_tail)."""
    if index != 3:
        return iterations
    schedule = scaled_count(iterations, student_steps_scale)
    return schedule + tail_iterations(schedule, student_tail)


def scale_steps(group, f):
    """Rescale the fields of ``group`` marked ``steps=True`` in place by ``f`` (each count stays >= 1; None, an
    automatic value, stays None). Returns ``group``."""
    if not f > 0:
        raise UserError(f"--steps_scale {f} must be positive")
    for name in steps_fields(type(group)):
        value = getattr(group, name)
        if isinstance(value, list):
            setattr(group, name, [scaled_count(v, f) for v in value])
        elif value is not None:
            setattr(group, name, scaled_count(value, f))
    return group
