"""Command lines built from flag groups.

A FlagParser adds one argparse group per flag group (types, choices and switches from the type hints) with every
default suppressed, so parsing yields only the flags the user typed. ``build`` then fills each group as
defaults < saved configuration < flags given, and validates it: one merge rule for every CLI, no argparse
internals. Errors (an unknown flag, a value that is not a number) are one-line UserErrors.
"""
import argparse

from arguments.fields import check_group, flag_specs, from_legacy
from utils.errors import UserError


def _value_parser(spec):
    """argparse ``type=``: text -> the field's type, with the earlier versions' "none" number read as None."""
    def parse(text):
        try:
            value = spec.base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {spec.base.__name__} value: {text!r}") from None
        return value if spec.is_list else from_legacy(spec, value)
    parse.__name__ = spec.base.__name__
    return parse


def _help(spec):
    """The field's help with its default; % escaped for argparse."""
    if spec.base is bool:
        text = spec.meta["help"]
    elif spec.default is None:
        text = f"{spec.meta['help']} (default: {spec.meta['none'] or 'none'}"
        if spec.has_legacy_none():
            text += f"; {spec.legacy_none} also means this"
        text += ")"
    elif spec.default == "" or spec.default == []:
        text = spec.meta["help"]
    else:
        shown = " ".join(map(str, spec.default)) if spec.is_list else spec.default
        text = f"{spec.meta['help']} (default: {shown}"
        if spec.optional and spec.has_legacy_none():
            text += f"; {spec.legacy_none}: {spec.meta['none']}"
        if spec.meta.get("legacy_bool") is not None:
            text += f"; given bare: {spec.meta['legacy_bool'][1]}"
        text += ")"
    return text.replace("%", "%%")


def add_group(parser, cls):
    """Add the flags of the flag group ``cls`` to ``parser`` (an argparse group titled cls.title)."""
    group = parser.add_argument_group(getattr(cls, "title", cls.__name__))
    for spec in flag_specs(cls):
        names = [f"--{spec.name}"] + ([spec.meta["short"]] if spec.meta["short"] else [])
        kw = dict(dest=spec.name, help=_help(spec))
        if spec.base is bool:
            kw["action"] = "store_true"
        else:
            kw["type"] = _value_parser(spec)
            if spec.is_list:
                kw["nargs"] = "+"
            if spec.choices is not None:
                kw["metavar"] = "{" + ",".join(map(str, spec.choices)) + "}"
            if spec.meta.get("legacy_bool") is not None:  # a former switch: given bare, it still switches on
                kw["nargs"], kw["const"] = "?", spec.meta["legacy_bool"][1]
        group.add_argument(*names, **kw)


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser over flag groups: ``given(argv)`` returns the typed flags typed on the command line,
    ``build(given, saved)`` the validated group instances."""

    def __init__(self, groups, **kw):
        super().__init__(argument_default=argparse.SUPPRESS, **kw)
        self.groups = tuple(groups)
        for cls in self.groups:
            add_group(self, cls)

    def error(self, message):
        raise UserError(f"{message} ({self.prog} --help lists the flags)")

    def given(self, argv=None):
        """{flag name: typed value} of the flags given in ``argv`` (sys.argv[1:] when None)."""
        return vars(self.parse_args(argv))

    def build(self, given, saved=None):
        """One validated instance per group, in order: each field from ``given``, else ``saved`` (typed values,
        e.g. from ``arguments.config.saved_flags``), else its default."""
        saved = saved or {}
        out = []
        for cls in self.groups:
            names = [s.name for s in flag_specs(cls)]
            values = {n: given[n] if n in given else saved[n] for n in names if n in given or n in saved}
            out.append(check_group(cls(**values)))
        return tuple(out)
