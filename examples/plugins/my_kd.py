"""MYKD: a small logit method kept outside the package, loaded as a plugin.

    python3 tools/train_ours.py --cfg configs/smoke/teacher.yaml   # once: a tiny teacher, seconds
    python3 tools/train_ours.py --cfg configs/smoke/kd.yaml \
        EXPERIMENT.PLUGINS "['examples/plugins/my_kd.py']" DISTILLER.TYPE MYKD MYKD.TEMPERATURE 2 \
        EXPERIMENT.NAME my_kd

(on synthetic data; for real data, ``configs/fashion_mnist/kd.yaml`` with
``DISTILLER.TEACHER_CKPT output/demo/fashion_mnist_demo/teacher/student_best``, the teacher
``python3 tools/demo.py`` trains).

Loss: ``CE(z_s, y) + WEIGHT · T² · KL(σ(z_t/T) ‖ σ(z_s/T))``, Hinton's KD with its own
config node. See docs/new_method.md.
"""

import torch.nn.functional as F

from mdistiller.distillers import register_distiller
from mdistiller.distillers.logit import LogitDistiller
from mdistiller.distillers.losses import kd_loss
from mdistiller.utils.checks import check_non_negative, check_positive


@register_distiller("MYKD")
class MyKD(LogitDistiller):
    cfg_node = "MYKD"

    @staticmethod
    def defaults(node):
        node.TEMPERATURE = 4.0  # softmax temperature
        node.WEIGHT = 1.0  # weight of the KL term

    @classmethod
    def check_config(cls, cfg, used):
        check_positive(cfg.MYKD, "MYKD", ["TEMPERATURE"])
        check_non_negative(cfg.MYKD, "MYKD", ["WEIGHT"])

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher)
        self.temperature, self.weight = cfg.MYKD.TEMPERATURE, cfg.MYKD.WEIGHT

    def losses(self, student, teacher, target, epoch):
        (z_s,), (z_t,) = student, teacher
        return {"loss_ce": F.cross_entropy(z_s, target),
                "loss_kd": self.weight * kd_loss(z_s, z_t, self.temperature)}
