"""Tests of mistlib/viz/pipeline.py (eq. (1) end to end, the top-K gradient) and viz/localisers.py (§2)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.patches import ConnectionPatch, FancyBboxPatch, Rectangle

from mistlib.baselines import ChannelwiseMIST, grid_keypoints
from mistlib.extract import topk_extract
from mistlib.metrics import box_iou, keypoints_to_boxes
from mistlib.model import MIST, MISTConfig
from mistlib.viz.draw import WINDOW_COLOR
from mistlib.viz.localisers import (
    BROKEN_COLOR,
    GOOD_COLOR,
    cell_counts,
    ink_scores,
    select_proposals,
    sequential_diagram,
    show_channelwise,
    show_grid_assignment,
    show_heatmap_picks,
    sliding_proposals,
    transfer_diagram,
    weakly_supervised_diagram,
)
from mistlib.viz.pipeline import (
    NO_GRAD_COLOR,
    pipeline_diagram,
    show_first_look,
    show_patches,
    show_pipeline,
    show_topk_gradient,
    show_windows,
)


def tiny_config(**changes) -> MISTConfig:
    base = {"image_size": 32, "k": 3, "scales": (8.0, 10.0, 12.0), "reference_size": 8.0,
            "heatmap_channels": 4, "heatmap_blocks": 1, "task_width": 2}  # fmt: skip
    return MISTConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))  # (C, H, W)


def shown(ax, index: int = 0) -> torch.Tensor:
    """The array of the index-th image drawn on ``ax``."""
    return torch.as_tensor(ax.images[index].get_array().data).float()


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def corners(rect: Rectangle) -> list[float]:
    """xyxy of a drawn rectangle."""
    x, y = rect.get_xy()
    return [x, y, x + rect.get_width(), y + rect.get_height()]


# -- eq. (1) end to end --------------------------------------------------------------------------------------
def test_show_windows_draws_the_k_windows_of_the_keypoints(image):
    keypoints = torch.tensor([[5.0, 6.0, 8.0], [20.0, 9.5, 11.0], [14.0, 22.0, 7.0]])
    fig = show_windows(image, keypoints, numbers=True, title="three")
    (ax,) = fig.axes
    torch.testing.assert_close(shown(ax), image[0])
    drawn = [corners(r) for r in rectangles(ax)]
    torch.testing.assert_close(torch.tensor(drawn), keypoints_to_boxes(keypoints))
    assert [t.get_text() for t in ax.texts] == ["1", "2", "3"]
    assert ax.get_title() == "three"
    assert not show_windows(image, keypoints).axes[0].texts  # no tags unless asked
    with pytest.raises(ValueError, match="keypoints must have shape"):
        show_windows(image, keypoints[None])


def test_show_first_look_shows_input_windows_and_reconstruction(image):
    keypoints = torch.tensor([[8.0, 8.0, 10.0], [24.0, 20.0, 12.0]])
    reconstruction = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(3))
    fig = show_first_look(image, keypoints, reconstruction)
    assert len(fig.axes) == 3
    torch.testing.assert_close(shown(fig.axes[0]), image[0])
    torch.testing.assert_close(shown(fig.axes[1]), image[0])
    torch.testing.assert_close(shown(fig.axes[2]), reconstruction[0])
    assert [len(rectangles(ax)) for ax in fig.axes] == [0, 2, 2]
    assert "2 windows" in fig.axes[1].get_title()


def test_show_patches_has_one_axes_per_patch_with_its_pixels_and_window():
    patches = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    keypoints = torch.tensor([[float(k), 2.0 * k, 10.0 + k] for k in range(5)])
    fig = show_patches(patches, keypoints, ncols=3)
    assert len(fig.axes) == 5
    for k, ax in enumerate(fig.axes):
        torch.testing.assert_close(shown(ax), patches[k, 0])
        assert ax.get_title() == f"{k + 1}: ({k}, {2 * k})\ns = {10 + k:.1f}"
    assert fig.axes[3].get_subplotspec().rowspan.start == 1  # the fourth patch starts the second row
    assert all(ax.get_title() == "" for ax in show_patches(patches).axes)
    with pytest.raises(ValueError, match="patches must have shape"):
        show_patches(patches[0])


def test_show_pipeline_shows_every_intermediate_of_a_real_forward_pass(image):
    torch.manual_seed(0)
    model = MIST(tiny_config()).eval()
    with torch.no_grad():
        out = model(image[None])
    K, S = model.config.k, len(model.config.scales)
    fig = show_pipeline(image, out.heatmap[0], out.keypoints[0], out.patches[0], out.task_output[0],
                        out.reconstruction[0], scales=model.config.scales)  # fmt: skip
    axes = fig.axes
    assert len(axes) == S + 3 + 2 * K
    torch.testing.assert_close(shown(axes[0]), image[0])
    for s in range(S):
        torch.testing.assert_close(shown(axes[1 + s]), out.heatmap[0, s])
        assert f"s = {model.config.scales[s]:g} px" in axes[1 + s].get_title()
    windows = axes[S + 1]
    assert len(rectangles(windows)) == K
    torch.testing.assert_close(torch.tensor([corners(r) for r in rectangles(windows)]),
                               keypoints_to_boxes(out.keypoints[0]))  # fmt: skip
    torch.testing.assert_close(shown(axes[S + 2]), out.reconstruction[0, 0].clamp(0, 1))
    for k in range(K):
        torch.testing.assert_close(shown(axes[S + 3 + k]), out.patches[0, k, 0].clamp(0, 1))
        torch.testing.assert_close(shown(axes[S + 3 + K + k]), out.task_output[0, k, 0].clamp(0, 1))


def test_show_pipeline_for_a_classifier_tags_each_window_with_its_class(image):
    torch.manual_seed(0)
    model = MIST(tiny_config(task="classify")).eval()
    with torch.no_grad():
        out = model(image[None])
    K, S = 3, 3
    fig = show_pipeline(image, out.heatmap[0], out.keypoints[0], out.patches[0], out.logits[0])
    assert len(fig.axes) == S + 3 + K
    tags = [t.get_text() for t in fig.axes[S + 2].texts]
    assert tags == [str(c) for c in out.logits[0].argmax(-1).tolist()]
    with pytest.raises(ValueError, match="logits"):
        show_pipeline(image, out.heatmap[0], out.keypoints[0], out.patches[0], out.patches[0])
    with pytest.raises(ValueError, match="K = 3"):
        show_pipeline(image, out.heatmap[0], out.keypoints[0], out.patches[0, :2], out.logits[0])
    with pytest.raises(ValueError, match="heatmap must have shape"):
        show_pipeline(image, out.heatmap, out.keypoints[0], out.patches[0], out.logits[0])


def test_pipeline_diagram_marks_ek_as_the_block_that_stops_the_gradient():
    fig = pipeline_diagram()
    (ax,) = fig.axes
    operators = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(operators) == 4  # H_eta, E_K, S, T_tau
    assert [to_hex(p.get_edgecolor()) for p in operators].count(NO_GRAD_COLOR) == 1
    texts = [t.get_text() for t in ax.texts]
    for symbol in (r"\mathcal{H}_\eta", r"\mathcal{E}_K", r"\mathcal{S}", r"\mathcal{T}_\tau", "task"):
        assert any(symbol in t for t in texts), symbol
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 1
    red_box = next(p for p in operators if to_hex(p.get_edgecolor()) == NO_GRAD_COLOR)
    box_x = red_box.get_x() + red_box.get_width() / 2
    assert abs(crosses[0].get_xdata()[0] - box_x) < 0.5  # the gradient stops at E_K
    plain = pipeline_diagram(gradient=False).axes[0]
    assert not [line for line in plain.lines if line.get_marker() == "x"]


# -- the top-K gradient figure -------------------------------------------------------------------------------
def test_show_topk_gradient_on_real_gradients_of_topk_extract():
    heatmap = torch.rand(1, 2, 12, 12, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    keypoints = topk_extract(heatmap, 4, torch.tensor([10.0, 20.0]))  # (1, K, 3)
    (grad_xy,) = torch.autograd.grad(keypoints[..., :2].sum(), heatmap, retain_graph=True)
    (grad_s,) = torch.autograd.grad(keypoints[..., 2].sum(), heatmap)
    values = torch.linspace(0.0, 2.0, 21)
    positions = torch.where(values > 1.0, 7.0, 2.0)
    fig = show_topk_gradient(heatmap.detach()[0].amax(0), keypoints[0].detach(), grad_xy[0].abs().sum(0),
                             grad_s[0].abs().sum(0), sweep=(values, positions))  # fmt: skip
    assert len(fig.axes) == 4
    torch.testing.assert_close(shown(fig.axes[0]), heatmap.detach()[0].amax(0))
    marks = fig.axes[0].lines[0]
    assert list(marks.get_xdata()) == keypoints[0, :, 0].tolist()
    assert fig.axes[1].get_title().endswith("max 0, non-zero at 0 px")  # positions: no gradient at all
    assert fig.axes[2].get_title().endswith("non-zero at 4 px")  # scales: only at the K picks
    nonzero = shown(fig.axes[2]).nonzero().tolist()  # (row, column) pairs
    assert sorted(nonzero) == sorted([[int(y), int(x)] for x, y, _ in keypoints[0].tolist()])
    assert list(fig.axes[3].lines[0].get_ydata()) == positions.tolist()
    assert len(show_topk_gradient(heatmap.detach()[0, 0], keypoints[0].detach(), grad_xy[0, 0],
                                  grad_s[0, 0]).axes) == 3  # fmt: skip


# -- §2 diagrams ---------------------------------------------------------------------------------------------
def test_cell_counts_known_answers_and_each_centre_once():
    windows = grid_keypoints(4, 20)  # 2 x 2 cells of side 10: [-0.5, 9.5) and [9.5, 19.5) on each axis
    centers = torch.tensor([[2.0, 2.0], [8.0, 3.0], [12.0, 2.0], [4.0, 15.0], [9.5, 9.5], [30.0, 30.0]])
    counts = cell_counts(windows, centers)
    assert counts.tolist() == [2, 1, 1, 1]  # (9.5, 9.5) is on the shared corner: half-open cells take it once
    assert int(counts.sum()) == 5  # the centre outside the image is in no cell
    overlapping = torch.tensor([[5.0, 5.0, 10.0], [8.0, 5.0, 10.0]])  # x in [0, 10) and [3, 13)
    assert cell_counts(overlapping, torch.tensor([[7.0, 5.0], [11.0, 5.0]])).tolist() == [1, 1]


def test_show_grid_assignment_colours_crowded_and_single_cells(image):
    windows = grid_keypoints(4, 32)
    centers = torch.tensor([[3.0, 3.0], [10.0, 12.0], [20.0, 5.0], [20.0, 25.0], [25.0, 28.0], [27.0, 20.0]])
    counts = cell_counts(windows, centers)
    assert counts.tolist() == [2, 1, 0, 3]
    fig = show_grid_assignment(image, windows, centers)
    (ax,) = fig.axes
    colors = [to_hex(r.get_edgecolor()) for r in rectangles(ax)]
    assert colors.count(WINDOW_COLOR) == 4  # every cell outlined
    assert colors.count(BROKEN_COLOR) == 2 and colors.count(GOOD_COLOR) == 1
    assert ax.get_title() == "2 of 4 cells hold 2+ centres"
    dots = ax.lines[0]
    assert list(dots.get_xdata()) == centers[:, 0].tolist()


def test_show_channelwise_marks_the_soft_argmax_of_each_channel(image):
    torch.manual_seed(0)
    model = ChannelwiseMIST(tiny_config(k=4)).eval()
    with torch.no_grad():
        maps, keypoints = model.extract(image[None])  # (1, K, H, W), (1, K, 3)
    fig = show_channelwise(image, maps[0], keypoints[0], shown=2)
    assert len(fig.axes) == 3
    assert len(fig.axes[0].lines) == 4  # one dot per channel on the image
    xs = torch.arange(32.0)
    for k in range(2):
        torch.testing.assert_close(shown(fig.axes[1 + k]), maps[0, k])
        plus = fig.axes[1 + k].lines[0]
        expected_x = float((maps[0, k].sum(0) * xs).sum())  # the mean column of channel k's distribution
        assert plus.get_xdata()[0] == pytest.approx(expected_x, abs=1e-4)
    with pytest.raises(ValueError, match="maps must be"):
        show_channelwise(image, maps[0, :3], keypoints[0])


def test_show_heatmap_picks_draws_one_map_and_its_top_k(image):
    heatmap = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))
    keypoints = topk_extract(heatmap[None], 5, torch.tensor([8.0, 10.0, 12.0]))[0]
    fig = show_heatmap_picks(image, heatmap, keypoints)
    heat_ax, image_ax = fig.axes
    torch.testing.assert_close(shown(heat_ax), heatmap.amax(0))
    assert list(heat_ax.lines[0].get_xdata()) == keypoints[:, 0].tolist()
    assert list(heat_ax.lines[0].get_ydata()) == keypoints[:, 1].tolist()
    assert len(rectangles(image_ax)) == 5


def test_sequential_diagram_adds_one_window_per_step(image):
    boxes = torch.tensor([[1.0, 1, 9, 9], [12.0, 3, 20, 11], [4.0, 18, 12, 26], [20.0, 20, 28, 28]])
    fig = sequential_diagram(image, boxes, steps=4)
    assert len(fig.axes) == 4
    for t, ax in enumerate(fig.axes):
        rects = rectangles(ax)
        assert len(rects) == t + 1
        solid = [r for r in rects if r.get_linestyle() == "-"]
        assert len(solid) == 1 and corners(solid[0]) == boxes[t].tolist()
    assert sum(isinstance(a, ConnectionPatch) for a in fig.artists) == 3
    with pytest.raises(ValueError, match="T >= steps"):
        sequential_diagram(image, boxes, steps=5)


def test_transfer_diagram_has_one_labelled_source_and_l_dashed_targets(image):
    source = torch.rand(1, 10, 10)
    targets = torch.tensor([[0.0, 0, 8, 8], [10.0, 10, 18, 18], [20.0, 2, 28, 10]])
    fig = transfer_diagram(source, torch.tensor([1.0, 1, 9, 9]), 7, image, targets)
    left, right = fig.axes
    assert len(rectangles(left)) == 1 and left.texts[0].get_text() == "7"
    torch.testing.assert_close(shown(left), source[0])
    assert [r.get_linestyle() for r in rectangles(right)] == ["--"] * 3
    assert sum(isinstance(a, ConnectionPatch) for a in fig.artists) == 1


def test_proposals_scores_and_selection():
    proposals = sliding_proposals(20, sides=(8, 12), stride=4)
    assert len(proposals) == 4 * 4 + 3 * 3  # starts 0..12 for side 8, 0..8 for side 12
    assert float(proposals.min()) >= 0 and float(proposals.max()) <= 20
    sides = (proposals[:, 2:] - proposals[:, :2]).unique().tolist()
    assert sides == [8.0, 12.0]
    image = torch.zeros(1, 20, 20)
    image[0, 0:8, 0:8] = 1.0  # one bright square in the corner
    scores = ink_scores(image, proposals)
    assert float(scores[0]) == 1.0 and int(scores.argmax()) == 0
    kept = select_proposals(proposals, scores, keep=5, iou=0.2)
    assert 1 <= len(kept) <= 5 and int(kept[0]) == 0
    assert scores[kept].tolist() == sorted(scores[kept].tolist(), reverse=True)
    overlap = box_iou(proposals[kept], proposals[kept])
    assert float((overlap - torch.eye(len(kept))).max()) <= 0.2


def test_weakly_supervised_diagram_shows_all_proposals_then_the_kept_ones(image):
    proposals = sliding_proposals(32, sides=(10,), stride=11)
    kept = torch.tensor([2, 0, 5])
    fig = weakly_supervised_diagram(image, proposals, kept, labels=[4, 1, 4])
    left, right = fig.axes
    assert len(rectangles(left)) == len(proposals) == 9
    assert [corners(r) for r in rectangles(right)] == proposals[kept].tolist()
    assert fig.get_suptitle() == "image-level labels only: {1, 4}"
