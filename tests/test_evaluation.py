"""mistlib.evaluation: learning-curve helpers and where the picks go wrong, on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from mistlib.evaluation import best_and_last, box_keypoints, pick_coverage, pick_sides, with_true_sides


def test_pick_coverage_counts_doubled_picks_and_missed_instances():
    # three instances with centres (10, 10), (40, 10), (70, 70); padding in the fourth place
    boxes = torch.tensor([[[0.0, 0, 20, 20], [30, 0, 50, 20], [60, 60, 80, 80], [0, 0, 0, 0]]])
    valid = torch.tensor([[True, True, True, False]])
    picks = torch.tensor([[[11.0, 10, 20], [10, 16, 20], [41, 11, 20], [2, 60, 20]]])
    # pick 0 is 1 px from instance 0, pick 1 6 px from it (doubled), pick 2 on instance 1 (1.4 px), pick 3 on
    # background (nearest: instance 0's centre, 50.6 px away, not instance 2's at 68.7: doubled too);
    # instance 2 is missed
    coverage = pick_coverage(picks, boxes, valid)
    assert coverage == pytest.approx({"doubled": 2 / 4, "missed": 1 / 3, "near": 2 / 4})
    # the padding box at the origin never attracts a pick: move pick 3 onto it
    picks[0, 3, :2] = 0.0
    assert pick_coverage(picks, boxes, valid)["doubled"] == pytest.approx(2 / 4)


def test_two_picks_at_the_same_distance_count_one_as_doubled():
    boxes = torch.tensor([[[0.0, 0, 20, 20]]])
    picks = torch.tensor([[[7.0, 10, 20], [13, 10, 20]]])  # both 3 px from the centre
    assert pick_coverage(picks, boxes, torch.ones(1, 1, dtype=torch.bool))["doubled"] == 0.5


def test_pick_sides_pairs_each_pick_on_an_instance_with_its_true_side():
    # instances of sides 20 (a 20 x 12 box) and 16, centres (10, 6) and (48, 48); padding in the third place
    boxes = torch.tensor([[[0.0, 0, 20, 12], [40, 40, 56, 56], [0, 0, 30, 30]]])
    valid = torch.tensor([[True, True, False]])
    picks = torch.tensor(
        [[[10.0, 9, 18], [48, 44.5, 22], [15, 15, 25], [48, 48, 17.5]]]
    )  # 3 px from instance 0; 3.5 px from 1; 9.8 px from 0 (and on the padding's centre); on 1
    picked, true = pick_sides(picks, boxes, valid)
    assert picked.tolist() == [18.0, 22.0, 17.5] and true.tolist() == [20.0, 16.0, 16.0]
    picks[0, 1, 1] = 43.9  # 4.1 px: no longer on instance 1
    assert pick_sides(picks, boxes, valid)[0].tolist() == [18.0, 17.5]


def test_with_true_sides_keeps_positions_and_takes_the_nearest_boxs_clamped_side():
    boxes = torch.tensor([[[0.0, 0, 30, 10], [40, 40, 52, 52]]])  # sides 30 and 12, centres (15, 5), (46, 46)
    true = box_keypoints(boxes, torch.ones(1, 2, dtype=torch.bool), 2, torch.tensor([16.0, 25.0]))
    picks = torch.tensor([[[44.0, 47, 20], [14, 7, 18], [30, 20, 21]]])  # third: 21 px from box 0, 31 from 1
    moved = with_true_sides(picks, true)
    assert moved[..., :2].equal(picks[..., :2]) and moved[0, :, 2].tolist() == [16.0, 25.0, 25.0]


def test_best_and_last_reads_a_curve():
    curve = [{"step": 0, "iou50": 0.35}, {"step": 250, "iou50": 0.48}, {"step": 500, "iou50": 0.41}]
    assert best_and_last(curve) == (250, 0.48, 0.41)
    with pytest.raises(ValueError, match="no measurements"):
        best_and_last([])
