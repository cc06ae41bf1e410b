"""Stage 2 (mistlib.refine): the search rule's candidate losses are eq. (6)/(7) with one keypoint moved."""

from __future__ import annotations

import pytest
import torch

from mistlib.model import MIST, MISTConfig
from mistlib.refine import (
    candidate_losses,
    clamp_keypoints,
    refine_keypoints,
    residual_jumps,
    scaled_step,
    search_moves,
)

TINY = dict(heatmap_channels=4, heatmap_blocks=1, task_network="compact", task_width=4, task_code=8)


def _brute_force(model, images, keypoints, labels, moves, alternatives=None):
    """The loss with keypoint k moved by moves[m] (then to alternatives[:, j]), by a full forward pass for
    every (k, candidate)."""
    batch, k = keypoints.shape[:2]
    jumps = 0 if alternatives is None else alternatives.shape[1]
    out = torch.empty(batch, k, moves.shape[0] + jumps)
    for i in range(k):
        for m in range(moves.shape[0] + jumps):
            moved = keypoints.clone()
            if m < moves.shape[0]:
                moved[:, i] += moves[m]
            else:
                moved[:, i] = alternatives[:, m - moves.shape[0]]
            moved = clamp_keypoints(moved, model.scales, (80, 80))
            out[:, i, m] = model.task_loss(images, model.run_task(images, moved), labels, "none")
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        {"composite": "max"},
        {"composite": "sum"},
        {"composite": "sum", "background": 0.5},
        {"task": "classify"},
    ],
)
def test_candidate_losses_match_a_full_pass_per_move(overrides):
    torch.manual_seed(0)
    model = MIST(MISTConfig(k=3, **TINY, **overrides))
    images = torch.rand(2, 1, 80, 80)
    keypoints = torch.tensor(
        [[[30.0, 40, 20], [38, 44, 16], [60, 20, 25]], [[10, 10, 18], [70, 70, 20], [40, 40, 22]]]
    )
    labels = torch.tensor([[1, 4, -1], [2, 2, 7]]) if model.config.task == "classify" else None
    moves = search_moves(1.5)  # some leave the scale range and are clamped back, as in the search
    # jumps far across the image, onto another keypoint's window, and half off the image's edge
    alternatives = torch.tensor(
        [[[70.0, 10, 20], [38, 44, 16], [2, 78, 25]], [[50, 20, 16], [10, 12, 18], [79, 0, 20]]]
    )
    with torch.no_grad():
        fast = candidate_losses(model, images, keypoints, labels, moves, alternatives)
        slow = _brute_force(model, images, keypoints, labels, moves, alternatives)
    assert fast.shape == (2, 3, moves.shape[0] + 3)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)


def test_candidate_losses_show_the_network_each_alternative_once_per_image():
    """K x M own moves plus the J alternatives, not K x (M + J): every keypoint jumping to alternative j
    would be shown the same window."""
    model = MIST(MISTConfig(k=3, task="classify", **TINY))
    seen = []
    model.task_net.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[:2]))
    keypoints = torch.tensor([[[30.0, 40, 20], [38, 44, 16], [60, 20, 25]]])
    alternatives = torch.tensor([[[70.0, 10, 20], [2, 78, 25]]])
    moves = search_moves(1.0)
    with torch.no_grad():
        candidate_losses(
            model, torch.rand(1, 1, 80, 80), keypoints, torch.tensor([[1, 4, 7]]), moves, alternatives
        )
    assert seen == [torch.Size([1, 3 * moves.shape[0] + 2])]


def test_search_moves_toward_a_lone_bright_square():
    """With an identity 'task network', eq. (6) is lowest when the window covers the square: the search
    walks a window 3 px off it back on, one step a move, and never raises the loss."""
    model = MIST(MISTConfig(k=1, composite="max", **TINY))
    model.task_net = torch.nn.Identity()  # reproduces whatever window it is shown
    images = torch.zeros(1, 1, 80, 80)
    images[..., 32:48, 32:48] = 1.0  # a 16 x 16 square centred at (39.5, 39.5)
    start = torch.tensor([[[42.5, 39.5, 16.0]]])
    losses = []
    x = start
    for _ in range(4):
        losses.append(model.task_loss(images, model.run_task(images, x)).item())
        x = refine_keypoints(model, images, x, None, iterations=1, step=1.0, optimizer="search")
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] / 10
    left, right = x[0, 0, 0] - x[0, 0, 2] / 2, x[0, 0, 0] + x[0, 0, 2] / 2
    assert left <= 31.5 and right >= 47.5  # the window now holds the whole square


def test_clamp_keeps_keypoints_in_the_image_and_the_scale_range():
    kp = torch.tensor([[[-3.0, 90.0, 2.0], [40.0, 40.0, 99.0]]])
    out = clamp_keypoints(kp, torch.tensor([16.0, 20.0, 25.0]), (80, 80))
    assert out.tolist() == [[[0.0, 79.0, 16.0], [40.0, 40.0, 25.0]]]


