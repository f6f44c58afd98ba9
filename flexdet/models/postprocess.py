"""Turn raw detector outputs into detections: score = objectness * class probability, class-aware NMS."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert


def postprocess(raw: torch.Tensor, conf_thresh: float = 0.01, nms_thresh: float = 0.45,
                max_detections: int = 300) -> list[dict[str, torch.Tensor]]:
    """raw (B, A, 5 + K) = [cx, cy, w, h px, obj prob, class probs] -> per image {boxes xyxy, scores, labels}."""
    detections = []
    for image in raw:
        scores, labels = (image[:, 5:] * image[:, 4:5]).max(dim=1)
        keep = scores > conf_thresh
        boxes = box_convert(image[keep, :4], "cxcywh", "xyxy")
        scores, labels = scores[keep], labels[keep]
        kept = batched_nms(boxes.float(), scores.float(), labels, nms_thresh)[:max_detections]
        detections.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept].to(torch.int64)})
    return detections
