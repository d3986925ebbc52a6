"""Checks shared by the model-zoo tests (not a test module)."""

import torch.nn as nn


def check_feature_api(model, feats, expect_bn=True):
    """mdistiller's feature API agrees with the forward's features; returns the BN list."""
    channels = model.get_stage_channels()
    assert channels == [f.shape[1] for f in feats["feats"]]
    if "preact_feats" in feats:
        assert [p.shape for p in feats["preact_feats"]] == [f.shape for f in feats["feats"]]
    own = {id(m) for m in model.modules()}
    modules = model.get_feat_modules()
    assert isinstance(modules, nn.ModuleList) and len(modules) > 0
    assert all(id(m) in own for m in modules)
    if not expect_bn:  # absent, so distillers needing it can tell with hasattr
        assert not hasattr(model, "get_bn_before_relu")
        return []
    bns = model.get_bn_before_relu()
    assert bns and all(isinstance(b, nn.BatchNorm2d) and id(b) in own for b in bns)
    # the BNs produce the last len(bns) preact features
    assert [b.num_features for b in bns] == channels[-len(bns):]
    return bns