def test_scaled_step_is_proportional_to_the_gradient_unlike_adam():
    """A keypoint with 1000x less gradient moves 1000x less; Adam's first step moves both by the full step."""
    grad = torch.tensor([[[1e-3, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    delta = scaled_step(grad, step=1.0)
    rms = ((1e-6 + 1.0) / 6) ** 0.5  # over all six coordinates
    assert delta[0, 0, 0].item() == pytest.approx(1e-3 / rms)  # 0.0024 px
    assert delta[0, 1, 0].item() == pytest.approx(2.0)  # 1 / rms = 2.45 px, capped at 2 * step
    x = torch.zeros(1, 2, 3, requires_grad=True)
    adam = torch.optim.Adam([x], lr=1.0)
    x.grad = grad.clone()
    adam.step()
    assert torch.allclose(x[0, :, 0].detach().abs(), torch.ones(2), atol=1e-3)


def _two_blobs() -> tuple[MIST, torch.Tensor]:
    """A model whose task network copies its patch (reconstruction = what the windows cover, by the max) and
    an image of two bright 8 x 8 squares centred at (20, 20) and (60, 60)."""
    from mistlib.objective import Reconstruction

    config = MISTConfig(k=2, **TINY)
    model = MIST(config, task=Reconstruction(torch.nn.Identity(), composite="max"))
    images = torch.zeros(1, 1, 80, 80)
    images[..., 16:24, 16:24] = 1.0
    images[..., 56:64, 56:64] = 1.0
    return model, images


def test_search_jumps_a_duplicate_window_to_an_uncovered_instance():
    model, images = _two_blobs()
    both_on_one = torch.tensor([[[20.0, 20.0, 20.0], [21.0, 20.0, 20.0]]])  # (1, K=2, 3)
    elsewhere = torch.tensor([[[60.0, 60.0, 20.0], [40.0, 5.0, 20.0]]])  # runner-ups: a blob, background
    with torch.no_grad():
        stuck = refine_keypoints(model, images, both_on_one, None, 1, 1.0, "search")
        jumped = refine_keypoints(model, images, both_on_one, None, 1, 1.0, "search", alternatives=elsewhere)
    assert (stuck[0, :, :2] - both_on_one[0, :, :2]).abs().max() <= 1.0  # local moves only
    assert sorted(jumped[0, :, 0].tolist())[1] == 60.0 and 60.0 in jumped[0, :, 1].tolist()  # one jumped
    assert jumped[0, :, 0].min() <= 22  # the other stayed on the first blob
    loss = {name: model.task_loss(images, model.run_task(images, x)).item() for name, x in
            {"stuck": stuck, "jumped": jumped}.items()}  # fmt: skip
    assert loss["jumped"] < 0.5 * loss["stuck"]


def test_an_alternative_goes_to_one_keypoint_only():
    model, images = _two_blobs()
    both_on_one = torch.tensor([[[20.0, 20.0, 20.0], [20.0, 20.0, 20.0]]])  # the same window twice
    with torch.no_grad():
        jumped = refine_keypoints(
            model,
            images,
            both_on_one,
            None,
            1,
            1.0,
            "search",
            alternatives=torch.tensor([[[60.0, 60.0, 20.0]]]),
        )
    assert (jumped[0, :, 0] == 60.0).sum() == 1  # both would gain from it; only one takes it


def test_jumps_need_the_search_rule():
    model, images = _two_blobs()
    with pytest.raises(ValueError, match="alternatives"):
        refine_keypoints(
            model, images, torch.zeros(1, 2, 3) + 20, None, 1, 1.0, "scaled", torch.zeros(1, 1, 3)
        )


def test_residual_jumps_land_on_the_ink_no_window_covers():
    """Both windows on the first square: the missing ink is the second square, and a jump there halves
    the loss; the targets take the middle scale, and only a reconstruction has missing ink."""
    model, images = _two_blobs()
    both_on_one = torch.tensor([[[20.0, 20.0, 20.0], [21.0, 20.0, 20.0]]])
    with torch.no_grad():
        targets = residual_jumps(model, images, both_on_one, 1)  # (1, 1, 3)
        jumped = refine_keypoints(model, images, both_on_one, None, 1, 1.0, "search", alternatives=targets)
    assert targets.shape == (1, 1, 3) and (targets[0, 0, :2] - 59.5).abs().max() <= 5  # the blob's box
    assert targets[0, 0, 2].item() == pytest.approx(model.scales[1].item(), abs=1e-3)
    loss = {name: model.task_loss(images, model.run_task(images, x)).item() for name, x in
            {"stuck": both_on_one, "jumped": jumped}.items()}  # fmt: skip
    assert loss["jumped"] < 0.5 * loss["stuck"]
    classifier = MIST(MISTConfig(task="classify", k=2, **TINY))
    with pytest.raises(ValueError, match="reconstruction"):
        residual_jumps(classifier, images, both_on_one, 1)
