"""The eleven feature-based distillers of mdistiller, under mdistiller's names and config keys.

======== =========================================== ===================================
name     features used                               learnable modules (checkpoint keys)
======== =========================================== ===================================
FITNET   stage ``FITNET.HINT_LAYER``                 ``conv_reg``
AT       stages 1..n                                 none
OFD      pre-ReLU stages 1..n                        ``connectors``
RKD      pooled feature                              none
KDSVD    stages 1..n                                 none
CRD      pooled feature (+ memory bank)              ``embed_s``, ``embed_t``, ``contrast``
NST      stages 1..n                                 none
PKT      pooled feature                              none
SP       last stage                                  none
VID      stages 1..n                                 ``regressors``
REVIEWKD stages, pooled; teacher pre-ReLU            ``abfs``
======== =========================================== ===================================

Each returns ``loss_ce`` and ``loss_kd``. :func:`build_distiller` (in :mod:`.combine`)
builds ``DISTILLER.TYPE`` plus the methods of ``DISTILLER.EXTRA``.
"""

from . import connectors, crd, relational  # noqa: F401  (registers the methods)
from .combine import Combined, build_distiller, views_for_cfg  # noqa: F401
from .crd import ContrastSampler  # noqa: F401
