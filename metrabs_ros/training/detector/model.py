"""PersonCenterNet: a small anchor-free single-class (person) detector in the TTFNet/CenterNet family.

Input: [B, 3, S, S] letterboxed RGB in [0, 1] (pixel-edge convention: the input spans ``[0, S] x [0, S]``).
Outputs at stride ``out_stride`` (8 or 4), grid ``[S/stride, S/stride]``:
  * ``heat_logits`` [B, 1, h, w]: person-centre heatmap logits (sigmoid = score);
  * ``ltrb_px`` [B, 4, h, w]: distances in input pixels from each cell centre ``((j + 0.5) stride,
    (i + 0.5) stride)`` to the box's left, top, right and bottom edges (``stride · exp(raw)``, always > 0).

Structure: a backbone from :func:`metrabs_ros.training.backbones.Backbone` whose intermediate feature maps at
strides 8, 16 and 32 (and 4 when ``out_stride=4``) feed a light top-down FPN (1x1 laterals, nearest upsampling,
depthwise-separable 3x3 smoothing) and two small heads (depthwise-separable 3x3 + 1x1).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from metrabs_ros.training.backbones import Backbone
from metrabs_ros.training.efficientnet import ConvBNAct

LTRB_LOG_RANGE = (-6.0, 7.0)    # clamp of the raw log-distance before exp (stride·e^7 ≈ 8800 px at stride 8)
HEAT_PRIOR = 0.05               # initial sigmoid of the heatmap (focal-loss bias initialisation)


def _backbone_stages(backbone: nn.Module, kind: str):
    """Splits a Backbone(kind) into (normalise fn, list of sequential stages) whose outputs are its feature maps
    in order of increasing stride."""
    if kind.startswith('mobilenetv3-'):
        def normalise(x):
            return (x - backbone.mean.to(x.dtype)) * backbone.inv_std.to(x.dtype)
        return normalise, list(backbone.features)
    if kind.startswith('resnet'):
        def normalise(x):
            return (x - backbone.mean.to(x.dtype)) * backbone.inv_std.to(x.dtype)
        stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        return normalise, [stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    if kind == 'tiny':
        layers = list(backbone.layers)
        return (lambda x: x * 2.0 - 1.0), [nn.Sequential(*layers[i:i + 2]) for i in range(0, len(layers), 2)]
    raise ValueError(f'backbone {kind!r} is not supported by the detector; use mobilenetv3-small/-large, '
                     f'resnet18/34/50 or tiny')


class MultiScaleBackbone(nn.Module):
    """Runs a Backbone(kind) and returns its last feature map at each of ``strides`` (a dict stride -> tensor)."""

    def __init__(self, kind: str = 'mobilenetv3-small', strides=(8, 16, 32), tiny_width: int = 16):
        super().__init__()
        kind = kind.lower()
        extra = dict(out_channels=128, width=tiny_width) if kind == 'tiny' else {}
        self.trunk = Backbone(kind, **extra)
        self.kind = kind
        self.strides = tuple(strides)
        normalise, stages = _backbone_stages(self.trunk, kind)
        self._normalise = normalise
        self.stages = nn.ModuleList(stages)
        # which stage outputs to keep: the last stage whose output has each stride (found by a dry run)
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64)
            x = self._normalise(probe)
            stage_strides, stage_channels = [], []
            for stage in self.stages:
                x = stage(x)
                stage_strides.append(64 // x.shape[-1])
                stage_channels.append(x.shape[1])
        self.taps = {}
        for stride in self.strides:
            found = [i for i, s in enumerate(stage_strides) if s == stride]
            if not found:
                raise ValueError(f'backbone {kind!r} has no feature map at stride {stride}')
            self.taps[stride] = found[-1]
        self.channels = {s: stage_channels[i] for s, i in self.taps.items()}
        self.last_stage = max(self.taps.values())

    def forward(self, images01: torch.Tensor) -> dict:
        x = self._normalise(images01)
        tapped = {i: s for s, i in self.taps.items()}
        out = {}
        for i, stage in enumerate(self.stages[:self.last_stage + 1]):
            x = stage(x)
            if i in tapped:
                out[tapped[i]] = x
        return out


def separable(channels: int, out_channels: int | None = None) -> nn.Sequential:
    """Depthwise 3x3 conv-BN-ReLU followed by pointwise 1x1 conv-BN-ReLU."""
    out_channels = out_channels or channels
    return nn.Sequential(ConvBNAct(channels, channels, 3, groups=channels, activation=nn.ReLU, bn_momentum=0.03),
                         ConvBNAct(channels, out_channels, 1, activation=nn.ReLU, bn_momentum=0.03))


class PersonCenterNet(nn.Module):
    """See the module docstring. ``config`` keys: backbone, neck_channels, out_stride, head_channels, tiny_width,
    bn_momentum (set on every BatchNorm, the backbone's included: the trunks' own 0.01 lets the inference
    statistics lag for hundreds of steps)."""

    def __init__(self, backbone: str = 'mobilenetv3-small', neck_channels: int = 64, out_stride: int = 8,
                 head_channels: int = 64, tiny_width: int = 16, bn_momentum: float = 0.1):
        super().__init__()
        if out_stride not in (4, 8):
            raise ValueError(f'out_stride must be 4 or 8, got {out_stride}')
        self.out_stride = out_stride
        strides = tuple(s for s in (4, 8, 16, 32) if s >= out_stride)
        self.backbone = MultiScaleBackbone(backbone, strides, tiny_width)
        self.laterals = nn.ModuleDict({
            str(s): ConvBNAct(self.backbone.channels[s], neck_channels, 1, activation=nn.ReLU, bn_momentum=0.03)
            for s in strides})
        self.smooth = nn.ModuleDict({str(s): separable(neck_channels) for s in strides[:-1]})
        self.heat_head = nn.Sequential(separable(neck_channels, head_channels), nn.Conv2d(head_channels, 1, 1))
        self.box_head = nn.Sequential(separable(neck_channels, head_channels), nn.Conv2d(head_channels, 4, 1))
        nn.init.constant_(self.heat_head[-1].bias, -math.log((1 - HEAT_PRIOR) / HEAT_PRIOR))
        nn.init.normal_(self.heat_head[-1].weight, std=0.01)
        nn.init.normal_(self.box_head[-1].weight, std=0.01)
        nn.init.constant_(self.box_head[-1].bias, math.log(2.0))
        self.strides = strides
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = bn_momentum

    def forward(self, images01: torch.Tensor):
        """[B, 3, S, S] in [0, 1] -> (heat_logits [B, 1, S/st, S/st], ltrb_px [B, 4, S/st, S/st])."""
        feats = self.backbone(images01)
        x = self.laterals[str(self.strides[-1])](feats[self.strides[-1]])
        for s in reversed(self.strides[:-1]):
            x = F.interpolate(x, scale_factor=2.0, mode='nearest')
            x = self.smooth[str(s)](x + self.laterals[str(s)](feats[s]))
        heat_logits = self.heat_head(x)
        raw = self.box_head(x).clamp(*LTRB_LOG_RANGE)
        return heat_logits, torch.exp(raw) * float(self.out_stride)


def build_model(config: dict) -> PersonCenterNet:
    """The detector network from a training config's ``model`` section."""
    model_cfg = dict(config.get('model', config))
    keys = ('backbone', 'neck_channels', 'out_stride', 'head_channels', 'tiny_width', 'bn_momentum')
    return PersonCenterNet(**{k: model_cfg[k] for k in keys if k in model_cfg})


