"""frcnn.cli.run_main: user errors -> one block + exit 2, --debug re-raises, bugs keep tracebacks."""
import pytest

from frcnn.cli import run_main
from frcnn.errors import ConfigError, DataError


def _raise(e):
    def main():
        raise e
    return main


def test_user_error_block_and_status(capsys):
    argv = ["tool", "--x", "1"]
    assert run_main(_raise(DataError("a.xml: object 0 ('dog'): bad box; fix it\nb.xml: other")),
                    argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: a.xml: object 0 ('dog'): bad box; fix it"
    assert err[1] == "  b.xml: other" and "--debug" in err[2]
    assert run_main(_raise(ConfigError("c.yml: unknown key")), ["tool"]) == 2


def test_debug_reraises_and_is_removed_from_argv():
    argv = ["tool", "--debug", "--x"]
    with pytest.raises(DataError):
        run_main(_raise(DataError("x")), argv)
    assert argv == ["tool", "--x"]


def test_bugs_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run_main(_raise(ZeroDivisionError("bug")), ["tool"])


@pytest.mark.parametrize("ret,status", [(None, 0), (0, 0), (3, 3), (True, 0), (False, 1),
                                        ("out/final.pth", 0), ("", 1), (0.0, 0), (0.93, 0)])
def test_exit_status_from_return_value(ret, status):
    assert run_main(lambda: ret, ["tool"]) == status
