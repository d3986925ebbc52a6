"""User-facing error types.

Every error a user can cause by bad input derives from :class:`MdistillerError`.  The
command-line tools print such errors as one line (``error: <message>``) without a
traceback (``--debug`` shows it), so messages must name the problem *and* the fix.
"""

import contextlib
import sys
import warnings


class MdistillerError(Exception):
    """Base class of errors caused by the user's input (config, names, files)."""

    def __str__(self):  # KeyError subclasses would otherwise quote the message
        msg = str(self.args[0]) if self.args else ""
        if msg.startswith("Caught ") and "Original Traceback" in msg:  # re-raised from a DataLoader worker
            last = msg.strip().splitlines()[-1]
            msg = last.split(": ", 1)[1] if ": " in last else last
        return msg


class ConfigError(MdistillerError, ValueError):
    """A config file, key, value or override is invalid."""


class UnknownNameError(MdistillerError, KeyError):
    """A registry lookup failed (unknown model, distiller or dataset name)."""


class DuplicateNameError(MdistillerError, KeyError):
    """A name was registered twice in the same registry."""


class CheckpointError(MdistillerError, RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class DataError(MdistillerError, RuntimeError):
    """A dataset is missing, empty or malformed."""


class NonFiniteLossError(MdistillerError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


class ConfigWarning(UserWarning):
    """A config setting that is accepted but probably not what the user meant."""


def _print_one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


@contextlib.contextmanager
def user_errors(debug=False, result=None, quiet=False):
    """Print user errors (MdistillerError) as ``error: <message>`` on stderr, one line,
    and store exit code 2 in ``result["code"]``; with ``debug`` re-raise with traceback.

    Warnings raised inside are printed as ``warning: <message>`` on stderr (or dropped
    with ``quiet``, e.g. on non-zero ranks); the caller's warning state is restored after."""
    result = {} if result is None else result
    with warnings.catch_warnings():
        warnings.showwarning = _print_one_line_warning
        if quiet:
            warnings.simplefilter("ignore")
        try:
            yield result
        except MdistillerError as e:
            if debug:
                raise
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            result["code"] = 2
