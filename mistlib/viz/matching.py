"""The detections of one image scored against its ground truth, as Table 2 matches them (§7).

:func:`localisation_errors` splits detections into matched and false ones and ground truths into found and
missed ones (Figure 5); :func:`correct_detections` adds the label (Table 2's "both", Figure 6). Detections
are keypoints (K, 3) as (x, y, s), windows ``(x ± s/2, y ± s/2)``; ground truths are xyxy boxes (L, 4).
"""

from __future__ import annotations

import torch

from mistlib.metrics import keypoints_to_boxes, match_boxes


def localisation_errors(
    keypoints: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5
) -> dict[str, torch.Tensor]:
    """Split one image's detections into matched and false ones, and its ground truths into found and missed.

    Matching is the one-to-one IoU matching of Table 2 (:func:`mistlib.metrics.match_boxes`).

    Args:
        keypoints: (K, 3) detections as (x, y, s); gt_boxes: (L, 4) xyxy boxes.

    Returns: long tensors of indices: ``matched`` (M,) detections with their ground truths ``matched_gt``
    (M,), ``false`` (K - M,) detections matched to nothing, ``missed`` (L - M,) ground truths never found.

    Example:
        >>> keypoints = torch.tensor([[5.0, 5.0, 10.0], [40.0, 40.0, 10.0]])
        >>> errors = localisation_errors(keypoints, torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]]))
        >>> {name: value.tolist() for name, value in errors.items()}
        {'matched': [0], 'matched_gt': [0], 'false': [1], 'missed': [1]}
    """
    gt_index, det_index = match_boxes(
        keypoints_to_boxes(keypoints.detach().cpu().double()),
        gt_boxes.detach().cpu().double(),
        iou_threshold=iou_threshold,
    )
    det_free = torch.ones(keypoints.shape[0], dtype=torch.bool)
    det_free[det_index] = False
    gt_free = torch.ones(gt_boxes.shape[0], dtype=torch.bool)
    gt_free[gt_index] = False
    return {
        "matched": det_index,
        "matched_gt": gt_index,
        "false": det_free.nonzero().flatten(),
        "missed": gt_free.nonzero().flatten(),
    }


def correct_detections(
    keypoints: torch.Tensor,
    logits: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Which detections are right under Table 2's "both": matched one-to-one at IoU >= 0.5, same label.

    Args:
        keypoints: (K, 3); logits: (K, classes); gt_boxes: (L, 4) xyxy; gt_labels: (L,) integer labels.

    Returns: (K,) bool.

    Example:
        >>> keypoints = torch.tensor([[5.0, 5.0, 10.0], [25.0, 5.0, 10.0]])
        >>> logits = torch.tensor([[0.0, 3.0], [0.0, 3.0]])  # both say "1"
        >>> gt_boxes, gt_labels = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]]), torch.tensor([1, 0])
        >>> correct_detections(keypoints, logits, gt_boxes, gt_labels).tolist()
        [True, False]
    """
    det_boxes = keypoints_to_boxes(keypoints.detach().cpu().double())
    _, det_index = match_boxes(
        det_boxes, gt_boxes.detach().cpu().double(), logits.argmax(-1).cpu(), gt_labels.cpu(), iou_threshold
    )
    right = torch.zeros(keypoints.shape[0], dtype=torch.bool)
    right[det_index] = True
    return right
