"""SimOTA label assignment (YOLOX): choose, per ground-truth box, its dynamic-k lowest-cost anchors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

CANDIDATE_TOPK = 10
OUTSIDE_COST = 1e5


@dataclass
class Assignment:
    """fg_mask (A,) bool; for the fg anchors in order: matched_gt (F,) index and matched_iou (F,)."""

    fg_mask: torch.Tensor
    matched_gt: torch.Tensor
    matched_iou: torch.Tensor


@torch.no_grad()
def simota_assign(pred_boxes: torch.Tensor, cls_logits: torch.Tensor, obj_logits: torch.Tensor,
                  centers: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                  center_radius: float = 2.5) -> Assignment:
    """Assign anchors of one image. pred_boxes (A, 4) xyxy px; cls_logits (A, K); obj_logits (A,);
    centers (A, 2) anchor centres px; strides (A,); gt_boxes (N, 4) xyxy px; gt_labels (N,) int64."""
    num_anchors, num_classes = cls_logits.shape
    empty = Assignment(torch.zeros(num_anchors, dtype=torch.bool, device=centers.device),
                       gt_labels.new_zeros(0), pred_boxes.new_zeros(0))
    if gt_boxes.shape[0] == 0:
        return empty
    cx, cy = centers[None, :, 0], centers[None, :, 1]
    in_box = ((cx > gt_boxes[:, 0:1]) & (cx < gt_boxes[:, 2:3]) & (cy > gt_boxes[:, 1:2]) & (cy < gt_boxes[:, 3:4]))
    gt_cx = (gt_boxes[:, 0:1] + gt_boxes[:, 2:3]) / 2
    gt_cy = (gt_boxes[:, 1:2] + gt_boxes[:, 3:4]) / 2
    radius = center_radius * strides[None]
    in_center = ((cx - gt_cx).abs() < radius) & ((cy - gt_cy).abs() < radius)
    candidate = (in_box | in_center).any(dim=0)
    if not bool(candidate.any()):
        return empty
    in_both = (in_box & in_center)[:, candidate]
    ious = box_iou(gt_boxes, pred_boxes[candidate].float())
    scores = (cls_logits[candidate].float().sigmoid() * obj_logits[candidate, None].float().sigmoid()).sqrt()
    onehot = F.one_hot(gt_labels, num_classes).float()
    num_gt, num_cand = ious.shape
    cls_cost = F.binary_cross_entropy(scores[None].expand(num_gt, -1, -1), onehot[:, None].expand(-1, num_cand, -1),
                                      reduction="none").sum(-1)
    cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + OUTSIDE_COST * (~in_both).float()
    topk_ious = ious.topk(min(CANDIDATE_TOPK, num_cand), dim=1).values
    dynamic_k = topk_ious.sum(dim=1).int().clamp(min=1)
    ranks = cost.argsort(dim=1).argsort(dim=1)
    matching = ranks < dynamic_k[:, None]
    shared = matching.sum(dim=0) > 1
    if bool(shared.any()):
        best = cost[:, shared].argmin(dim=0)
        matching[:, shared] = False
        matching[best, shared.nonzero()[:, 0]] = True
    fg_candidates = matching.any(dim=0)
    matched_gt = matching[:, fg_candidates].float().argmax(dim=0)
    matched_iou = ious[matched_gt, fg_candidates.nonzero()[:, 0]]
    fg_mask = torch.zeros(num_anchors, dtype=torch.bool, device=centers.device)
    fg_mask[candidate.nonzero()[:, 0][fg_candidates]] = True
    return Assignment(fg_mask, matched_gt, matched_iou)
