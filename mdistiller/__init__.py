"""mdistiller: knowledge distillation of image classifiers, with Swapped Logit Distillation."""

__version__ = "0.2.0"
