"""Baselines of Tables 1-2: the grid's windows, the channel-wise soft argmax, naive top-K training."""

from __future__ import annotations

import pytest
import torch

from mistlib.baselines import ChannelwiseMIST, EndToEndConfig, EndToEndTrainer, GridMIST, grid_keypoints
from mistlib.model import MIST, MISTConfig

SLIM = MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=4)


def test_grid_windows_tile_the_image():
    keypoints = grid_keypoints(9, 80)
    assert keypoints.shape == (9, 3)
    cell = 80 / 3
    assert torch.allclose(keypoints[:3, 0], torch.tensor([cell / 2, 1.5 * cell, 2.5 * cell]) - 0.5)
    assert torch.allclose(keypoints[::3, 1], keypoints[:3, 0])  # rows first, x fastest
    assert torch.all(keypoints[:, 2] == cell)
    # the windows' union is exactly the image square [-0.5, 79.5]^2
    assert keypoints[:, 0].min() - cell / 2 == pytest.approx(-0.5)
    assert keypoints[:, 0].max() + cell / 2 == pytest.approx(79.5)
    with pytest.raises(ValueError, match="square"):
        grid_keypoints(8, 80)


def test_grid_model_never_moves_its_windows_and_has_no_heatmap():
    model = GridMIST(SLIM)
    out = model(torch.rand(2, 1, 80, 80))
    assert torch.equal(out.keypoints, grid_keypoints(9, 80).expand(2, -1, -1))
    assert not hasattr(model, "heatmap_net") and out.reconstruction.shape == (2, 1, 80, 80)


def test_channelwise_soft_argmax_finds_each_channels_peak():
    model = ChannelwiseMIST(MISTConfig(k=2, heatmap_channels=4, heatmap_blocks=1, task_width=4))
    scores = torch.zeros(1, 2, 80, 80)
    scores[0, 0, 10, 20] = 50.0  # channel 0 peaks at x=20, y=10
    scores[0, 1, 70, 5] = 50.0  # channel 1 at x=5, y=70
    model.heatmap_net.scores = lambda images: scores
    weights, keypoints = model.extract(torch.rand(1, 1, 80, 80))
    assert torch.allclose(keypoints[0, :, :2], torch.tensor([[20.0, 10.0], [5.0, 70.0]]), atol=1e-3)
    assert torch.allclose(keypoints[..., 2], torch.full((1, 2), 20.0))  # fixed side: reference_size
    assert torch.allclose(weights.sum((-2, -1)), torch.ones(1, 2))


def test_channelwise_is_differentiable_end_to_end():
    model = ChannelwiseMIST(MISTConfig(k=3, heatmap_channels=4, heatmap_blocks=1, task_width=4))
    images = torch.rand(2, 1, 80, 80)
    model.task_loss(images, model(images)).backward()
    assert model.heatmap_net.head.weight.grad.abs().sum() > 0  # the soft argmax passes gradient


def test_naive_top_k_reaches_the_heatmap_only_through_the_scale_weights():
    torch.manual_seed(0)
    trainer = EndToEndTrainer(MIST(SLIM), "reconstruct", EndToEndConfig(device="cpu"))
    before = [p.detach().clone() for p in trainer.model.heatmap_net.parameters()]
    images = torch.rand(4, 1, 80, 80)
    trainer.train_step(images, None)
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.model.heatmap_net.parameters(), strict=True)
    )

    # with a single scale, s = h * 20 / (h + 1e-6) is nearly constant: only the eps of eq. (2) is left
    def heatmap_grad_norm(config: MISTConfig) -> float:
        torch.manual_seed(0)
        model = MIST(config)
        model.task_loss(images, model(images)).backward()
        return sum(float(p.grad.norm()) for p in model.heatmap_net.parameters() if p.grad is not None)

    multi = heatmap_grad_norm(SLIM)
    single = heatmap_grad_norm(MISTConfig(scales=(20.0,), heatmap_channels=4, heatmap_blocks=1, task_width=4))
    assert multi > 0 and single < 1e-2 * multi, (single, multi)  # measured: ~900x smaller
