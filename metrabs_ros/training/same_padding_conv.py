"""Convolution with TensorFlow's "SAME" padding, fixed at construction (export-friendly, no shape-dependent ops).

TF "SAME" pads a k×k, stride-s convolution of an n-pixel side by total = max((⌈n/s⌉ − 1)·s + k − n, 0), the
smaller half before (top/left), the larger half after (bottom/right). For stride 1 that is k − 1 (independent of
n); for stride 2 and an even n it is k − 2 (e.g. 3×3: 0 before, 1 after; 5×5: 1 before, 2 after). The backbones
that use this (MoveNet's MobileNetV2, EfficientNet-Lite) see inputs whose sides are multiples of 32, so every
stride-2 layer gets an even side and the fixed pads equal TF's. Other sides raise in forward.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def tf_same_pads(kernel: int, stride: int) -> Tuple[int, int]:
    """(before, after) padding of TF "SAME" for an input side divisible by `stride` (stride 1 or 2)."""
    if stride not in (1, 2):
        raise ValueError(f'stride must be 1 or 2, got {stride}')
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


def same_pad(x: torch.Tensor, pads: Tuple[int, int, int, int], stride: int) -> torch.Tensor:
    """Zero-pads NCHW `x` by `pads` (F.pad order: left, right, top, bottom); checks the sides fit the fixed pads."""
    if stride > 1 and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export() and (
            x.shape[-1] % stride or x.shape[-2] % stride):
        raise ValueError(f'TF SAME padding is fixed for input sides divisible by {stride}, got {tuple(x.shape[-2:])}')
    return F.pad(x, pads) if any(pads) else x


class SamePaddingConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state-dict keys) with TF "SAME" zero padding applied in forward.
    (Not for a conv followed by BatchNorm that fusion.fuse_batchnorm folds: it rebuilds a plain Conv2d.)"""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias)
        self.same_pads = self.pads_for(kernel_size, stride)

    @staticmethod
    def pads_for(kernel: int, stride: int) -> Tuple[int, int, int, int]:
        before, after = tf_same_pads(kernel, stride)
        return before, after, before, after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(same_pad(x, self.same_pads, self.stride[0]))
