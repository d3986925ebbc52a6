"""The module that is exported: the student's logits only, optionally from uint8 input."""

import torch
import torch.nn as nn


class LogitsOnly(nn.Module):
    """``model(x)[0]``: the zoo's ``(logits, feats)`` reduced to logits (the zoo is unchanged).

    A library model (``timm:``/``torchvision:``, an ExternalNet) is exported as its own
    classifier (``model.model``), so none of the feature extraction enters the graph.
    With ``mean``/``std`` the input is uint8 NCHW RGB and ``(x / 255 - mean) / std`` is
    computed inside, as the evaluation pipeline does (:class:`~mdistiller.dataset.augment.BatchTransform`).
    """

    def __init__(self, model, mean=None, std=None):
        super().__init__()
        inner = getattr(model, "model", None)
        self.external = isinstance(inner, nn.Module) and hasattr(model, "normalize_state_dict")
        self.model = inner if self.external else model
        self.preprocess = mean is not None
        if self.preprocess:
            std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.register_buffer("scale", 1 / (255 * std_t))
            self.register_buffer("shift", -mean_t / std_t)

    def forward(self, x):
        if self.preprocess:
            x = x.to(torch.float32) * self.scale + self.shift
        out = self.model(x)
        return out if self.external else out[0]
