"""Helpers shared by the tests of the command-line tools."""
import pytest

from utils.errors import run_cli


def cli_error(main, argv, capsys):
    """Run ``main(argv)`` as its CLI does; it must stop with exit status 2 and one ``error: `` line, returned."""
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err
