"""Losses of PersonCenterNet: penalty-reduced focal loss on the centre heatmap (CenterNet) and a GIoU loss on the
ltrb box distances weighted by the TTFNet regression weights (see :mod:`targets`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def heatmap_focal_loss(heat_logits, target_heat, alpha: float = 2.0, gamma: float = 4.0):
    """CenterNet focal loss, summed over cells and divided by the number of peaks (cells with target 1).

    heat_logits, target_heat: [B, 1, h, w]."""
    log_p = F.logsigmoid(heat_logits)
    log_not_p = F.logsigmoid(-heat_logits)
    p = torch.sigmoid(heat_logits)
    positive = (target_heat >= 1.0).to(heat_logits.dtype)
    pos_loss = -log_p * (1 - p) ** alpha * positive
    neg_loss = -log_not_p * p ** alpha * (1 - target_heat) ** gamma * (1 - positive)
    num_pos = positive.sum().clamp(min=1.0)
    return (pos_loss.sum() + neg_loss.sum()) / num_pos


def giou_loss(pred_ltrb, target_ltrb, weight, eps: float = 1e-6):
    """Weighted mean of 1 - GIoU between the boxes that ``pred_ltrb`` and ``target_ltrb`` ([B, 4, h, w], px from
    the same cell centre) describe; ``weight`` [B, h, w] (zero = ignored). Returns 0 when all weights are 0."""
    mask = weight > 0
    if not bool(mask.any()):
        return pred_ltrb.sum() * 0.0
    pred = pred_ltrb.permute(0, 2, 3, 1)[mask]      # [M, 4]
    target = target_ltrb.permute(0, 2, 3, 1)[mask]
    w = weight[mask]
    # boxes relative to the cell centre: (-l, -t, r, b)
    pred_area = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    target_area = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inter_w = (torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 2], target[:, 2])).clamp(min=0)
    inter_h = (torch.minimum(pred[:, 1], target[:, 1]) + torch.minimum(pred[:, 3], target[:, 3])).clamp(min=0)
    inter = inter_w * inter_h
    union = pred_area + target_area - inter
    enclose = ((torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 2], target[:, 2]))
               * (torch.maximum(pred[:, 1], target[:, 1]) + torch.maximum(pred[:, 3], target[:, 3])))
    giou = inter / (union + eps) - (enclose - union) / (enclose + eps)
    return ((1 - giou) * w).sum() / (w.sum() + eps)


def detector_loss(heat_logits, ltrb_px, targets: dict, box_weight: float = 5.0) -> dict:
    """Total loss and its parts; ``targets`` holds torch tensors ``heat`` [B, h, w], ``ltrb`` [B, 4, h, w] and
    ``box_weight`` [B, h, w] (the batched output of :func:`targets.assign_targets`)."""
    heat = heatmap_focal_loss(heat_logits, targets['heat'].unsqueeze(1))
    box = giou_loss(ltrb_px, targets['ltrb'], targets['box_weight'])
    return dict(loss=heat + box_weight * box, heat=heat, box=box)
