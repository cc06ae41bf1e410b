"""The metrics of §7: reconstruction RMSE (Table 1), instance detection and classification (Table 2).

Table 1 reports the root mean square error between images and reconstructions, pooled over every pixel of
the test set. Table 2 reports, on MNIST hard, three shares of ground-truth digits (§7.2):

``iou50``
    matched one-to-one by a detection whose window ``(x ± s/2, y ± s/2)`` has IoU >= 0.5 with their box;
``classification``
    whose label is predicted somewhere in the image, location ignored: the multiset overlap
    ``sum_c min(#pred_c, #true_c)`` over the ``L`` ground-truth labels, as the authors' public evaluation
    ("1 - missed label counts / number of objects", with missed = ``L - overlap``);
``both``
    matched one-to-one by a detection with IoU >= 0.5 *and* the same predicted label (argmax of its logits).

Matching is optimal, not greedy: among all one-to-one assignments it takes one with the most valid pairs
(ties broken by the largest total IoU), via ``scipy.optimize.linear_sum_assignment``. This is never below
the authors' greedy matching. Over a data set the shares are pooled: matched digits / all digits.
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment

from mistlib.checks import check_finite, check_float, check_keypoints, check_rank, check_tensor

IOU_THRESHOLD = 0.5  # §7.2: "assign it as a match if the IoU score is over 50%"


def check_iou_threshold(value: float) -> float:
    """Refuse an IoU threshold outside (0, 1] (NaN included): no match could be counted, or all would be.

    Example:
        >>> check_iou_threshold(2.0)
        Traceback (most recent call last):
        ...
        ValueError: iou_threshold must be a number in (0, 1], got 2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"iou_threshold must be a number in (0, 1], got {value!r}")
    return float(value)


COUNTS = ("images", "instances", "matched_iou50", "labelled", "label_overlap", "matched_both")


def keypoints_to_boxes(keypoints: torch.Tensor) -> torch.Tensor:
    """The square windows of patches ``(x, y, s)`` as ``xyxy`` boxes ``(x - s/2, y - s/2, x + s/2, y + s/2)``.

    Args:
        keypoints: ``(B, K, 3)`` (or any ``(..., 3)``) float tensor of ``(x, y, s)`` in pixels.

    Returns: ``(B, K, 4)`` (or ``(..., 4)``) xyxy boxes in pixels; differentiable.

    Example:
        >>> keypoints_to_boxes(torch.tensor([[[10.0, 20.0, 8.0]]]))
        tensor([[[ 6., 16., 14., 24.]]])
    """
    check_tensor("keypoints", keypoints)
    if keypoints.dim() == 0 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (B, K, 3) as (x, y, s), got {tuple(keypoints.shape)}")
    check_float("keypoints", keypoints)
    x, y, s = keypoints.unbind(-1)
    half = s / 2
    return torch.stack((x - half, y - half, x + half, y + half), dim=-1)  # (..., 4)


