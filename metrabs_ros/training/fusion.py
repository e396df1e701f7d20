"""Fold inference-mode BatchNorm into the preceding convolution (in float64, then back to the weight dtype).

Used before export: the graph gets one Conv instead of Conv + BatchNormalization, and an FP16 export casts
already-folded weights (folding after the cast would round twice).
"""
import copy

import torch
import torch.nn as nn


def fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Conv2d computing bn(conv(x)) with the BN's running statistics (eval mode)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused.weight.data = weight.to(conv.weight.dtype)
    fused.bias.data = bias.to(conv.weight.dtype)
    return fused


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Copy of `module` with every Conv2d → BatchNorm2d pair folded (BN replaced by Identity).

    Pairs are found as consecutive children of an nn.Sequential, and as attributes convK / bnK of one module
    (ResNet blocks). Returns the copy in eval mode."""
    module = copy.deepcopy(module).eval()
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for a, b in zip(names[:-1], names[1:]):
                conv, bn = parent._modules[a], parent._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    parent._modules[a] = fused_conv(conv, bn)
                    parent._modules[b] = nn.Identity()
        for name, child in list(parent._modules.items()):
            if name.startswith('conv') and isinstance(child, nn.Conv2d):
                bn_name = 'bn' + name[len('conv'):]
                bn = parent._modules.get(bn_name)
                if isinstance(bn, nn.BatchNorm2d):
                    parent._modules[name] = fused_conv(child, bn)
                    parent._modules[bn_name] = nn.Identity()
    return module
