"""Tests for mistlib.metrics: known answers on tiny cases, a brute-force matching oracle, pooling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mistlib.metrics import (
    RMSE,
    DetectionMetrics,
    box_iou,
    detection_metrics,
    keypoints_to_boxes,
    label_overlap,
    match_boxes,
    rmse,
)


def boxes(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def one_hot_logits(labels: list[int], classes: int = 10) -> torch.Tensor:
    """(1, K, classes) logits whose argmax is ``labels``."""
    return torch.nn.functional.one_hot(torch.tensor(labels), classes).float()[None]


# -- boxes and IoU -------------------------------------------------------------------------------------------
def test_keypoints_to_boxes_known_answer():
    keypoints = torch.tensor([[[10.0, 20.0, 8.0], [0.0, 0.0, 1.0]]])  # (1, 2, 3)
    expected = torch.tensor([[[6.0, 16.0, 14.0, 24.0], [-0.5, -0.5, 0.5, 0.5]]])
    assert torch.equal(keypoints_to_boxes(keypoints), expected)


def test_keypoints_to_boxes_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(B, K, 3\)"):
        keypoints_to_boxes(torch.zeros(1, 2, 4))


def test_box_iou_known_answers():
    a = boxes([0, 0, 10, 10])
    b = boxes([0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5], [10, 0, 20, 10])
    iou = box_iou(a, b)
    assert iou.shape == (1, 5)
    # identical, half shifted (50 / 150), disjoint, contained (25 / 100), touching edges only
    torch.testing.assert_close(iou[0], torch.tensor([1.0, 1 / 3, 0.0, 0.25, 0.0]))
    torch.testing.assert_close(box_iou(b, a), iou.T)


def test_box_iou_zero_area_boxes_give_zero_not_nan():
    points = boxes([3, 3, 3, 3], [3, 3, 3, 3], [0, 0, 0, 10])  # two identical points and a segment
    iou = box_iou(points, torch.cat([points, boxes([0, 0, 10, 10])]))
    assert not torch.isnan(iou).any()
    assert torch.equal(iou, torch.zeros(3, 4))


def test_box_iou_matches_a_brute_force_loop():
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(12, 2, 2, generator=generator) * 20
    all_boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)  # (12, 4) xyxy
    a, b = all_boxes[:5].double(), all_boxes[5:].double()
    expected = torch.zeros(5, 7, dtype=torch.float64)
    for i, j in itertools.product(range(5), range(7)):
        w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
        h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
        area_a = float((a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1]))
        area_b = float((b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]))
        expected[i, j] = w * h / (area_a + area_b - w * h)
    torch.testing.assert_close(box_iou(a, b), expected)


# -- RMSE (Table 1) ------------------------------------------------------------------------------------------
def test_rmse_known_answer():
    images = torch.zeros(2, 1, 2, 2)
    recon = torch.zeros(2, 1, 2, 2)
    recon[0, 0, 0, 0] = 1.0  # one of 8 pixels off by 1
    recon[1, 0, 1, 1] = 0.5  # one off by 0.5
    assert rmse(images, recon) == pytest.approx(math.sqrt((1.0 + 0.25) / 8), abs=1e-12)
    assert rmse(images, images) == 0.0


def test_streaming_rmse_pools_pixels_not_batch_rmses():
    metric = RMSE()
    metric.update(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))  # 4 pixels, error 1: batch RMSE 1
    metric.update(torch.zeros(3, 1, 2, 2), torch.full((3, 1, 2, 2), 0.5))  # 12 pixels, batch RMSE 0.5
    assert metric.compute() == pytest.approx(math.sqrt((4 * 1.0 + 12 * 0.25) / 16), abs=1e-12)  # 0.661
    assert metric.compute() != pytest.approx((1.0 + 0.5) / 2)  # the mean of batch RMSEs (0.75) is wrong
    assert metric.count == 16


def test_streaming_rmse_equals_rmse_of_concatenation():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(10, 1, 8, 8, generator=generator)
    recon = torch.rand(10, 1, 8, 8, generator=generator)
    metric = RMSE()
    for start, stop in [(0, 3), (3, 4), (4, 10)]:  # uneven batches
        metric.update(images[start:stop], recon[start:stop])
    assert metric.compute() == pytest.approx(rmse(images, recon), rel=1e-12)
    metric.reset()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()


def test_rmse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="reconstructions must have shape"):
        rmse(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


# -- matching ------------------------------------------------------------------------------------------------
def test_matching_maximises_matches_where_greedy_and_max_total_iou_fail():
    # Unit-height boxes, so IoU is the 1-D interval IoU. A = [0, 10], B = [2, 12]; d1 = [0, 10], d2 = [-3, 7].
    gt = boxes([0, 0, 10, 10], [2, 0, 12, 10])
    det = keypoints_to_boxes(torch.tensor([[[5.0, 5.0, 10.0], [2.0, 5.0, 10.0]]]))[0]
    iou = box_iou(gt.double(), det.double())  # [[1, 7/13], [8/12, 5/15]]
    torch.testing.assert_close(iou, torch.tensor([[1.0, 7 / 13], [8 / 12, 5 / 15]], dtype=torch.float64))
    # Greedy (best IoU first: A-d1, then B-d2 at 0.33) and max-total-IoU (1.33 > 1.21) both match 1 digit.
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    assert int((iou[rows, cols] >= 0.5).sum()) == 1
    gt_index, det_index = match_boxes(det, gt)
    assert gt_index.tolist() == [0, 1] and det_index.tolist() == [1, 0]  # A-d2 and B-d1: both >= 0.5
    counts = detection_metrics(det.new_tensor([[[5.0, 5.0, 10.0], [2.0, 5.0, 10.0]]]), None, gt[None])
    assert counts["matched_iou50"] == 2 and counts["instances"] == 2


def test_matching_prefers_one_more_match_to_a_larger_total_iou():
    # Intervals of length 10: GT A, B, C at x = 0, 3, 6; detections d1, d2, d3 at x = 0, -3, 3.
    # A-d1 and B-d3 are perfect (total IoU 2.0) but leave C unmatched; A-d2, B-d1, C-d3 match all three
    # (IoU 7/13 each, total 1.62). Maximising total IoU over the pairs >= 0.5 would find only 2 matches.
    gt = boxes([0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10])
    keypoints = torch.tensor([[[5.0, 5.0, 10.0], [2.0, 5.0, 10.0], [8.0, 5.0, 10.0]]])
    det = keypoints_to_boxes(keypoints)[0]
    iou = box_iou(gt.double(), det.double())
    thresholded = torch.where(iou >= 0.5, iou, 0.0)
    rows, cols = linear_sum_assignment(thresholded.numpy(), maximize=True)
    assert int((iou[rows, cols] >= 0.5).sum()) == 2
    gt_index, det_index = match_boxes(det, gt)
    assert gt_index.tolist() == [0, 1, 2] and det_index.tolist() == [1, 0, 2]
    assert detection_metrics(keypoints, None, gt[None])["matched_iou50"] == 3


def test_matching_threshold_is_inclusive():
    gt = boxes([0, 0, 10, 10])
    assert len(match_boxes(boxes([0, 0, 10, 5]), gt)[0]) == 1  # IoU exactly 0.5
    assert len(match_boxes(boxes([0, 0, 10, 4.9]), gt)[0]) == 0  # IoU 0.49
    assert len(match_boxes(boxes([0, 0, 10, 4.9]), gt, iou_threshold=0.4)[0]) == 1


def brute_force_matching(iou: torch.Tensor, allowed: torch.Tensor) -> tuple[int, float]:
    """(most allowed pairs, largest total IoU among those) over every one-to-one assignment."""
    n_gt, n_det = iou.shape
    best = (0, 0.0)
    for dets in itertools.permutations(range(n_det), min(n_gt, n_det)):
        for gts in itertools.permutations(range(n_gt), len(dets)):
            pairs = [(g, d) for g, d in zip(gts, dets, strict=True) if allowed[g, d]]
            candidate = (len(pairs), sum(float(iou[g, d]) for g, d in pairs))
            if candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] > best[1] + 1e-12):
                best = candidate
    return best


@pytest.mark.parametrize("seed", range(12))
def test_matching_agrees_with_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    n_gt, n_det = (
        int(torch.randint(1, 5, (1,), generator=generator)),
        int(torch.randint(1, 5, (1,), generator=generator)),
    )
    gt = torch.cat([torch.rand(n_gt, 2, generator=generator) * 6, torch.full((n_gt, 2), 10.0)], 1)
    gt[:, 2:] += gt[:, :2]  # 10 x 10 boxes near each other: many IoUs around 0.5
    det_keypoints = torch.cat(
        [torch.rand(1, n_det, 2, generator=generator) * 6 + 5, torch.full((1, n_det, 1), 10.0)], 2
    )
    det = keypoints_to_boxes(det_keypoints)[0]
    gt_labels = torch.randint(0, 2, (n_gt,), generator=generator)
    det_labels = torch.randint(0, 2, (n_det,), generator=generator)
    iou = box_iou(gt.double(), det.double())
    for labels in (None, (det_labels, gt_labels)):
        allowed = iou >= 0.5
        if labels is not None:
            allowed &= gt_labels[:, None] == det_labels[None, :]
        gt_index, det_index = match_boxes(det, gt, *(labels or ()))
        assert len(set(gt_index.tolist())) == len(gt_index) and len(set(det_index.tolist())) == len(det_index)
        assert bool(allowed[gt_index, det_index].all())
        count, total = brute_force_matching(iou, allowed)
        assert len(gt_index) == count
        assert float(iou[gt_index, det_index].sum()) == pytest.approx(total, abs=1e-9)


# -- labels and Table 2 --------------------------------------------------------------------------------------
def test_label_overlap_is_multiset_intersection():
    assert label_overlap(torch.tensor([0, 9, 9]), torch.tensor([0, 0, 9])) == 2
    assert label_overlap(torch.tensor([9, 0, 0]), torch.tensor([0, 0, 9])) == 3  # order (location) ignored
    assert label_overlap(torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])) == 0
    assert label_overlap(torch.tensor([4, 4, 5, 7, 7]), torch.tensor([4, 7])) == 2  # extra predictions free
    assert label_overlap(torch.tensor([], dtype=torch.long), torch.tensor([3])) == 0


def test_detection_metrics_known_answer():
    # A = [0, 10]^2 label 3, B = [20, 30] x [0, 10] label 5.
    gt_boxes = boxes([0, 0, 10, 10], [20, 0, 30, 10])[None]  # (1, 2, 4)
    gt_labels = torch.tensor([[3, 5]])
    # d1 = A exactly, label 3; d2 = [22, 32] x [0, 10] (IoU 80/120 with B), label 7; d3 far away, label 5.
    keypoints = torch.tensor([[[5.0, 5.0, 10.0], [27.0, 5.0, 10.0], [60.0, 60.0, 10.0]]])
    counts = detection_metrics(keypoints, one_hot_logits([3, 7, 5]), gt_boxes, gt_labels)
    assert counts == {
        "images": 1,
        "instances": 2,
        "matched_iou50": 2,  # A-d1 (1.0), B-d2 (0.67)
        "labelled": 2,
        "label_overlap": 2,  # {3, 5} are both predicted somewhere (d3's 5 counts: location ignored)
        "matched_both": 1,  # only A-d1: B's detection says 7, and the 5 (d3) is not on B
    }
    metric = DetectionMetrics()
    metric.update(keypoints, one_hot_logits([3, 7, 5]), gt_boxes, gt_labels)
    result = metric.compute()
    assert (result["iou50"], result["classification"], result["both"]) == (1.0, 1.0, 0.5)


def test_both_matches_labels_jointly_not_after_the_iou_matching():
    # Two overlapping digits A = [0, 10], B = [1, 11]; detections exactly on them but with swapped labels.
    gt_boxes = boxes([0, 0, 10, 10], [1, 0, 11, 10])[None]
    keypoints = torch.tensor([[[5.0, 5.0, 10.0], [6.0, 5.0, 10.0]]])
    counts = detection_metrics(keypoints, one_hot_logits([2, 1]), gt_boxes, torch.tensor([[1, 2]]))
    # Best-IoU matching is A-d1, B-d2 (labels disagree); A-d2, B-d1 (IoU 9/11) agree on both labels.
    assert counts["matched_iou50"] == 2 and counts["matched_both"] == 2


def test_valid_mask_ignores_padding_and_unlabelled_data_still_counts_iou():
    gt_boxes = boxes([0, 0, 10, 10], [0, 0, 0, 0], [40, 40, 50, 50])[None]  # middle row is padding
    valid = torch.tensor([[True, False, True]])
    keypoints = torch.tensor([[[5.0, 5.0, 10.0], [5.0, 5.0, 10.0]]])  # both on the first digit
    gt_labels = torch.tensor([[4, -1, 4]])
    counts = detection_metrics(keypoints, one_hot_logits([4, 4]), gt_boxes, gt_labels, valid)
    picked = [counts[key] for key in ("instances", "matched_iou50", "label_overlap", "matched_both")]
    assert picked == [2, 1, 2, 1]  # one digit found (once); both 4s predicted; the far one missed
    unlabelled = detection_metrics(keypoints, None, gt_boxes, torch.full((1, 3), -1), valid)  # e.g. Gabor
    assert (unlabelled["instances"], unlabelled["matched_iou50"], unlabelled["labelled"]) == (2, 1, 0)
    metric = DetectionMetrics()
    metric.update(keypoints, None, gt_boxes, None, valid)
    assert metric.compute()["iou50"] == 0.5 and metric.compute()["classification"] is None
    with pytest.raises(ValueError, match="negative"):
        detection_metrics(keypoints, one_hot_logits([4, 4]), gt_boxes, gt_labels)  # padding seen as valid


def test_detection_metrics_pool_digits_across_batches():
    metric = DetectionMetrics()
    # batch 1: one image, 2 digits, both found; batch 2: one image, 4 digits, one found.
    metric.update(
        torch.tensor([[[5.0, 5.0, 10.0], [25.0, 5.0, 10.0]]]),
        None,
        boxes([0, 0, 10, 10], [20, 0, 30, 10])[None],
    )
    far = [[100, 100, 110, 110], [200, 200, 210, 210], [300, 300, 310, 310]]
    metric.update(torch.tensor([[[5.0, 5.0, 10.0]] * 4]), None, boxes([0, 0, 10, 10], *far)[None])
    result = metric.compute()
    assert result["iou50"] == pytest.approx(3 / 6)  # not the mean of batch shares, (1 + 1/4) / 2
    assert (result["images"], result["instances"], result["matched_iou50"]) == (2, 6, 3)
    assert result["both"] is None


def test_detection_metrics_rejects_bad_inputs():
    keypoints = torch.tensor([[[5.0, 5.0, 10.0]]])
    gt_boxes = boxes([0, 0, 10, 10])[None]
    with pytest.raises(ValueError, match="gt_labels is required"):
        detection_metrics(keypoints, one_hot_logits([1]), gt_boxes)
    with pytest.raises(ValueError, match="gt_boxes"):
        detection_metrics(keypoints, None, gt_boxes[0])
    with pytest.raises(ValueError, match="valid"):
        detection_metrics(keypoints, None, gt_boxes, valid=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="logits"):
        detection_metrics(keypoints, torch.zeros(1, 2, 10), gt_boxes, torch.tensor([[1]]))
