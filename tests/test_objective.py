"""Tests for mistlib.objective: the task objects own their network, prediction and loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mistlib.model import MIST, MISTConfig, build_task
from mistlib.objective import Classification, Reconstruction

TINY = dict(heatmap_channels=4, heatmap_blocks=1, task_width=2)


def test_reconstruction_loss_by_hand():
    """One 4 x 4 window of ones (identity network) on an 8 x 8 image that is 1 in the same 16 pixels and 0.5
    in 8 others: squared errors 8 x 0.25 = 2 over 64 pixels."""
    task = Reconstruction(nn.Identity())
    model = MIST(
        MISTConfig(image_size=8, k=1, scales=(4.0,), reference_size=4.0, patch_size=4, **TINY), task=task
    )
    images = torch.zeros(1, 1, 8, 8)
    images[..., 2:6, 2:6] = 1.0
    images[..., 0, :8] = 0.5
    out = model.run_task(images, torch.tensor([[[3.5, 3.5, 4.0]]]))
    assert torch.allclose(out.reconstruction[..., 2:6, 2:6], torch.ones(4, 4), atol=1e-6)
    assert model.task_loss(images, out).item() == pytest.approx(2 / 64, abs=1e-6)


def test_a_custom_task_network_is_one_argument():
    config = MISTConfig(task="classify", **TINY)
    net = nn.Sequential(nn.Flatten(2), nn.LazyLinear(10))
    model = MIST(config, task=Classification(net))
    out = model(torch.rand(2, 1, 80, 80))
    assert out.logits.shape == (2, 9, 10) and model.task_net is net
    labels = torch.tensor([[3, -1], [1, 2]])
    loss = model.task_loss(torch.rand(2, 1, 80, 80), out, labels)
    loss.backward()
    assert net[1].weight.grad is not None and net[1].weight.grad.abs().sum() > 0


def test_task_and_config_must_agree():
    with pytest.raises(ValueError, match="does not match config.task"):
        MIST(MISTConfig(task="classify", **TINY), task=Reconstruction(nn.Identity()))


def test_classification_needs_labels():
    model = MIST(MISTConfig(task="classify", **TINY))
    images = torch.rand(1, 1, 80, 80)
    with pytest.raises(ValueError, match="labels .* required for the classify task"):
        model.task_loss(images, model(images))


def test_assigning_task_net_swaps_the_tasks_network():
    model = MIST(MISTConfig(**TINY))
    model.task_net = nn.Identity()
    assert isinstance(model.task.net, nn.Identity)
    assert not any(name.startswith("task_net") for name, _ in model.named_modules())


@pytest.mark.parametrize("task", ["reconstruct", "classify"])
def test_only_the_task_knows_its_metrics_and_labels(task):
    made = build_task(MISTConfig(task=task, **TINY))
    assert made.name == task
    assert made.needs_labels == (task == "classify")
    assert ("rmse" in made.metrics) == (task == "reconstruct") and "iou50" in made.metrics
