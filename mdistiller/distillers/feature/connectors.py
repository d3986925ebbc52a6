"""What the feature distillers with learnable connectors share (FITNET :mod:`.fitnet`, OFD
:mod:`.ofd`, VID :mod:`.vid`, REVIEWKD :mod:`.reviewkd`).

The connectors are submodules named as in mdistiller (``conv_reg``, ``connectors``,
``regressors``, ``abfs``), so mdistiller distiller checkpoints load and the optimizer
finds them through ``get_learnable_parameters()``. Shapes come from one probe forward of
each model at construction; a pair the method cannot connect raises ``ConfigError``.
"""

from ...utils.errors import ConfigError


def check_input_size(cfg, name):
    """``name.INPUT_SIZE`` is a pair of positive ints (the feature-shape probe's input)."""
    size = list(cfg[name].INPUT_SIZE)
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
        raise ConfigError(f"{name}.INPUT_SIZE must be two positive integers (height, width), got {size}")
