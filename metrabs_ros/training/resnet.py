"""ResNet-18/50 trunks in plain torch.nn with torchvision's key names (conv1, bn1, layer1..layer4; Bottleneck with
the stride on the 3×3 conv, "v1.5"), without the classifier, so that a torchvision ImageNet state_dict loads with
`strict=False` ignoring only `fc.*`.

Input: [B, 3, H, W] gamma-encoded RGB in [0, 1], ImageNet mean/std normalisation. Output: [B, 512 (18) | 2048 (50),
H/32, W/32].
"""
import torch
import torch.nn as nn

from metrabs_ros.training.mobilenet import IMAGENET_MEAN, IMAGENET_STD


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _downsample(in_channels, channels * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_channels, channels * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _downsample(in_channels: int, out_channels: int, stride: int):
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


RESNET_LAYOUTS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    """ResNet trunk (depth 18, 34 or 50), torchvision key layout, total stride 32."""

    def __init__(self, depth: int = 18):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f'unknown ResNet depth {depth}; valid: {sorted(RESNET_LAYOUTS)}')
        block, counts = RESNET_LAYOUTS[depth]
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        for i, (count, channels) in enumerate(zip(counts, (64, 128, 256, 512))):
            blocks = []
            for j in range(count):
                blocks.append(block(in_channels, channels, 2 if (j == 0 and i > 0) else 1))
                in_channels = channels * block.expansion
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
        self.out_channels = in_channels
        self.stride = 32
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer('inv_std', 1.0 / torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        x = (crops01 - self.mean.to(crops01.dtype)) * self.inv_std.to(crops01.dtype)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
