"""EfficientNetV2-S/M/L feature extractor with the module structure (state_dict keys and shapes) of the official
MeTRAbs PyTorch backbone (metrabs_pytorch/backbones/efficientnet.py, itself modelled on torchvision's
efficientnet_v2 with fixed, input-size-independent padding layers and an optional bottom-right stride).

Key layout of `EfficientNetV2.features` (identical to the official `features`, which the official crop model
holds as `backbone.1` after a parameter-free x·2−1 layer `backbone.0`):
  features.padding                 ZeroPad2d (no parameters)
  features.0.{0,1}                 stem: 3×3 stride-2 conv (no bias) + BatchNorm(eps 1e-3) + SiLU
  features.<s>.<b>.block...        stage s = 1..n_stages, block b
      FusedMBConv, expand ratio 1: block.padding, block.0 = k×k conv+BN+SiLU
      FusedMBConv, expand ratio >1: block.padding, block.0 = k×k expand conv+BN+SiLU, block.1 = 1×1 project+BN
      MBConv: block.0 = 1×1 expand+BN+SiLU, block.padding, block.1 = depthwise k×k+BN+SiLU,
              block.2 = squeeze-excitation (fc1, fc2 1×1 convs with bias; SiLU, sigmoid), block.3 = 1×1 project+BN
  features.<n_stages+1>.{0,1}      1×1 conv to 1280 channels + BN + SiLU
Residual connection when stride 1 and in == out channels (stochastic depth is a no-op at inference).

Input: [B, 3, H, W] gamma-encoded RGB in [0, 1]; mapped to x·2 − 1 as the official PreprocLayer. Output:
[B, 1280, H/32, W/32] (for H, W multiples of 32).
"""
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn


class StageConfig(NamedTuple):
    fused: bool          # FusedMBConv (True) or MBConv (False)
    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    num_blocks: int


