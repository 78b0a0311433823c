"""Errors the user has to fix (bad data, bad configuration), as opposed to bugs.

The command-line tools print a UserError as one block `error: <file>: <problem>; <fix>` and exit
with status 2, without a traceback (frcnn.cli.run_main; `--debug` shows it). Anything else keeps
its traceback. Messages name the file (and the object) first, then the problem, then the fix.
"""


class UserError(Exception):
    """Something the user can fix; str() is the whole message."""

    exit_code = 2


class DataError(UserError, ValueError):
    """A data set problem: the message names the file, the object and the fix. Several problems
    (e.g. every bad annotation of a folder) may be listed, one per line."""


class ConfigError(UserError, ValueError):
    """A configuration problem (cfg yml, --set pairs, command-line options, model files)."""


__all__ = ["UserError", "DataError", "ConfigError"]
