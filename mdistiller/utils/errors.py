"""User-facing error types.

Every error a user can cause by bad input derives from :class:`MdistillerError`.  The
command-line tools print such errors as one line (``error: <message>``) without a
traceback (``--debug`` shows it), so messages must name the problem *and* the fix.
"""


class MdistillerError(Exception):
    """Base class of errors caused by the user's input (config, names, files)."""

    def __str__(self):  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else ""


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
