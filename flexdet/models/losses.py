"""YOLOX detection loss for one time step: iou_weight * GIoU + objectness BCE + class BCE (+ optional L1).

Per-target `weights` (N,) scale a ground-truth box's positive terms (confidence-weighted pseudo labels);
a per-sample `bg_weight` scales the objectness loss of background anchors. Defaults give plain YOLOX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou_loss

from flexdet.models.assigner import simota_assign
from flexdet.models.head import decode_boxes


def detection_loss(logits: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor, targets: list[dict],
                   iou_weight: float = 5.0, use_l1: bool = False, center_radius: float = 2.5
                   ) -> dict[str, torch.Tensor]:
    """logits (B, A, 5 + K) from the head; grid (A, 2) cell indices; strides (A,); targets: B dicts with
    boxes (N, 4) xyxy px, labels (N,) int64, optional weights (N,), optional bg_weight (scalar)."""
    num_classes = logits.shape[-1] - 5
    boxes = box_convert(decode_boxes(logits[..., :4], grid, strides), "cxcywh", "xyxy")
    obj_logits = logits[..., 4]
    centers = (grid + 0.5) * strides[:, None]
    obj_target = torch.zeros_like(obj_logits)
    obj_weight = torch.ones_like(obj_logits)
    fg_boxes, fg_targets, fg_weights, fg_cls, fg_cls_target, fg_reg, fg_l1_target = [], [], [], [], [], [], []
    for b, target in enumerate(targets):
        gt_boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=logits.device).reshape(-1, 4)
        gt_labels = torch.as_tensor(target["labels"], dtype=torch.int64, device=logits.device).reshape(-1)
        gt_weights = _optional(target.get("weights"), gt_labels.shape[0], logits)
        obj_weight[b] = float(target.get("bg_weight", 1.0))
        assignment = simota_assign(boxes[b].detach(), logits[b, :, 5:].detach(), obj_logits[b].detach(), centers,
                                   strides, gt_boxes, gt_labels, center_radius)
        fg = assignment.fg_mask
        if not bool(fg.any()):
            continue
        matched = assignment.matched_gt
        obj_target[b, fg] = 1.0
        obj_weight[b, fg] = gt_weights[matched]
        fg_boxes.append(boxes[b, fg])
        fg_targets.append(gt_boxes[matched])
        fg_weights.append(gt_weights[matched])
        fg_cls.append(logits[b, fg, 5:])
        fg_cls_target.append(F.one_hot(gt_labels[matched], num_classes).float() * assignment.matched_iou[:, None])
        if use_l1:
            fg_reg.append(logits[b, fg, :4])
            fg_l1_target.append(_l1_target(gt_boxes[matched], grid[fg], strides[fg]))
    num_fg = max(sum(len(w) for w in fg_weights), 1)
    loss_obj = F.binary_cross_entropy_with_logits(obj_logits, obj_target, weight=obj_weight, reduction="sum") / num_fg
    zero = logits.sum() * 0.0
    if fg_weights:
        weights = torch.cat(fg_weights)
        loss_iou = (generalized_box_iou_loss(torch.cat(fg_boxes), torch.cat(fg_targets), reduction="none")
                    * weights).sum() / num_fg
        loss_cls = (F.binary_cross_entropy_with_logits(torch.cat(fg_cls), torch.cat(fg_cls_target), reduction="none")
                    .sum(-1) * weights).sum() / num_fg
    else:
        loss_iou = loss_cls = zero
    losses = {"iou": loss_iou, "obj": loss_obj, "cls": loss_cls}
    total = iou_weight * loss_iou + loss_obj + loss_cls
    if use_l1:
        loss_l1 = (F.l1_loss(torch.cat(fg_reg), torch.cat(fg_l1_target), reduction="none").sum(-1)
                   * weights).sum() / num_fg if fg_weights else zero
        losses["l1"] = loss_l1
        total = total + loss_l1
    losses["total"] = total
    losses["num_fg"] = torch.tensor(float(num_fg if fg_weights else 0), device=logits.device)
    return losses


def _optional(values: torch.Tensor | None, count: int, like: torch.Tensor) -> torch.Tensor:
    if values is None:
        return torch.ones(count, dtype=like.dtype, device=like.device)
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(count)


def _l1_target(gt_boxes: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Encode xyxy boxes into the head's regression space (inverse of decode_boxes)."""
    cxcywh = box_convert(gt_boxes, "xyxy", "cxcywh")
    xy = cxcywh[:, :2] / strides[:, None] - grid
    wh = torch.log(cxcywh[:, 2:] / strides[:, None] + 1e-8)
    return torch.cat([xy, wh], dim=1)
