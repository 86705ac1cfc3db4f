"""Placeholder until the backbone branch lands: transformers' backbone, feature maps as a list."""

from torch import nn
from transformers import AutoBackbone


class _Backbone(nn.Module):
    def __init__(self, backbone_config):
        super().__init__()
        self.backbone = AutoBackbone.from_config(backbone_config)
        self.channels = list(self.backbone.channels)

    def forward(self, pixel_values):
        return list(self.backbone(pixel_values).feature_maps)


def build_backbone(backbone_config) -> nn.Module:
    return _Backbone(backbone_config)
