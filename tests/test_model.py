"""MIST wired together (eq. 1): shapes, gradients for both tasks, and bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mistlib.extract import topk_extract
from mistlib.model import MIST, MISTConfig, MISTOutput, default_device
from mistlib.sampler import place_patches


@pytest.mark.parametrize("task", ["reconstruct", "classify"])
def test_forward_and_backward_at_batch_two(task):
    torch.manual_seed(0)
    model = MIST(MISTConfig(task=task))
    images = torch.rand(2, 1, 80, 80)
    labels = torch.tensor([[1, 2, 3, -1], [0, 0, 9, 9]])
    out = model(images)
    assert isinstance(out, MISTOutput)
    assert out.heatmap.shape == (2, 3, 80, 80)
    assert out.keypoints.shape == (2, 9, 3)
    assert out.patches.shape == (2, 9, 1, 32, 32)
    if task == "reconstruct":
        assert out.reconstruction.shape == (2, 1, 80, 80) and out.logits is None
        assert out.task_output.shape == (2, 9, 1, 32, 32)
    else:
        assert out.logits.shape == (2, 9, 10) and out.reconstruction is None
    loss = model.task_loss(images, out, labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.task_net.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # the naive path: the only gradient to the heatmap network flows through the scale weights (eq. 4)
    heat = [p.grad for p in model.heatmap_net.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in heat)
    per_image = model.task_loss(images, out, labels, reduction="none")
    assert per_image.shape == (2,) and torch.allclose(per_image.mean(), loss)


def test_keypoints_are_distinct_pixels_inside_the_image_and_scale_range():
    model = MIST(MISTConfig(k=12))
    keypoints = model(torch.rand(3, 1, 80, 80)).keypoints
    assert keypoints.shape == (3, 12, 3)
    for image in keypoints:
        assert len({(int(x), int(y)) for x, y, _ in image.tolist()}) == 12
    assert keypoints[..., :2].min() >= 0 and keypoints[..., :2].max() <= 79
    assert keypoints[..., 2].min() >= 16 - 1e-4 and keypoints[..., 2].max() <= 25 + 1e-4


def test_run_task_is_differentiable_in_the_keypoints():
    model = MIST(MISTConfig())
    images = torch.rand(1, 1, 80, 80)
    keypoints = torch.tensor([[[30.3, 41.7, 20.0], [50.2, 20.6, 18.0]]], requires_grad=True)
    out = model.run_task(images, keypoints)
    model.task_loss(images, out).backward()
    assert keypoints.grad is not None and keypoints.grad.abs().sum() > 0


def test_bad_input_is_named():
    model = MIST(MISTConfig())
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(1, 80, 80))
    with pytest.raises(ValueError, match="channel"):
        model(torch.rand(1, 3, 80, 80))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 1, 80, 80), float("nan")))
    with pytest.raises(ValueError, match="keypoints"):
        model.run_task(torch.rand(1, 1, 80, 80), torch.rand(1, 9, 2))
    classifier = MIST(MISTConfig(task="classify"))
    images = torch.rand(1, 1, 80, 80)
    with pytest.raises(ValueError, match="labels"):
        classifier.task_loss(images, classifier(images))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task", "segment"),
        ("k", 0),
        ("k", 6401),
        ("scales", (20.0, 16.0)),
        ("scales", (0.0, 1.0)),
        ("composite", "mean"),
        ("nms", 4),
        ("task_depth", -1),
        ("task_depth", 1.5),
    ],
)
def test_config_is_validated(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(MISTConfig(), **{field: value})


def test_extract_applies_the_configured_nms():
    torch.manual_seed(0)
    model = MIST(MISTConfig(heatmap_channels=8, heatmap_blocks=1, nms=5))
    images = torch.rand(2, 1, 80, 80)
    with torch.no_grad():
        heatmap, keypoints = model.extract(images)
    assert torch.equal(keypoints, topk_extract(heatmap, 9, model.scales, nms=5))
    apart = torch.cdist(keypoints[..., :2], keypoints[..., :2]) + 99 * torch.eye(9)  # (2, 9, 9)
    assert apart.min() > 2  # no two picks inside one 5 x 5 window


def test_max_composite_needs_a_zero_background():
    with pytest.raises(ValueError, match="composite='max' needs background 0"):
        MISTConfig(composite="max", background=0.5)


def test_max_composite_draws_overlapping_windows_once():
    """Two windows on one digit: the sum draws its ink twice, the max once."""
    images = torch.zeros(1, 1, 80, 80)
    images[0, 0, 32:48, 32:48] = 1.0
    keypoints = torch.tensor([[[40.0, 40.0, 20.0], [42.0, 40.0, 20.0]]])
    summed, maxed = (MIST(MISTConfig(k=2, composite=c)) for c in ("sum", "max"))
    maxed.load_state_dict(summed.state_dict())
    with torch.no_grad():
        patches = summed.run_task(images, keypoints).task_output  # (1, 2, 1, 32, 32), the same for both
        placed = place_patches(patches, keypoints, (80, 80))  # (1, 2, 1, 80, 80)
        by_sum = summed.run_task(images, keypoints).reconstruction
        by_max = maxed.run_task(images, keypoints).reconstruction
    assert torch.allclose(by_sum, placed.sum(1)) and torch.allclose(by_max, placed.amax(1))
    overlap = (placed > 0.05).all(1)  # (1, 1, 80, 80): pixels both windows draw
    assert bool(overlap.any()) and bool((by_sum[overlap] > by_max[overlap] + 0.05).all())


def test_default_device_is_cuda_only_when_available():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_background_canvas_generalises_eq_6():
    """With background b, a patch equal to b everywhere adds nothing; with b = 0 it is the plain sum."""
    images = torch.full((1, 1, 80, 80), 0.5)
    keypoints = torch.tensor([[[40.0, 40.0, 20.0]]])
    model = MIST(MISTConfig(k=1, background=0.5, composite="sum"))
    with torch.no_grad():
        for module in model.task_net.modules():  # make the auto-encoder output exactly 0.5
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
    out = model.run_task(images, keypoints)
    assert torch.allclose(out.reconstruction, images)
    assert model.task_loss(images, out).item() < 1e-12
    plain = MIST(MISTConfig(k=1))
    plain.load_state_dict(model.state_dict())
    recon = plain.run_task(images, keypoints).reconstruction.detach()
    assert recon[0, 0, 0, 0].item() == 0 and recon[0, 0, 40, 40].item() == pytest.approx(0.5)


def test_a_given_heatmap_network_is_used_even_when_falsy():
    """An nn.Sequential with no layers has len 0 and is falsy; passing it must still replace H_eta."""
    from torch import nn

    empty = nn.Sequential()
    assert not empty
    assert (
        MIST(MISTConfig(heatmap_channels=4, heatmap_blocks=1, task_width=2), heatmap_net=empty).heatmap_net
        is empty
    )
