"""Tests of mistlib/viz/scenes.py: dataset samples drawn with their boxes and labels."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mistlib.data import collate
from mistlib.viz import show_samples


def make_item(count: int, label_start: int = 0) -> dict[str, torch.Tensor]:
    """An 80x80 item with ``count`` boxes 10 px wide along the diagonal, labels label_start..."""
    boxes = torch.tensor([[10.0 * k, 10.0 * k, 10.0 * k + 10, 10.0 * k + 12] for k in range(count)]).reshape(
        -1, 4
    )
    return {
        "image": torch.rand(1, 80, 80, generator=torch.Generator().manual_seed(count)),
        "boxes": boxes,
        "labels": torch.arange(label_start, label_start + count),
    }


def rectangles(fig: Figure) -> list[list[Rectangle]]:
    return [[p for p in ax.patches if isinstance(p, Rectangle)] for ax in fig.axes]


def test_list_of_items_gives_one_axes_per_image_and_one_patch_per_box():
    items = [make_item(3), make_item(1), make_item(0)]
    fig = show_samples(items)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert [len(r) for r in rectangles(fig)] == [3, 1, 0]
    first = rectangles(fig)[0][1]
    assert (first.get_x(), first.get_y(), first.get_width(), first.get_height()) == (10.0, 10.0, 10.0, 12.0)
    assert [t.get_text() for t in fig.axes[0].texts] == ["0", "1", "2"]
    shown = fig.axes[1].images[0].get_array()
    torch.testing.assert_close(torch.as_tensor(shown.data), items[1]["image"][0])
    assert fig.axes[0].get_xlim() == (-0.5, 79.5) and fig.axes[0].get_ylim() == (79.5, -0.5)  # y down


def test_collated_batch_skips_padding_and_negative_labels():
    items = [make_item(4), make_item(2, label_start=-1)]
    batch = collate(items)
    assert batch["boxes"].shape == (2, 4, 4)
    fig = show_samples(batch, ncols=1)
    assert len(fig.axes) == 2 and [len(r) for r in rectangles(fig)] == [4, 2]
    assert [t.get_text() for t in fig.axes[1].texts] == ["0"]  # label -1 is not written
    geometry = fig.axes[0].get_subplotspec().get_geometry()
    assert geometry[:2] == (2, 1)


def test_boxes_off_and_other_inputs():
    fig = show_samples([make_item(3)], boxes=False)
    assert len(fig.axes) == 1 and rectangles(fig) == [[]] and not fig.axes[0].texts
    assert len(show_samples(make_item(2)).axes) == 1  # a single item
    assert len(show_samples(torch.rand(5, 3, 16, 16)).axes) == 5  # bare RGB images
    with pytest.raises(ValueError, match="batch"):
        show_samples([{"boxes": torch.zeros(0, 4)}])
    with pytest.raises(ValueError, match="batch"):
        show_samples(torch.rand(16, 16))


def test_no_global_state_changes():
    before_figs, before_rc, before_backend = (
        plt.get_fignums(),
        dict(matplotlib.rcParams),
        matplotlib.get_backend(),
    )
    fig = show_samples([make_item(2)] * 6, title="six")
    fig.savefig(io.BytesIO(), format="png")  # renders without a pyplot figure manager
    assert plt.get_fignums() == before_figs
    assert dict(matplotlib.rcParams) == before_rc and matplotlib.get_backend() == before_backend
    assert fig._suptitle.get_text() == "six"