def _check_boxes(name: str, boxes: torch.Tensor) -> None:
    """Raise unless ``boxes`` is a float ``(N, 4)`` xyxy tensor."""
    check_rank(name, boxes, 2, "(N, 4) as xyxy")
    if boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as xyxy, got shape {tuple(boxes.shape)}")
    check_float(name, boxes)
    check_finite(name, boxes)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Boxes with ``x2 < x1`` or ``y2 < y1`` count as empty. A pair whose union is empty (two zero-area boxes)
    has IoU 0, never NaN.

    Args:
        a, b: ``(N, 4)`` and ``(M, 4)`` float xyxy boxes in pixels.

    Returns: ``(N, M)`` IoU in ``[0, 1]``, in the promoted dtype of ``a`` and ``b``.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2], [5.0, 5, 5, 5]]))
        tensor([[0.3333, 0.0000]])
    """
    _check_boxes("a", a)
    _check_boxes("b", b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)  # (N,)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)  # (M,)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = (bottom_right - top_left).clamp_min(0).prod(-1)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter  # (N, M)
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(dtype).tiny), 0.0)


# -- Table 1: RMSE -------------------------------------------------------------------------------------------
def _squared_error(images: torch.Tensor, reconstructions: torch.Tensor) -> tuple[float, int]:
    """(sum of squared differences in float64, number of values), after checking the two agree."""
    check_tensor("images", images)
    check_tensor("reconstructions", reconstructions)
    if images.shape != reconstructions.shape:
        raise ValueError(f"reconstructions must have shape {list(images.shape)}, got {reconstructions.shape}")
    check_float("images", images)
    check_float("reconstructions", reconstructions)
    check_finite("images", images)
    check_finite("reconstructions", reconstructions)
    if images.numel() == 0:
        raise ValueError("images is empty: RMSE needs at least one pixel")
    diff = reconstructions.detach().double() - images.detach().to(reconstructions.device).double()
    return float(diff.square().sum()), images.numel()


def rmse(images: torch.Tensor, reconstructions: torch.Tensor) -> float:
    """Root mean square error over all pixels of all images (Table 1).

    Args:
        images: ``(B, C, H, W)`` (any shape) with values in ``[0, 1]``.
        reconstructions: same shape as ``images``.

    Returns: ``sqrt(sum((reconstructions - images)^2) / images.numel())`` as a Python float.

    Example:
        >>> rmse(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0], [0, 0]]]]))
        0.5
    """
    total, count = _squared_error(images, reconstructions)
    return math.sqrt(total / count)


class RMSE:
    """Streaming RMSE: feed batches with :meth:`update`, read the pooled RMSE with :meth:`compute`.

    Equals :func:`rmse` of all batches concatenated (total squared error / pixels, then the root), not the
    mean of per-batch RMSEs.

    Example:
        >>> metric = RMSE()
        >>> metric.update(torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2))
        >>> metric.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
        >>> round(metric.compute(), 4)  # sqrt(2 / 4), not (1 + 0) / 2
        0.7071
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.sum_squared_error = 0.0  # float64 sum over every pixel seen
        self.count = 0  # number of pixel values seen

    def update(self, images: torch.Tensor, reconstructions: torch.Tensor) -> None:
        """Add a batch: ``images`` and ``reconstructions`` of the same shape, e.g. ``(B, C, H, W)``."""
        total, count = _squared_error(images, reconstructions)
        self.sum_squared_error += total
        self.count += count

    def compute(self) -> float:
        """The RMSE over every pixel of every batch given to :meth:`update`."""
        if self.count == 0:
            raise ValueError("RMSE.compute() called before any update()")
        return math.sqrt(self.sum_squared_error / self.count)