# (fused, expand, kernel, stride, in, out, blocks); the stride-2 stage that reaches total stride 32 is the one
# that may use the bottom-right stride (official `centered_stride`).
EFFICIENTNET_V2_STAGES = {
    's': [StageConfig(True, 1, 3, 1, 24, 24, 2), StageConfig(True, 4, 3, 2, 24, 48, 4),
          StageConfig(True, 4, 3, 2, 48, 64, 4), StageConfig(False, 4, 3, 2, 64, 128, 6),
          StageConfig(False, 6, 3, 1, 128, 160, 9), StageConfig(False, 6, 3, 2, 160, 256, 15)],
    'm': [StageConfig(True, 1, 3, 1, 24, 24, 3), StageConfig(True, 4, 3, 2, 24, 48, 5),
          StageConfig(True, 4, 3, 2, 48, 80, 5), StageConfig(False, 4, 3, 2, 80, 160, 7),
          StageConfig(False, 6, 3, 1, 160, 176, 14), StageConfig(False, 6, 3, 2, 176, 304, 18),
          StageConfig(False, 6, 3, 1, 304, 512, 5)],
    'l': [StageConfig(True, 1, 3, 1, 32, 32, 4), StageConfig(True, 4, 3, 2, 32, 64, 7),
          StageConfig(True, 4, 3, 2, 64, 96, 7), StageConfig(False, 4, 3, 2, 96, 192, 10),
          StageConfig(False, 6, 3, 1, 192, 224, 19), StageConfig(False, 6, 3, 2, 224, 384, 25),
          StageConfig(False, 6, 3, 1, 384, 640, 7)],
}
LAST_CHANNELS = 1280
BN_EPS = 1e-3


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never going below 90 % of `value` (torchvision's rule)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def fixed_padding(kernel: int, bottom_right: bool = False) -> nn.ZeroPad2d:
    """Input-size-independent 'same' padding for a k×k kernel: (k−1)//2 before, the rest after; with
    `bottom_right` everything shifts by one pixel towards the bottom/right (the official shifted stride)."""
    total = kernel - 1
    before = total // 2 - (1 if bottom_right else 0)
    after = total - total // 2 + (1 if bottom_right else 0)
    return nn.ZeroPad2d((before, after, before, after))


class ConvBNAct(nn.Sequential):
    """conv (no bias) → BatchNorm → optional activation; children '0', '1' (and '2'), as torchvision's
    Conv2dNormActivation. `padding` defaults to (k−1)//2."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 activation=nn.SiLU, padding=None, bn_eps: float = BN_EPS, bn_momentum: float = 0.1):
        padding = (kernel - 1) // 2 if padding is None else padding
        layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False),
                  nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """x · scale(fc2(act(fc1(mean_hw(x))))) with 1×1 convs fc1, fc2 (torchvision naming)."""

    def __init__(self, channels: int, squeeze_channels: int, activation=nn.SiLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return x * scale


class _Residual(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MBConv(_Residual):
    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel: int, stride: int,
                 bottom_right: bool):
        super().__init__()
        expanded = make_divisible(in_channels * expand_ratio)
        layers = nn.Sequential()
        if expanded != in_channels:
            layers.add_module('0', ConvBNAct(in_channels, expanded, 1))
        index = len(layers)
        layers.add_module('padding', fixed_padding(kernel, bottom_right))
        layers.add_module(str(index), ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, padding=0))
        layers.add_module(str(index + 1), SqueezeExcitation(expanded, max(1, in_channels // 4)))
        layers.add_module(str(index + 2), ConvBNAct(expanded, out_channels, 1, activation=None))
        self.block = layers
        self.use_residual = stride == 1 and in_channels == out_channels


class FusedMBConv(_Residual):
    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel: int, stride: int,
                 bottom_right: bool):
        super().__init__()
        expanded = make_divisible(in_channels * expand_ratio)
        layers = nn.Sequential()
        layers.add_module('padding', fixed_padding(kernel, bottom_right))
        if expanded != in_channels:
            layers.add_module('0', ConvBNAct(in_channels, expanded, kernel, stride, padding=0))
            layers.add_module('1', ConvBNAct(expanded, out_channels, 1, activation=None))
        else:
            layers.add_module('0', ConvBNAct(in_channels, out_channels, kernel, stride, padding=0))
        self.block = layers
        self.use_residual = stride == 1 and in_channels == out_channels


class EfficientNetV2(nn.Module):
    """EfficientNetV2 trunk (`size` 's', 'm' or 'l') with the official MeTRAbs key layout (module docstring).

    centered_stride: the last stride-2 stage pads bottom/right (official `centered_stride: true`, used by the
      28-dataset 384 px models); False for configs with `centered_stride: false`.
    """

    def __init__(self, size: str = 's', centered_stride: bool = True):
        super().__init__()
        if size not in EFFICIENTNET_V2_STAGES:
            raise ValueError(f'unknown EfficientNetV2 size {size!r}; valid: {sorted(EFFICIENTNET_V2_STAGES)}')
        stages: Sequence[StageConfig] = EFFICIENTNET_V2_STAGES[size]
        self.size = size
        self.centered_stride = centered_stride
        last_stride2 = max(i for i, s in enumerate(stages) if s.stride == 2)
        features = nn.Sequential()
        features.add_module('padding', fixed_padding(3))
        features.add_module('0', ConvBNAct(3, stages[0].in_channels, 3, 2, padding=0))
        for i_stage, stage in enumerate(stages):
            blocks = []
            for i_block in range(stage.num_blocks):
                first = i_block == 0
                block_type = FusedMBConv if stage.fused else MBConv
                blocks.append(block_type(
                    stage.in_channels if first else stage.out_channels, stage.out_channels, stage.expand_ratio,
                    stage.kernel, stage.stride if first else 1,
                    bottom_right=first and centered_stride and i_stage == last_stride2))
            features.add_module(str(i_stage + 1), nn.Sequential(*blocks))
        features.add_module(str(len(stages) + 1), ConvBNAct(stages[-1].out_channels, LAST_CHANNELS, 1))
        self.features = features
        self.out_channels = LAST_CHANNELS
        self.stride = 32
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out')
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        return self.features(crops01 * 2.0 - 1.0)
