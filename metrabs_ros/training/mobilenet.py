"""MobileNetV3-Large/Small feature extractors in plain torch.nn with torchvision's module structure and key names
(`features.0` stem, `features.1..n` inverted-residual blocks with `.block`, `features.<n+1>` last 1×1 conv), so
that a torchvision ImageNet state_dict (its `features.*` entries) loads into `MobileNetV3.features`.

Input: [B, 3, H, W] gamma-encoded RGB in [0, 1], normalised with the ImageNet mean/std (torchvision weights'
convention). Output: [B, 960 (large) | 576 (small), H/32, W/32].
"""
from typing import NamedTuple

import torch
import torch.nn as nn

from metrabs_ros.training.efficientnet import ConvBNAct, SqueezeExcitation, make_divisible

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class BlockConfig(NamedTuple):
    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    hard_swish: bool
    stride: int


_L = BlockConfig
MOBILENET_V3_BLOCKS = {
    'large': [_L(16, 3, 16, 16, False, False, 1), _L(16, 3, 64, 24, False, False, 2),
              _L(24, 3, 72, 24, False, False, 1), _L(24, 5, 72, 40, True, False, 2),
              _L(40, 5, 120, 40, True, False, 1), _L(40, 5, 120, 40, True, False, 1),
              _L(40, 3, 240, 80, False, True, 2), _L(80, 3, 200, 80, False, True, 1),
              _L(80, 3, 184, 80, False, True, 1), _L(80, 3, 184, 80, False, True, 1),
              _L(80, 3, 480, 112, True, True, 1), _L(112, 3, 672, 112, True, True, 1),
              _L(112, 5, 672, 160, True, True, 2), _L(160, 5, 960, 160, True, True, 1),
              _L(160, 5, 960, 160, True, True, 1)],
    'small': [_L(16, 3, 16, 16, True, False, 2), _L(16, 3, 72, 24, False, False, 2),
              _L(24, 3, 88, 24, False, False, 1), _L(24, 5, 96, 40, True, True, 2),
              _L(40, 5, 240, 40, True, True, 1), _L(40, 5, 240, 40, True, True, 1),
              _L(40, 5, 120, 48, True, True, 1), _L(48, 5, 144, 48, True, True, 1),
              _L(48, 5, 288, 96, True, True, 2), _L(96, 5, 576, 96, True, True, 1),
              _L(96, 5, 576, 96, True, True, 1)],
}


class InvertedResidual(nn.Module):
    def __init__(self, cfg: BlockConfig):
        super().__init__()
        act = nn.Hardswish if cfg.hard_swish else nn.ReLU
        conv = dict(bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM)
        layers = []
        if cfg.expanded != cfg.in_channels:
            layers.append(ConvBNAct(cfg.in_channels, cfg.expanded, 1, activation=act, **conv))
        layers.append(ConvBNAct(cfg.expanded, cfg.expanded, cfg.kernel, cfg.stride, groups=cfg.expanded,
                                activation=act, **conv))
        if cfg.use_se:
            layers.append(SqueezeExcitation(cfg.expanded, make_divisible(cfg.expanded // 4, 8),
                                            activation=nn.ReLU, scale_activation=nn.Hardsigmoid))
        layers.append(ConvBNAct(cfg.expanded, cfg.out_channels, 1, activation=None, **conv))
        self.block = nn.Sequential(*layers)
        self.use_residual = cfg.stride == 1 and cfg.in_channels == cfg.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3(nn.Module):
    """MobileNetV3 trunk, `size` 'large' or 'small' (torchvision key layout, total stride 32)."""

    def __init__(self, size: str = 'large'):
        super().__init__()
        if size not in MOBILENET_V3_BLOCKS:
            raise ValueError(f'unknown MobileNetV3 size {size!r}; valid: {sorted(MOBILENET_V3_BLOCKS)}')
        blocks = MOBILENET_V3_BLOCKS[size]
        conv = dict(bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM)
        layers = [ConvBNAct(3, blocks[0].in_channels, 3, 2, activation=nn.Hardswish, **conv)]
        layers += [InvertedResidual(cfg) for cfg in blocks]
        last_in = blocks[-1].out_channels
        layers.append(ConvBNAct(last_in, 6 * last_in, 1, activation=nn.Hardswish, **conv))
        self.features = nn.Sequential(*layers)
        self.size = size
        self.out_channels = 6 * last_in
        self.stride = 32
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer('inv_std', 1.0 / torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out')
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        x = (crops01 - self.mean.to(crops01.dtype)) * self.inv_std.to(crops01.dtype)
        return self.features(x)
