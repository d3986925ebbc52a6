from .errors import (  # noqa: F401
    CheckpointError,
    ConfigError,
    DataError,
    DuplicateNameError,
    MdistillerError,
    NonFiniteLossError,
    UnknownNameError,
)
from .registry import Registry  # noqa: F401
