"""Backbones: [B, 3, res, res] gamma-encoded RGB in [0, 1] → features [B, out_channels, res/stride, res/stride].

Interface every backbone follows: constructor `(out_channels, stride=32)`, attributes `out_channels` and
`stride`, channels-first input in [0, 1] (each backbone maps it to its own normalisation, here x·2 − 1).
Real backbones (EfficientNetV2, MobileNetV3, ResNet) are a later addition with the same interface.
"""
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


def Backbone(out_channels: int = 96, stride: int = 32, kind: str = 'tiny', **kwargs) -> nn.Module:
    """Backbone factory (`kind`: 'tiny' for now). Returns a module with the interface described above."""
    if kind == 'tiny':
        return TinyBackbone(out_channels=out_channels, stride=stride, **kwargs)
    raise ValueError(f'unknown backbone kind {kind!r}; valid: tiny')
