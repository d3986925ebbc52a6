"""What every command-line tool shares: one-line errors and warnings, and ``--debug``."""

import argparse
import sys

from ..runs.loggers import setup_logging
from ..utils.runtime import REPO_ROOT  # noqa: F401 (the tools' name for it)
from ..utils.errors import user_errors  # noqa: F401 (the tools import it from here)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the tools' error contract: a bad argument is one line on stderr
    (``error: <tool>: <problem>; see --help``) and exit code 2, without the usage block."""

    def error(self, message):
        print(f"error: {self.prog}: {' '.join(message.split())}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)


def add_debug_flag(parser):
    """``--debug`` (tracebacks) and ``--quiet`` (errors only): every tool has both."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    add_quiet_flag(parser)


def add_quiet_flag(parser):
    parser.add_argument("--quiet", action="store_true", help="print errors only (sets LOG.LEVEL to ERROR)")


def run_tool(body, debug, quiet=False):
    """Call ``body()`` (returning an exit code) with one-line user errors and the
    package's messages (``logging``) on stdout, errors only with ``quiet``."""
    with user_errors(debug) as result, setup_logging(quiet=quiet):
        result["code"] = body()
    return result.get("code", 0) or 0
