"""Tests of mistlib/viz/tasks.py: eq. (6) as a sum of placed patches, eq. (7) drawn, the placing widget."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.patches import Rectangle

from mistlib.losses import multi_instance_loss, reconstruct, reconstruction_loss
from mistlib.model import MIST, MISTConfig
from mistlib.viz.tasks import (
    label_histogram,
    placed_canvases,
    reconstruction_widget,
    show_instance_loss,
    show_partial_reconstruction,
    show_reconstruction_steps,
)
from mistlib.viz.widgets import frames, selected_frame


def tiny_config(**changes) -> MISTConfig:
    base = {
        "image_size": 32,
        "k": 3,
        "scales": (8.0, 12.0),
        "reference_size": 8.0,
        "heatmap_channels": 4,
        "heatmap_blocks": 1,
        "task_width": 2,
        "composite": "sum",
    }  # fmt: skip; eq. (6), max tested below
    return MISTConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def model() -> MIST:
    torch.manual_seed(0)
    return MIST(tiny_config()).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))  # (C, H, W)


def shown(ax) -> torch.Tensor:
    return torch.as_tensor(ax.images[0].get_array().data).float()


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_placed_canvases_sum_to_the_reconstruction_of_eq6():
    generator = torch.Generator().manual_seed(2)
    decoded = torch.rand(4, 1, 8, 8, generator=generator)
    keypoints = torch.tensor([[5.0, 6.0, 8.0], [20.0, 9.5, 11.0], [14.0, 22.0, 7.0], [26.0, 26.0, 9.0]])
    canvases = placed_canvases(decoded, keypoints, (30, 30))
    assert canvases.shape == (4, 1, 30, 30)
    torch.testing.assert_close(canvases.sum(0), reconstruct(decoded[None], keypoints[None], (30, 30))[0])
    shifted = placed_canvases(decoded, keypoints, (30, 30), background=0.5)
    torch.testing.assert_close(shifted, placed_canvases(decoded - 0.5, keypoints, (30, 30)))
    with pytest.raises(ValueError, match="K=4"):
        placed_canvases(decoded[:3], keypoints, (30, 30))


def test_reconstruction_steps_end_at_the_models_reconstruction(model, image):
    with torch.no_grad():
        out = model(image[None])
    keypoints, decoded, patches = out.keypoints[0], out.task_output[0], out.patches[0]
    fig = show_reconstruction_steps(image, keypoints, decoded, patches)
    k = len(keypoints)
    assert len(fig.axes) == 3 + 4 * k and len(rectangles(fig.axes[0])) == k
    torch.testing.assert_close(shown(fig.axes[1]), out.reconstruction[0, 0].clamp(0, 1))
    loss = reconstruction_loss(image[None], decoded[None], keypoints[None])
    assert fig.axes[1].get_title() == f"reconstruction, MSE {float(loss):.4f}"
    grid = fig.axes[3:]
    canvases = placed_canvases(decoded, keypoints, (32, 32))
    for column in range(k):
        torch.testing.assert_close(shown(grid[column]), patches[column, 0].clamp(0, 1))  # row P_k
        torch.testing.assert_close(shown(grid[k + column]), decoded[column, 0])  # row T(P_k)
        torch.testing.assert_close(shown(grid[2 * k + column]), canvases[column, 0].clamp(0, 1))
        partial = canvases[: column + 1].sum(0)[0].clamp(0, 1)
        torch.testing.assert_close(shown(grid[3 * k + column]), partial)  # running sum
    assert len(show_reconstruction_steps(image, keypoints, decoded).axes) == 3 + 3 * k  # no P_k row


def test_partial_reconstruction_grows_with_the_number_placed(image):
    keypoints = torch.tensor([[8.0, 8.0, 10.0], [22.0, 10.0, 12.0], [15.0, 24.0, 9.0]])
    decoded = torch.ones(3, 1, 8, 8)
    mass = []
    for placed in range(4):
        fig = show_partial_reconstruction(image, keypoints, decoded, placed)
        styles = [r.get_linestyle() for r in rectangles(fig.axes[0])]
        assert styles.count("-") == placed and styles.count(":") == 3 - placed
        assert fig.get_suptitle().startswith(f"{placed} of 3 patches placed")
        mass.append(float(shown(fig.axes[1]).sum()))
    assert mass[0] == 0 and mass[0] < mass[1] < mass[2] < mass[3]
    with pytest.raises(ValueError, match="placed"):
        show_partial_reconstruction(image, keypoints, decoded, 4)


def test_reconstruction_widget_places_patches_as_the_slider_says(model, image):
    widget = reconstruction_widget(model, image)
    slider = widget.children[0]
    assert slider.description == "placed" and (slider.min, slider.max, slider.value) == (0, 3, 3)
    with torch.no_grad():
        out = model(image[None])
    torch.testing.assert_close(shown(widget.result.axes[1]), out.reconstruction[0, 0].clamp(0, 1))
    canvases = placed_canvases(out.task_output[0], out.keypoints[0], (32, 32))
    # the picture: one saved frame per count (an IntSlider from 0 is linked by its value), all different
    assert widget.children[1] is widget.picture and len(widget.picture.children) == 4
    assert [(link.source, link.target) for link in widget.picture.links] == [
        ((slider, "value"), (widget.picture, "selected_index"))
    ]
    saved = [bytes(frame.value) for frame in frames(widget.picture)]
    assert len(set(saved)) == 4 and widget.picture.selected_index == 3
    for placed in (0, 1, 2):
        slider.value = placed
        assert widget.picture.selected_index == placed
        assert bytes(selected_frame(widget.picture).value) == saved[placed]  # the live redraw agrees
        assert widget.result.get_suptitle().startswith(f"{placed} of 3 patches placed")
        torch.testing.assert_close(shown(widget.result.axes[1]), canvases[:placed].sum(0)[0].clamp(0, 1))
    with pytest.raises(ValueError, match="reconstruction model"):
        reconstruction_widget(MIST(tiny_config(task="classify")).eval(), image)


def test_a_max_composite_model_is_drawn_with_running_maxima(model, image):
    """For MISTConfig(composite="max") the figures and the widget combine the patches as the model does."""
    maxed = MIST(tiny_config(composite="max")).eval()
    maxed.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = maxed(image[None])
    keypoints, decoded = out.keypoints[0], out.task_output[0]
    canvases = placed_canvases(decoded, keypoints, (32, 32))  # (K, C, H, W)
    assert not torch.allclose(canvases.amax(0), canvases.sum(0))  # the windows overlap: max and sum differ
    fig = show_reconstruction_steps(image, keypoints, decoded, composite="max")
    torch.testing.assert_close(shown(fig.axes[1]), out.reconstruction[0, 0].clamp(0, 1))
    grid, k = fig.axes[3:], len(keypoints)
    assert grid[2 * k + 1].get_title() == "max k ≤ 2"
    torch.testing.assert_close(shown(grid[2 * k + 1]), canvases[:2].amax(0)[0].clamp(0, 1))
    widget = reconstruction_widget(maxed, image)
    torch.testing.assert_close(shown(widget.result.axes[1]), out.reconstruction[0, 0].clamp(0, 1))
    widget.children[0].value = 2
    assert widget.result.axes[1].get_title() == "max of the first 2 placed patches"
    torch.testing.assert_close(shown(widget.result.axes[1]), canvases[:2].amax(0)[0].clamp(0, 1))
    with pytest.raises(ValueError, match="composite"):
        show_reconstruction_steps(image, keypoints, decoded, composite="mean")


def test_label_histogram_known_answer():
    torch.testing.assert_close(label_histogram(torch.tensor([3, 3, 1, -1, -1]), 5),
                               torch.tensor([0.0, 1 / 3, 0.0, 2 / 3, 0.0]))  # fmt: skip
    with pytest.raises(ValueError, match="at least one"):
        label_histogram(torch.tensor([-1, -1]), 3)


def test_show_instance_loss_matches_eq7_and_draws_both_histograms():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 3.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    labels = torch.tensor([1, 0, -1])
    probs = logits.softmax(-1)
    fig = show_instance_loss(probs, labels)
    expected = float(multi_instance_loss(logits[None], labels[None]))
    assert fig.get_suptitle() == f"H(q, p) = {expected:.4f}"
    table, bars = fig.axes
    assert len(table.texts) == 3 * 4
    heights = [float(b.get_height()) for b in bars.patches]
    torch.testing.assert_close(
        torch.tensor(heights[:4], dtype=torch.float32), torch.tensor([0.5, 0.5, 0.0, 0.0])
    )  # q
    torch.testing.assert_close(torch.tensor(heights[4:], dtype=torch.float32), probs.mean(0))  # p
    image = torch.rand(1, 30, 30)
    keypoints = torch.tensor([[5.0, 5.0, 8.0], [15.0, 15.0, 8.0], [25.0, 25.0, 8.0]])
    fig = show_instance_loss(probs, labels, image, keypoints, title="worked example")
    assert len(fig.axes) == 3 and len(rectangles(fig.axes[0])) == 3
    assert [t.get_text() for t in fig.axes[0].texts] == ["0", "1", "0"]  # argmax, first of a tie
    assert fig.get_suptitle() == "worked example"
    assert math.isclose(float(-(torch.tensor([0.5, 0.5]) * probs.mean(0)[:2].log()).sum()), expected,
                        rel_tol=1e-5)  # fmt: skip
