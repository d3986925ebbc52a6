"""FITNET: FitNets hints (Romero et al.), a regressed student stage matched to the teacher's.

Declares and reads mdistiller's config node ``FITNET``; its learnable modules keep
mdistiller's names, so mdistiller checkpoints load."""

from ...utils.errors import ConfigError
from ..registry import register_distiller
from . import losses
from .base import ConvReg, FeatureDistiller, loss_node, model_label, probe_features
from .connectors import check_input_size


@register_distiller("FITNET")
class FitNet(FeatureDistiller):
    """FitNets (Romero et al., ICLR 2015): regress stage ``FITNET.HINT_LAYER`` to the teacher's."""

    cfg_node = "FITNET"

    @staticmethod
    def defaults(c):
        c.HINT_LAYER = 2  # index into feats["feats"] of the hinted stage (0..4)
        c.INPUT_SIZE = (32, 32)  # input size used to probe the feature shapes
        c.LOSS = loss_node(100.0)  # FEAT_WEIGHT: weight of the hint (MSE) term

    @classmethod
    def check_config(cls, cfg, used):
        super().check_config(cfg, used)
        check_input_size(cfg, "FITNET")

    def __init__(self, student, teacher, cfg):
        super().__init__(student, teacher, cfg)
        self.hint_layer = self.opts.HINT_LAYER
        shapes = [[f.shape for f in probe_features(m, self.opts.INPUT_SIZE)["feats"]] for m in (student, teacher)]
        if not -len(shapes[0]) <= self.hint_layer < min(map(len, shapes)):
            raise ConfigError(f"FITNET.HINT_LAYER = {self.hint_layer} is out of range for the "
                              f"{len(shapes[0])}-stage student; use 0..{min(map(len, shapes)) - 1}")
        s, t = (sh[self.hint_layer] for sh in shapes)
        try:
            self.conv_reg = ConvReg(s, t)
        except ValueError as e:
            raise ConfigError(f"FITNET cannot pair {model_label(cfg, 'student')} with {model_label(cfg, 'teacher')} "
                              f"at HINT_LAYER {self.hint_layer}: {e}; choose another FITNET.HINT_LAYER") from None

    def feature_loss(self, feats_s, feats_t, **kwargs):
        f_s = self.conv_reg(feats_s["feats"][self.hint_layer])
        return losses.fitnet_loss(f_s, feats_t["feats"][self.hint_layer])
