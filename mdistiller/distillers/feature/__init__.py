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

Each returns ``loss_ce`` and ``loss_kd`` and declares its config node next to its
``forward_train``. The package imports the modules of this folder (and the methods register
themselves); :mod:`mdistiller.distillers.combine` builds and combines any methods.
"""

from .crd import ContrastSampler  # noqa: F401
