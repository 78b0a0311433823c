"""One wrapper for every command-line tool's `if __name__ == "__main__"`:

    sys.exit(run_main(main))

A frcnn.errors.UserError (bad data or configuration) prints `error: <message>` on stderr and exits
2 without a traceback; `--debug` anywhere on the command line (or FRCNN_DEBUG=1) re-raises it so
the traceback shows. Other exceptions are not touched (their traceback is the bug report).
Exit status from main()'s return value: an int is kept; None, True, a float (an mAP) or a
non-empty str (a model path) -> 0; False or '' -> 1.
"""
import os
import sys

from frcnn.errors import UserError


def _exit_status(ret):
    if isinstance(ret, bool):
        return 0 if ret else 1
    if isinstance(ret, int):
        return ret
    if isinstance(ret, str):
        return 0 if ret else 1
    return 0


def format_error(e):
    """'error: <first line>' and the other lines indented under it."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    return "\n".join(["error: " + lines[0]] + ["  " + ln if ln and not ln.startswith(" ") else ln
                                               for ln in lines[1:]])


def run_main(main, argv=None):
    """Run main() (which parses sys.argv[1:]) and turn a UserError into exit status 2.

    -> the exit status for sys.exit. `--debug` is removed from sys.argv before main() sees it.
    """
    args = sys.argv if argv is None else argv
    debug = os.environ.get("FRCNN_DEBUG", "") not in ("", "0")
    if "--debug" in args[1:]:
        debug = True
        args[:] = [args[0]] + [a for a in args[1:] if a != "--debug"]
    try:
        ret = main()
    except UserError as e:
        if debug:
            raise
        sys.stdout.flush()
        print(format_error(e), file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return e.exit_code
    return _exit_status(ret)
