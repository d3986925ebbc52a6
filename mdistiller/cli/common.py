"""What every command-line tool shares: one-line errors and warnings, and ``--debug``."""

import argparse
import math
import os
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


def number(kind=int, low=None, high=None, above=None, what=""):
    """The one bounds check of every tool's numeric options: an argparse ``type`` accepting
    a finite ``kind`` (int or float) with ``low <= value`` (or ``above < value``) and
    ``value <= high``. A bad value is one line through :meth:`ArgumentParser.error`:
    ``argument --steps: must be an integer >= 1, got '0'``."""
    rules = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
             f"<= {high}" if high is not None else ""]
    noun = "an integer" if kind is int else "a number"
    rule = f"{noun} {' and '.join(r for r in rules if r)}".strip() + (f" ({what})" if what else "")

    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or \
                low is not None and value < low or above is not None and value <= above or \
                high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    parse.__name__ = rule  # argparse names the type in some messages
    return parse


def new_folder(text):
    """An argparse ``type`` for a folder a tool creates: refused when it, or a parent, is a file."""
    path = os.path.abspath(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a folder path")
    d = path
    while d and not os.path.exists(d):
        d = os.path.dirname(d)
    if d and not os.path.isdir(d):
        where = "is a file" if d == path else f"is under a file ('{d}')"
        raise argparse.ArgumentTypeError(f"'{text}' {where}; choose a folder path")
    return text


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