# -- Table 2: detection and classification -------------------------------------------------------------------
def _max_matching(iou: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximum-cardinality one-to-one matching over ``allowed`` pairs, ties broken by largest total IoU.

    Each allowed pair weighs ``1 + iou / (n + 1)`` with ``n = min(L, K)``: a matching of ``m`` pairs weighs
    less than ``m + 1``, so one more pair always beats any IoU tie-break.
    """
    if not bool(allowed.any()):
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    n = min(iou.shape)
    weight = torch.where(allowed, 1.0 + iou.double() / (n + 1), 0.0)  # (L, K)
    rows, cols = linear_sum_assignment(weight.numpy(), maximize=True)
    keep = allowed.numpy()[rows, cols]
    return torch.as_tensor(rows[keep], dtype=torch.long), torch.as_tensor(cols[keep], dtype=torch.long)


def match_boxes(
    det_boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    det_labels: torch.Tensor | None = None,
    gt_labels: torch.Tensor | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match the ground truths of one image to its detections, one-to-one (§7.2).

    A pair may match when its IoU is ``>= iou_threshold`` (and, when labels are given, the labels agree).
    The matching has as many pairs as possible; among those, the largest total IoU.

    Args:
        det_boxes: ``(K, 4)`` xyxy detection boxes (e.g. ``keypoints_to_boxes(keypoints)[b]``).
        gt_boxes: ``(L, 4)`` xyxy ground-truth boxes.
        det_labels, gt_labels: ``(K,)`` and ``(L,)`` integer labels, both or neither.
        iou_threshold: the smallest IoU that counts as a match.

    Returns: ``(gt_index, det_index)``, two ``(M,)`` long tensors of matched pairs, ``M <= min(L, K)``.

    Example:
        >>> gt = torch.tensor([[0.0, 0, 10, 10]])
        >>> match_boxes(torch.tensor([[50.0, 50, 60, 60], [1.0, 0, 11, 10]]), gt)
        (tensor([0]), tensor([1]))
    """
    _check_boxes("det_boxes", det_boxes)
    _check_boxes("gt_boxes", gt_boxes)
    check_iou_threshold(iou_threshold)
    if (det_labels is None) != (gt_labels is None):
        raise ValueError("det_labels and gt_labels must be given together (or neither)")
    iou = box_iou(gt_boxes.detach().cpu().double(), det_boxes.detach().cpu().double())  # (L, K)
    allowed = iou >= iou_threshold  # (L, K)
    if det_labels is not None and gt_labels is not None:
        allowed &= gt_labels.detach().cpu()[:, None] == det_labels.detach().cpu()[None, :]
    return _max_matching(iou, allowed)


def label_overlap(pred_labels: torch.Tensor, true_labels: torch.Tensor) -> int:
    """Multiset overlap ``sum_c min(#pred_c, #true_c)`` of two label lists; location is ignored.

    Args:
        pred_labels, true_labels: ``(K,)`` predicted, ``(L,)`` true non-negative integer labels of an image.

    Returns: the number of true labels that are predicted (an ``int`` in ``[0, min(K, L)]``).

    Example:
        >>> label_overlap(torch.tensor([0, 9, 9]), torch.tensor([0, 0, 9]))
        2
    """
    for name, labels in (("pred_labels", pred_labels), ("true_labels", true_labels)):
        check_rank(name, labels, 1, "(N,)")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"{name} must be non-negative class indices, got {labels.tolist()}")
    if pred_labels.numel() == 0 or true_labels.numel() == 0:
        return 0
    pred, true = pred_labels.detach().cpu().long(), true_labels.detach().cpu().long()
    classes = int(max(pred.max(), true.max())) + 1
    return int(torch.minimum(pred.bincount(minlength=classes), true.bincount(minlength=classes)).sum())


