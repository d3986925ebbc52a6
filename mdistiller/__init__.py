"""mdistiller: knowledge distillation of image classifiers, with Swapped Logit Distillation."""

from .utils.threads import set_openmp_wait_policy

__version__ = "0.2.0"

set_openmp_wait_policy()  # before torch loads OpenMP (see mdistiller.utils.threads)
