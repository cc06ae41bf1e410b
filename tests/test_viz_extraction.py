"""Tests of mistlib/viz/heatmaps.py and extraction.py: the §4 figures (heatmaps, soft NMS, top-K, eq. 2,
sampler) and their widgets."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.patches import Rectangle

from mistlib.extract import topk_extract
from mistlib.heatmap import HeatmapConfig, HeatmapNet, local_spatial_softmax
from mistlib.model import MIST, MISTConfig
from mistlib.sampler import sample_patches
from mistlib.viz.extraction import (
    sample_points,
    show_normalisation,
    show_pick_sides,
    show_sampler,
    show_topk,
    topk_widget,
)
from mistlib.viz.heatmaps import (
    heatmap_net_at,
    scale_space,
    scales_widget,
    show_scale_maps,
    show_scale_space,
    show_soft_nms,
)
from mistlib.viz.widgets import frames, selected_frame


@pytest.fixture(scope="module")
def model() -> MIST:
    torch.manual_seed(0)
    config = MISTConfig(image_size=32, k=3, scales=(8.0, 12.0), reference_size=8.0, heatmap_channels=4,
                        heatmap_blocks=1, task_width=2)  # fmt: skip
    return MIST(config).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))  # (C, H, W)


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def png(widget) -> bytes:
    """The PNG the widget's picture (a Stack of frames, the child after the controls) currently shows."""
    assert widget.children[-2] is widget.picture
    return bytes(selected_frame(widget.picture).value)


def shown(ax) -> torch.Tensor:
    """The array of the first image drawn on ``ax``."""
    return torch.as_tensor(ax.images[0].get_array().data).float()