def detection_metrics(
    keypoints: torch.Tensor,
    logits: torch.Tensor | None,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> dict[str, int]:
    """Counts behind Table 2 for one batch; :class:`DetectionMetrics` pools them into shares.

    Each detection is the window ``(x ± s/2, y ± s/2)`` of a keypoint; its label is ``logits.argmax(-1)``.

    Args:
        keypoints: ``(B, K, 3)`` detections as ``(x, y, s)`` in pixels.
        logits: ``(B, K, C)`` class scores of each patch, or ``None`` (reconstruction, unlabelled data):
            then only ``iou50`` is counted and ``labelled`` stays 0.
        gt_boxes: ``(B, L, 4)`` xyxy ground-truth boxes, padded to a common ``L``.
        gt_labels: ``(B, L)`` integer labels; required with ``logits``, ignored without.
        valid: ``(B, L)`` bool, which ground truths exist (padding is ``False``); ``None``: all of them.
            Explicit, rather than inferred from labels, so unlabelled instances (Gabor) still count for iou50.
        iou_threshold: the smallest IoU that counts as a match.

    Returns: ``{"images", "instances", "matched_iou50", "labelled", "label_overlap", "matched_both"}`` ints:
        ``instances`` valid ground truths, ``labelled`` of them scored for labels (all with logits, else 0).

    Example:
        >>> keypoints = torch.tensor([[[5.0, 5.0, 10.0], [30.0, 30.0, 10.0]]])
        >>> logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # labels 1, 0
        >>> gt_boxes, gt_labels = torch.tensor([[[0.0, 0, 10, 10], [25, 25, 35, 35]]]), torch.tensor([[0, 0]])
        >>> detection_metrics(keypoints, logits, gt_boxes, gt_labels)["matched_both"]
        1
    """
    check_keypoints("keypoints", keypoints)
    batch, k = keypoints.shape[:2]
    check_rank("gt_boxes", gt_boxes, 3, "(B, L, 4) as xyxy")
    if gt_boxes.shape[0] != batch or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must have shape ({batch}, L, 4) as xyxy, got {tuple(gt_boxes.shape)}")
    check_float("gt_boxes", gt_boxes)
    check_iou_threshold(iou_threshold)
    shape = tuple(gt_boxes.shape[:2])  # (B, L)
    if valid is None:
        valid = torch.ones(shape, dtype=torch.bool)
    check_rank("valid", valid, 2, "(B, L)")
    if valid.dtype != torch.bool or tuple(valid.shape) != shape:
        raise ValueError(f"valid must be a bool tensor of shape {shape}, got {valid.dtype} {valid.shape}")
    valid = valid.detach().cpu()
    check_finite("gt_boxes (valid entries)", gt_boxes.detach().cpu()[valid])
    if logits is not None:
        check_rank("logits", logits, 3, "(B, K, C)")
        if tuple(logits.shape[:2]) != (batch, k):
            raise ValueError(f"logits must have shape ({batch}, {k}, C), got {tuple(logits.shape)}")
        if gt_labels is None:
            raise ValueError("gt_labels is required when logits are given")
        check_rank("gt_labels", gt_labels, 2, "(B, L)")
        if tuple(gt_labels.shape) != shape or gt_labels.is_floating_point():
            raise ValueError(f"gt_labels must be integers of shape {shape}, got {tuple(gt_labels.shape)}")
        if bool((gt_labels.detach().cpu()[valid] < 0).any()):
            raise ValueError("gt_labels is negative on valid instances; pass logits=None for unlabelled data")
    det_boxes = keypoints_to_boxes(keypoints.detach().cpu().double())  # (B, K, 4)
    true_boxes = gt_boxes.detach().cpu().double()  # (B, L, 4)
    det_labels = None if logits is None else logits.detach().cpu().argmax(-1)  # (B, K)
    counts = {**dict.fromkeys(COUNTS, 0), "images": keypoints.shape[0]}
    for b in range(keypoints.shape[0]):
        boxes = true_boxes[b][valid[b]]  # (L_b, 4)
        counts["instances"] += boxes.shape[0]
        counts["matched_iou50"] += len(match_boxes(det_boxes[b], boxes, iou_threshold=iou_threshold)[0])
        if det_labels is not None and gt_labels is not None:
            labels = gt_labels[b].detach().cpu()[valid[b]]  # (L_b,)
            counts["labelled"] += labels.shape[0]
            counts["label_overlap"] += label_overlap(det_labels[b], labels)
            both = match_boxes(det_boxes[b], boxes, det_labels[b], labels, iou_threshold=iou_threshold)
            counts["matched_both"] += len(both[0])
    return counts


class DetectionMetrics:
    """Pools :func:`detection_metrics` over batches into the shares of Table 2.

    :meth:`compute` returns ``iou50 = matched_iou50 / instances``, ``classification = label_overlap /
    labelled`` and ``both = matched_both / labelled`` (fractions in ``[0, 1]``; ``None`` when undefined,
    i.e. no instances, or no batch with logits), plus the pooled counts.

    Example:
        >>> metric = DetectionMetrics()
        >>> metric.update(torch.tensor([[[5.0, 5.0, 10.0]]]), None, torch.tensor([[[0.0, 0, 10, 10]]]))
        >>> metric.compute()["iou50"]
        1.0
    """

    def __init__(self, iou_threshold: float = IOU_THRESHOLD) -> None:
        self.iou_threshold = check_iou_threshold(iou_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.counts: dict[str, int] = dict.fromkeys(COUNTS, 0)

    def update(
        self,
        keypoints: torch.Tensor,
        logits: torch.Tensor | None,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        """Add a batch; the arguments are those of :func:`detection_metrics`."""
        batch = detection_metrics(keypoints, logits, gt_boxes, gt_labels, valid, self.iou_threshold)
        for key, value in batch.items():
            self.counts[key] += value

    def compute(self) -> dict[str, float | int | None]:
        """``{"iou50", "classification", "both"}`` pooled over all batches, plus the counts."""
        c = self.counts
        instances, labelled = c["instances"], c["labelled"]
        return {
            "iou50": c["matched_iou50"] / instances if instances else None,
            "classification": c["label_overlap"] / labelled if labelled else None,
            "both": c["matched_both"] / labelled if labelled else None,
            **c,
        }