def decode_candidates(heat_logits: torch.Tensor, ltrb_px: torch.Tensor, stride: int, top_k: int):
    """Network outputs -> top-``top_k`` candidate boxes per image (no NMS).

    A candidate is a local maximum of the sigmoid heatmap in its 3x3 neighbourhood (non-maxima get score 0);
    its box is ``(cx - l, cy - t, cx + r, cy + b)`` around the cell centre ``((j + 0.5) stride, (i + 0.5) stride)``.
    Returns ``boxes_xyxy_px`` [B, K, 4] in network-input pixels and ``scores`` [B, K] in [0, 1], sorted by score.
    Only static shapes are used, so this exports to ONNX (MaxPool, Equal, TopK, GatherElements).
    """
    batch, _, h, w = heat_logits.shape
    k = min(int(top_k), h * w)
    scores = torch.sigmoid(heat_logits)
    peaks = F.max_pool2d(scores, 3, stride=1, padding=1)
    scores = scores * (peaks == scores).to(scores.dtype)
    top_scores, index = torch.topk(scores.reshape(batch, h * w), k, dim=1)
    ys = torch.div(index, w, rounding_mode='floor')
    xs = index - ys * w
    cx = (xs.to(ltrb_px.dtype) + 0.5) * float(stride)
    cy = (ys.to(ltrb_px.dtype) + 0.5) * float(stride)
    ltrb = torch.gather(ltrb_px.reshape(batch, 4, h * w), 2, index.unsqueeze(1).expand(batch, 4, k))
    boxes = torch.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], dim=2)
    return boxes, top_scores
