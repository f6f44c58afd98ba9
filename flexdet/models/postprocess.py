"""Turn raw detector outputs into detections: score = objectness * class probability, class-aware NMS.

Rule "rvt" reproduces RVT's YOLOX postprocess and evaluation: rows with obj * max class prob >= threshold,
per-class NMS on that product, reported score = the class probability alone (what RVT hands its evaluator).
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert


def postprocess(raw: torch.Tensor, conf_thresh: float = 0.01, nms_thresh: float = 0.45,
                max_detections: int = 300, rule: str = "flexdet") -> list[dict[str, torch.Tensor]]:
    """raw (B, A, 5 + K) = [cx, cy, w, h px, obj prob, class probs] -> per image {boxes xyxy, scores, labels}
    in descending ranking order; max_detections 0: no cap. Rule "rvt" adds `objectness`."""
    if rule == "rvt":
        return [_rvt_image(image, conf_thresh, nms_thresh, max_detections) for image in raw]
    detections = []
    for image in raw:
        scores, labels = (image[:, 5:] * image[:, 4:5]).max(dim=1)
        keep = scores > conf_thresh
        boxes = box_convert(image[keep, :4], "cxcywh", "xyxy")
        scores, labels = scores[keep], labels[keep]
        kept = batched_nms(boxes.float(), scores.float(), labels, nms_thresh)[:max_detections or None]
        detections.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept].to(torch.int64)})
    return detections


def _rvt_image(image: torch.Tensor, conf_thresh: float, nms_thresh: float, max_detections: int
               ) -> dict[str, torch.Tensor]:
    class_conf, labels = image[:, 5:].max(dim=1)
    ranking = image[:, 4] * class_conf
    keep = ranking >= conf_thresh
    boxes = box_convert(image[keep, :4], "cxcywh", "xyxy")
    kept = batched_nms(boxes, ranking[keep], labels[keep], nms_thresh)[:max_detections or None]
    return {"boxes": boxes[kept], "scores": class_conf[keep][kept], "labels": labels[keep][kept].to(torch.int64),
            "objectness": image[keep, 4][kept]}