# -- computing helpers ---------------------------------------------------------------------------------------
def test_scale_space_is_geometric_between_its_ends():
    scales = scale_space(5, 10.0, 40.0)
    assert scales[0] == 10.0 and scales[-1] == 40.0 and len(scales) == 5
    ratios = [b / a for a, b in zip(scales, scales[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-3  # constant ratio sqrt(2)
    assert scale_space(1, 9.0, 16.0) == (12.0,)  # geometric mean
    assert scale_space(1, 12.0, 12.0) == (12.0,)
    with pytest.raises(ValueError, match="largest > smallest"):
        scale_space(3, 12.0, 12.0)
    with pytest.raises(ValueError, match="num_scales"):
        scale_space(0, 10.0, 20.0)


def test_heatmap_net_at_keeps_the_weights_and_runs_each_scale_as_the_original():
    torch.manual_seed(0)
    net = HeatmapNet(HeatmapConfig(channels=4, num_blocks=1)).eval()
    images = torch.rand(1, 1, 40, 40)
    same = heatmap_net_at(net)
    torch.testing.assert_close(same(images), net(images))
    single = heatmap_net_at(net, scales=(20.0,))  # the middle scale of (16, 20, 25), alone
    torch.testing.assert_close(single.scores(images)[:, 0], net.scores(images)[:, 1])
    sharper = heatmap_net_at(net, softmax_kernel=5, softmax_strength=3.0)
    expected = local_spatial_softmax(net.scores(images), 5, 3.0)
    torch.testing.assert_close(sharper(images), expected)
    assert net.config.softmax_kernel == 15  # the original is untouched


def test_sample_points_match_a_hand_written_bilinear_sampler():
    image = torch.rand(1, 20, 20, generator=torch.Generator().manual_seed(2))
    keypoint = torch.tensor([9.3, 7.6, 11.0])
    points = sample_points(keypoint, 6)  # (P, P, 2)
    patch = sample_patches(image[None], keypoint.view(1, 1, 3), size=6)[0, 0, 0]  # (P, P)
    for i in range(6):
        for j in range(6):
            u, v = points[i, j].tolist()
            x0, y0 = int(torch.floor(torch.tensor(u))), int(torch.floor(torch.tensor(v)))
            a, b = u - x0, v - y0
            value = ((1 - a) * (1 - b) * image[0, y0, x0] + a * (1 - b) * image[0, y0, x0 + 1]
                     + (1 - a) * b * image[0, y0 + 1, x0] + a * b * image[0, y0 + 1, x0 + 1])  # fmt: skip
            assert abs(float(value) - float(patch[i, j])) < 1e-5
    aligned = sample_points(torch.tensor([5.5, 4.5, 4.0]), 4)  # s == P, window on the pixel grid
    assert aligned[0, 0].tolist() == [4.0, 3.0] and aligned[3, 3].tolist() == [7.0, 6.0]


# -- figures -------------------------------------------------------------------------------------------------
def test_show_scale_maps_draws_every_scale_raw_and_softmaxed():
    scores = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    heatmap = local_spatial_softmax(scores[None], 5)[0]
    keypoints = topk_extract(heatmap[None], 4, torch.tensor([8.0, 10.0, 12.5]))[0]
    fig = show_scale_maps(torch.rand(1, 16, 16), scores, heatmap, [8.0, 10.0, 12.5], keypoints)
    assert len(fig.axes) == 8
    assert len(rectangles(fig.axes[0])) == 4
    for s in range(3):
        torch.testing.assert_close(shown(fig.axes[1 + s]), scores[s])  # top row: raw
        torch.testing.assert_close(shown(fig.axes[5 + s]), heatmap[s])  # bottom row: softmax
    chosen = fig.axes[4].lines[-1].get_xdata()
    torch.testing.assert_close(torch.as_tensor(chosen).float(), keypoints[:, 2])
    with pytest.raises(ValueError, match="S = 3"):
        show_scale_maps(torch.rand(1, 16, 16), scores, heatmap, [8.0, 10.0])


def test_show_soft_nms_profiles_the_row_of_the_strongest_peak():
    scores = torch.zeros(2, 12, 12)
    scores[0, 7, 3], scores[0, 7, 5], scores[1, 2, 9] = 1.0, 0.9, 0.05  # a faint bump at scale 2
    heatmap = local_spatial_softmax(scores[None], 5)[0]
    fig = show_soft_nms(scores, heatmap)
    assert len(fig.axes) == 4 and fig.axes[2].get_title() == "profile along row y = 7"
    raw_line, soft_line = fig.axes[2].lines[0], fig.axes[3].lines[0]
    torch.testing.assert_close(torch.as_tensor(raw_line.get_ydata()).float(), scores.amax(0)[7])
    profile = torch.as_tensor(soft_line.get_ydata()).float()
    torch.testing.assert_close(profile, heatmap.amax(0)[7])
    assert profile[3] > 0.5 and profile[5] < 0.5  # the weaker neighbour within the window is suppressed


def test_show_topk_draws_k_windows_and_k_patches():
    image = torch.rand(1, 30, 30)
    keypoints = torch.tensor([[5.0, 5.0, 8.0], [20.0, 10.0, 10.0], [12.0, 22.0, 12.0], [25.0, 25.0, 6.0]])
    patches = sample_patches(image[None], keypoints[None], size=8)[0]
    fig = show_topk(image, keypoints, patches)
    assert len(fig.axes) == 1 + 4 and len(rectangles(fig.axes[0])) == 4
    assert [t.get_text() for t in fig.axes[0].texts] == ["1", "2", "3", "4"]
    box = rectangles(fig.axes[0])[1]
    assert (box.get_x(), box.get_y(), box.get_width()) == (15.0, 5.0, 10.0)
    for k in range(4):
        torch.testing.assert_close(shown(fig.axes[1 + k]), patches[k, 0].clamp(0, 1))
    with pytest.raises(ValueError, match="K=4"):
        show_topk(image, keypoints, patches[:3])


def test_show_normalisation_shows_picks_of_eq2_landing_on_the_background():
    h = torch.zeros(2, 12, 12)
    h[:, 3, 3] = 0.9  # a strong peak, seen by both scales: normalised to 0.5 each
    h[0, 10, 10] = 1e-3  # a faint background pixel where a single scale responds: normalised to ~1
    fig = show_normalisation(h, [10.0, 20.0], k=1)
    circle = fig.axes[0].lines[0]
    cross = fig.axes[1].lines[0]
    assert (circle.get_xdata()[0], circle.get_ydata()[0]) == (3.0, 3.0)  # eq. (3) on the raw heatmap
    assert (int(cross.get_xdata()[0]), int(cross.get_ydata()[0])) == (10, 10)  # eq. (2) first: background
    assert shown(fig.axes[1])[10, 10] > shown(fig.axes[1])[3, 3]


def test_show_pick_sides_plots_the_mean_pick_side_of_each_true_side_bin():
    true = torch.tensor([16.2] * 10 + [17.5] * 10 + [19.0] * 4)  # two full bins; the third has 4 picks
    picked = torch.cat([torch.full((10,), 17.0), torch.linspace(17.0, 19.0, 10), torch.full((4,), 30.0)])
    fig = show_pick_sides({"model": (picked, true)}, scales=(16.0, 20.0, 25.0))
    line, diagonal = fig.axes[0].lines[:2]
    assert line.get_xdata().tolist() == [16.5, 17.5]  # bin centres; the 4-pick bin is left out
    assert line.get_ydata().tolist() == pytest.approx([17.0, 18.0])
    assert diagonal.get_xdata().tolist() == diagonal.get_ydata().tolist() == [16.5, 17.5]
    assert len(fig.axes[0].lines) == 2 + 3  # and one line per scale
    with pytest.raises(ValueError, match="two \\(M,\\) tensors"):
        show_pick_sides({"model": (picked, true[:-1])})


def test_show_sampler_marks_p_squared_points_inside_the_window():
    image = torch.rand(1, 30, 30)
    keypoint = torch.tensor([14.0, 12.5, 9.0])
    fig = show_sampler(image, keypoint, size=5)
    xs, ys = (torch.as_tensor(d) for d in fig.axes[0].lines[0].get_data())
    assert len(xs) == 25
    assert bool(((xs - 14.0).abs() < 4.5).all() and ((ys - 12.5).abs() < 4.5).all())
    expected = sample_patches(image[None], keypoint.view(1, 1, 3), size=5)[0, 0, 0]
    torch.testing.assert_close(shown(fig.axes[1]), expected.clamp(0, 1))


def test_show_scale_space_runs_the_trained_trunk_at_new_scales(model, image):
    fig = show_scale_space(model, image, (6.0, 8.0, 10.0, 14.0), softmax_kernel=7, softmax_strength=4.0, k=5)
    assert len(fig.axes) == 2 * 5 and len(rectangles(fig.axes[0])) == 5
    net = heatmap_net_at(model.heatmap_net, scales=(6.0, 8.0, 10.0, 14.0))
    with torch.no_grad():
        scores = net.scores(image[None])[0]
    torch.testing.assert_close(shown(fig.axes[4]), scores[3])
    torch.testing.assert_close(shown(fig.axes[9]), local_spatial_softmax(scores[None], 7, 4.0)[0, 3])


# -- widgets -------------------------------------------------------------------------------------------------
def test_topk_widget_draws_exactly_k_windows_and_patches(model, image):
    widget = topk_widget(model, image)
    slider = widget.children[0]
    assert slider.description == "K" and slider.options == tuple(range(1, 21)) and slider.value == 3
    assert (slider.index, widget.picture.selected_index) == (2, 2)
    saved = [bytes(frame.value) for frame in frames(widget.picture)]  # what a static page switches between
    assert len(set(saved)) == 20  # a different picture for every K
    with torch.no_grad():
        heatmap = model.heatmap_net(image[None])
    first_windows = None
    for k in (1, 5, 20, 2):
        slider.value = k
        assert widget.picture.selected_index == k - 1 and png(widget) == saved[k - 1]  # live = saved frame
        fig = widget.result
        assert fig.get_suptitle() == f"K = {k}"
        assert len(rectangles(fig.axes[0])) == k and len(fig.axes) == 1 + k
        keypoints = topk_extract(heatmap, k, model.scales, model.config.nms)
        patches = sample_patches(image[None], keypoints, model.config.patch_size)[0]
        torch.testing.assert_close(shown(fig.axes[k]), patches[k - 1, 0].clamp(0, 1))
        windows = [(r.get_x(), r.get_y()) for r in rectangles(fig.axes[0])]
        assert len(set(windows)) == k  # K distinct windows
        if first_windows is None:
            first_windows = windows
        assert windows[0] == first_windows[0]  # the strongest pick stays first whatever K


def test_scales_widget_controls_change_the_figure(model, image):
    widget = scales_widget(model, image)
    count, scale_range, window, strength = widget.children[:4]
    assert count.options == (1, 2, 3, 4, 5) and len(widget.picture.children) == 5  # one frame per count
    assert [(link.source, link.target) for link in widget.picture.links] == [
        ((count, "index"), (widget.picture, "selected_index"))
    ]  # the continuous controls are live only
    assert len({bytes(frame.value) for frame in frames(widget.picture)}) == 5
    assert len(widget.result.axes) == 2 * 3  # the model's two scales
    before = shown(widget.result.axes[4]).clone()  # softmax of the first scale
    for num in (1, 4, 5):
        count.value = num
        assert len(widget.result.axes) == 2 * (num + 1)
        listed = widget.result.get_suptitle().split("(")[1].split(")")[0]
        assert len(listed.split(",")) == num
    count.value = 2
    torch.testing.assert_close(shown(widget.result.axes[4]), before)  # back where it started
    picture, others = png(widget), [bytes(frame.value) for frame in frames(widget.picture)]
    strength.value = 2.0
    assert png(widget) != picture  # a live redraw goes into the frame on show, the others stay as saved
    assert [bytes(frame.value) for frame in frames(widget.picture)] == [
        png(widget) if index == 1 else saved for index, saved in enumerate(others)
    ]
    softer = shown(widget.result.axes[4])
    assert not torch.allclose(softer, before)
    window.value = 1  # a 1x1 window: every pixel is its own maximum, no suppression at all
    flat = shown(widget.result.axes[4])
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / (1 + 1e-6)))
    scale_range.value = (10.0, 20.0)
    assert widget.result.get_suptitle().startswith("scales (10, 20) px, softmax window 1, strength 2")
    scale_range.value = (12.0, 12.0)  # a collapsed range is widened to a pixel, not an error
    assert widget.result.get_suptitle().startswith("scales (12, 13) px")
