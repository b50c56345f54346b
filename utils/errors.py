"""One exception type for mistakes the user can fix (bad flags, missing or broken input files).

CLIs catch it at the top level, print ``error: <message>`` on one line and exit with status 2,
so a user never sees a traceback for a problem that is theirs to fix.
"""
import sys


class UserError(Exception):
    """An input or flag problem; the message names the file or flag and the fix."""


def run_cli(main, argv=None):
    """Call ``main(argv)``; turn a UserError into a one-line message and exit status 2."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


class NonFiniteError(UserError):
    """NaN or infinite values where finite numbers are needed (a diverged training run, a broken PLY)."""
