"""Backbones: [B, 3, res, res] gamma-encoded RGB in [0, 1] → features [B, out_channels, res/stride, res/stride].

Interface every backbone follows: attributes `out_channels` and `stride` (32), channels-first input in [0, 1]
(each backbone maps it to its own normalisation: x·2 − 1 for EfficientNetV2 and the tiny test backbone, as the
official MeTRAbs PreprocLayer; ImageNet mean/std for MobileNetV3 and ResNet, as their torchvision weights).

Kinds (`Backbone(kind=...)`):
  tiny                       test backbone (TinyBackbone), any out_channels
  efficientnetv2-s/-m/-l     official MeTRAbs structure and key names (metrabs_ros.training.efficientnet)
  mobilenetv3-large/-small   torchvision structure (metrabs_ros.training.mobilenet)
  resnet18/34/50             torchvision structure (metrabs_ros.training.resnet)
  movenet-lightning/-thunder MoveNet's MobileNetV2 ×1.0 / ×1.75 (metrabs_ros.training.movenet_backbone)
  efficientnet-lite0         EfficientNet-Lite0 (metrabs_ros.training.efficientnet_lite)
  movenet-lightning-fpn/-thunder-fpn  MoveNet's trunk + its stride-4 feature pyramid and the keypoint head's first
                             layer (metrabs_ros.training.movenet_fpn; stride 4, 96 channels)
The last five have real-image-pretrained weights (metrabs_ros.training.pretrained_weights; train_pose's
`model.backbone_weights`) and a `stages()` list for freezing or slowing the early stages.
"""
from typing import Optional

import torch
import torch.nn as nn


class TinyBackbone(nn.Module):
    """Test backbone: log2(stride) stride-2 3×3 convs with ReLU (about 0.1 M parameters for stride 32).

    Deterministic under torch.manual_seed; fast enough to build and export in well under a second.
    """

    def __init__(self, out_channels: int = 96, stride: int = 32, width: int = 16, coord_channels: bool = False):
        super().__init__()
        # coord_channels: the last two output channels are the feature-grid x and y coordinates on 0..1
        # (CoordConv), which lets a 1×1 head place heatmap mass by position (used by the fixtures' pose prior).
        self.coord_channels = coord_channels
        conv_channels = out_channels - 2 if coord_channels else out_channels
        if conv_channels < 1:
            raise ValueError(f'out_channels too small: {out_channels}')
        num_down = stride.bit_length() - 1
        if 2 ** num_down != stride or num_down < 1:
            raise ValueError(f'stride must be a power of two >= 2, got {stride}')
        self.out_channels = out_channels
        self.stride = stride
        layers = []
        in_ch = 3
        for i in range(num_down):
            out_ch = conv_channels if i == num_down - 1 else min(width * 2 ** i, conv_channels)
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1))
            layers.append(nn.ReLU())
            in_ch = out_ch
        self.layers = nn.Sequential(*layers)

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        features = self.layers(crops01 * 2.0 - 1.0)
        if not self.coord_channels:
            return features
        _, _, h, w = features.shape
        ys = torch.linspace(0.0, 1.0, h).reshape(1, 1, h, 1).expand(1, 1, h, w)
        xs = torch.linspace(0.0, 1.0, w).reshape(1, 1, 1, w).expand(1, 1, h, w)
        coords = torch.cat([xs, ys], dim=1).to(features.dtype)
        coords = coords.expand(features.shape[0], 2, h, w)
        return torch.cat([features, coords], dim=1)


BACKBONE_KINDS = ('tiny', 'efficientnetv2-s', 'efficientnetv2-m', 'efficientnetv2-l', 'mobilenetv3-large',
                  'mobilenetv3-small', 'resnet18', 'resnet34', 'resnet50', 'movenet-lightning', 'movenet-thunder',
                  'efficientnet-lite0', 'movenet-lightning-fpn', 'movenet-thunder-fpn')
STRIDE_4_KINDS = ('movenet-lightning-fpn', 'movenet-thunder-fpn')


def Backbone(kind: str = 'tiny', out_channels: Optional[int] = None, stride: Optional[int] = None,
             **kwargs) -> nn.Module:
    """Backbone factory; returns a module with the interface described above.

    out_channels: only for 'tiny' (default 96); the real backbones have fixed widths (1280 for EfficientNetV2,
    960/576 for MobileNetV3, 512/2048 for ResNet-18/50, 1280 for MoveNet and EfficientNet-Lite0, 96 for the MoveNet
    pyramids). stride: 'tiny' takes any power of two; the others have a fixed stride (4 for the MoveNet pyramids,
    32 for the rest); pass None (or the fixed value) for them.
    kwargs: 'tiny' → TinyBackbone options; 'efficientnetv2-*' → centered_stride (default True).
    """
    kind = kind.lower()
    if kind == 'tiny':
        return TinyBackbone(out_channels=out_channels or 96, stride=stride or 32, **kwargs)
    if kind not in BACKBONE_KINDS:
        raise ValueError(f'unknown backbone kind {kind!r}; valid: {", ".join(BACKBONE_KINDS)}')
    fixed_stride = 4 if kind in STRIDE_4_KINDS else 32
    if stride is not None and stride != fixed_stride:
        raise ValueError(f'backbone {kind!r} has total stride {fixed_stride}, got stride={stride}')
    if kind in STRIDE_4_KINDS:
        from metrabs_ros.training.movenet_fpn import FPN_KINDS, MoveNetFPN
        model = MoveNetFPN(FPN_KINDS[kind][1], **kwargs)
    elif kind.startswith('efficientnetv2-'):
        from metrabs_ros.training.efficientnet import EfficientNetV2
        model = EfficientNetV2(kind[-1], **kwargs)
    elif kind.startswith('movenet-'):
        from metrabs_ros.training.movenet_backbone import MOVENET_SPECS, MoveNetMobileNetV2
        model = MoveNetMobileNetV2(MOVENET_SPECS[kind], **kwargs)
    elif kind == 'efficientnet-lite0':
        from metrabs_ros.training.efficientnet_lite import EFFICIENTNET_LITE0, EfficientNetLite
        model = EfficientNetLite(EFFICIENTNET_LITE0, **kwargs)
    elif kind.startswith('mobilenetv3-'):
        from metrabs_ros.training.mobilenet import MobileNetV3
        model = MobileNetV3(kind.split('-')[1], **kwargs)
    else:
        from metrabs_ros.training.resnet import ResNet
        model = ResNet(int(kind[len('resnet'):]), **kwargs)
    if out_channels is not None and out_channels != model.out_channels:
        raise ValueError(f'backbone {kind!r} has {model.out_channels} output channels, not {out_channels}')
    return model
