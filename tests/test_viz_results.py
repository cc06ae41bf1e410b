"""Tests of the §7–8 figures and tables: Tables 1–2, Figures 3–6, the results widget, the §8 layer tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from mistlib.baselines import GridMIST
from mistlib.heatmap import HeatmapConfig, HeatmapNet
from mistlib.metrics import detection_metrics, keypoints_to_boxes
from mistlib.model import MIST, MISTConfig
from mistlib.tables import PAPER, TABLES, Row
from mistlib.viz.compute import config_table, count_flops, layer_table, show_compute
from mistlib.viz.matching import correct_detections, localisation_errors
from mistlib.viz.result_tables import results_table, row_budget, show_table
from mistlib.viz.results import (
    MISSED_COLOR,
    RIGHT_COLOR,
    WRONG_COLOR,
    compare_methods,
    results_widget,
    show_autoencoding,
    show_classification,
    show_detections,
    show_inverse_rendering,
    show_method,
)
from mistlib.viz.widgets import frames, selected_frame

TINY = MISTConfig(
    image_size=32,
    k=4,
    scales=(8.0, 12.0),
    reference_size=8.0,
    heatmap_channels=4,
    heatmap_blocks=1,
    task_width=2,
)


def tiny(cls=MIST, seed: int = 0, **changes) -> MIST:
    torch.manual_seed(seed)
    config = MISTConfig(**{**TINY.__dict__, **changes})
    return cls(config).eval()


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def xyxy(rect: Rectangle) -> list[float]:
    return [rect.get_x(), rect.get_y(), rect.get_x() + rect.get_width(), rect.get_y() + rect.get_height()]


def colours(ax) -> list[str]:
    return [to_hex(r.get_edgecolor()) for r in rectangles(ax)]


# -- tables --------------------------------------------------------------------------------------------------
def make_rows(table: str, command_tail: str = " --budget cpu") -> list[Row]:
    rows = []
    for index, key in enumerate(TABLES[table]):
        ours = {metric: 0.1 + 0.01 * index for metric in PAPER[key]}
        rows.append(Row(*key, ours, PAPER[key], "python -m mistlib train" + command_tail, 0, 700, "cpu", 1.0))
    return rows


def test_row_budget_reads_the_command():
    assert row_budget({"command": "python -m mistlib train --budget cpu --steps 4"}) == "cpu"
    assert row_budget({"command": "python -m mistlib train --budget=gpu"}) == "gpu"
    assert row_budget({"command": "python -m mistlib train --steps 6000"}) == "gpu"
    assert row_budget(make_rows("table1")[0]) == "cpu"


def test_results_table_shows_ours_beside_paper_with_steps_device_budget():
    text = results_table(make_rows("table1"))
    lines = text.splitlines()
    assert len(lines) == 1 + len(TABLES["table1"])
    assert lines[0].split()[:4] == ["data", "method", "RMSE", "ours"]
    assert "0.100 / 0.038" in lines[1] and lines[1].split()[-3:] == ["700", "cpu", "cpu"]
    naive = [line for line in lines if " naive " in line and "mnist-hard" in line][0]
    assert "/ —" in naive  # the paper has no naive row
    text2 = results_table(make_rows("table2", command_tail=""))
    first = text2.splitlines()[1]
    assert "10.0% / 84.6%" in first and "10.0% / 95.6%" in first and "10.0% / 83.5%" in first
    assert first.split()[-1] == "gpu"


def test_show_table_bars_are_ours_and_paper_and_skip_missing():
    rows = make_rows("table1")
    fig = show_table(rows, title="Table 1")
    assert len(fig.axes) == 1 and fig.get_suptitle() == "Table 1"
    ours, paper = fig.axes[0].containers
    assert [round(float(b.get_height()), 3) for b in ours] == [round(r.ours["rmse"], 3) for r in rows]
    expected = [r.paper["rmse"] for r in rows if r.paper["rmse"] is not None]
    assert [round(float(b.get_height()), 3) for b in paper] == expected and len(expected) < len(rows)
    assert len(show_table(make_rows("table2")).axes) == 3  # iou50, classification, both


# -- detections, the widget's figure and Figure 3 ------------------------------------------------------------
def test_show_detections_draws_each_window_where_the_keypoint_says():
    keypoints = torch.tensor([[10.0, 12.0, 8.0], [20.0, 5.0, 6.0]])
    gt = torch.tensor([[1.0, 2.0, 9.0, 10.0]])
    fig = show_detections(torch.rand(1, 32, 32), keypoints, torch.rand(1, 32, 32), gt, title="t")
    assert len(fig.axes) == 2
    first, second = fig.axes
    assert xyxy(rectangles(first)[0]) == gt[0].tolist()  # ground truth first, dashed
    assert [xyxy(r) for r in rectangles(second)] == keypoints_to_boxes(keypoints).tolist()
    assert len(show_detections(torch.rand(1, 32, 32), keypoints).axes) == 1  # classifier: no reconstruction


def test_show_method_uses_the_chosen_model_and_image():
    models = {"grid": tiny(GridMIST), "mist": tiny(MIST)}
    batch = images(3)
    fig = show_method(models, batch, index=1, method="mist")
    with torch.no_grad():
        out = models["mist"](batch[1:2])
    drawn = [xyxy(r) for r in rectangles(fig.axes[1])]
    torch.testing.assert_close(torch.tensor(drawn), keypoints_to_boxes(out.keypoints[0]).detach())
    shown = torch.as_tensor(fig.axes[0].images[0].get_array().data)
    torch.testing.assert_close(shown, batch[1, 0])
    rmse = (out.reconstruction[0].clamp(0, 1) - batch[1]).square().mean().sqrt()
    assert fig.get_suptitle() == f"mist: test image 1, RMSE {float(rmse):.3f}"
    with pytest.raises(ValueError, match="method must be one of grid, mist; got 'naive'"):
        show_method(models, batch, 0, "naive")
    with pytest.raises(ValueError, match=r"index must be in \[0, 2\], got 3"):
        show_method(models, batch, 3, "grid")


def test_widget_controls_redraw_the_figure():
    models = {"grid": tiny(GridMIST), "mist": tiny(MIST)}
    batch = images(4, seed=1)
    boxes = torch.zeros(4, 2, 4)
    boxes[:, 0] = torch.tensor([2.0, 2.0, 12.0, 12.0])  # one real box per image, one padding row
    widget = results_widget(models, batch, boxes)
    index, method = widget.children[:2]
    assert method.value == "mist" and index.max == 3 and list(method.options) == ["grid", "mist"]
    before = widget.result
    assert isinstance(before, Figure) and before.get_suptitle().startswith("mist: test image 0")
    assert len(rectangles(before.axes[0])) == 1 + 4  # the real box only, then K = 4 windows

    # every image x method is a saved frame (image outside, method inside), each Stack linked to its control
    stack = widget.picture
    assert widget.children[2] is stack and [len(stack.children), len(stack.children[0].children)] == [4, 2]
    saved = [bytes(frame.value) for frame in frames(stack)]
    assert len(set(saved)) == 4 * 2
    assert stack.links[0].source == (index, "value") and stack.links[0].target == (stack, "selected_index")
    assert [link.source for link in stack.links[1:]] == [(method, "index")] * 4
    inner = [(child, "selected_index") for child in stack.children]
    assert [link.target for link in stack.links[1:]] == inner

    png_before = bytes(selected_frame(stack).value)
    assert png_before == saved[1]  # image 0, method "mist"
    index.value = 2
    after_index = widget.result
    assert bytes(selected_frame(stack).value) != png_before  # what the reader sees changed too
    assert bytes(selected_frame(stack).value) == saved[2 * 2 + 1]  # and is the frame saved for it
    assert after_index is not before and after_index.get_suptitle().startswith("mist: test image 2")
    shown = torch.as_tensor(after_index.axes[0].images[0].get_array().data)
    torch.testing.assert_close(shown, batch[2, 0])

    method.value = "grid"
    after_method = widget.result
    assert after_method.get_suptitle().startswith("grid: test image 2")
    grid_windows = [xyxy(r) for r in rectangles(after_method.axes[1])]
    mist_windows = [xyxy(r) for r in rectangles(after_index.axes[1])]
    assert grid_windows != mist_windows
    assert grid_windows == keypoints_to_boxes(models["grid"].grid).tolist()


def test_compare_methods_one_row_per_method():
    models = {"grid": tiny(GridMIST), "mist": tiny(MIST)}
    batch = images(3)
    fig = compare_methods(models, batch)
    assert len(fig.axes) == 9
    assert [fig.axes[i].get_ylabel() for i in (0, 3, 6)] == ["input", "grid", "mist"]
    grid_rows = [[xyxy(r) for r in rectangles(fig.axes[i])] for i in (3, 4, 5)]
    assert grid_rows[0] == grid_rows[1] == grid_rows[2]  # the grid never moves
    out = models["mist"](batch)
    for b in range(3):
        shown = torch.as_tensor(fig.axes[6 + b].images[0].get_array().data)
        torch.testing.assert_close(shown, out.reconstruction[b, 0].detach().clamp(0, 1))


# -- Figure 4 ------------------------------------------------------------------------------------------------
def test_show_autoencoding_shows_each_patch_in_and_out():
    model = tiny(MIST)
    image = images(1)[0]
    fig = show_autoencoding(model, image)
    assert len(fig.axes) == 3 + 2 * 4
    out = model(image[None])
    for j in range(4):
        patch_in = torch.as_tensor(fig.axes[3 + j].images[0].get_array().data)
        patch_out = torch.as_tensor(fig.axes[7 + j].images[0].get_array().data)
        torch.testing.assert_close(patch_in, out.patches[0, j, 0].detach().clamp(0, 1))
        torch.testing.assert_close(patch_out, out.task_output[0, j, 0].detach())
    assert len(rectangles(fig.axes[1])) == 4 and not rectangles(fig.axes[0])
    with pytest.raises(ValueError, match="auto-encoding model"):
        show_autoencoding(tiny(MIST, task="classify"), image)


# -- Figure 5 ------------------------------------------------------------------------------------------------
def test_localisation_errors_partition_and_agree_with_the_metric():
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        keypoints = torch.cat([torch.rand(6, 2, generator=generator) * 60, torch.full((6, 1), 12.0)], -1)
        centres = torch.cat([keypoints[:3, :2] + 1.0, torch.rand(2, 2, generator=generator) * 60], 0)
        gt = torch.cat([centres - 6.0, centres + 6.0], -1)  # (5, 4): three near a detection, two random
        errors = localisation_errors(keypoints, gt)
        m = len(errors["matched"])
        assert m + len(errors["false"]) == 6 and m + len(errors["missed"]) == 5
        assert set(errors["matched"].tolist()).isdisjoint(errors["false"].tolist())
        assert m == detection_metrics(keypoints[None], None, gt[None])["matched_iou50"]
        assert m >= 3  # shifted by one pixel, IoU (11/13)^2 > 0.5


def test_show_inverse_rendering_colours_mistakes():
    model = tiny(GridMIST)  # windows of side 16 at fixed places
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 16.0, 32.0, 32.0], [40.0, 40.0, 45.0, 45.0]])
    fig = show_inverse_rendering(model, images(1)[0], gt)
    assert len(fig.axes) == 4
    last = colours(fig.axes[3])
    assert last.count(RIGHT_COLOR) == 2 and last.count(WRONG_COLOR) == 2 and last.count(MISSED_COLOR) == 1
    assert fig.axes[3].get_xlabel() == "2 matched (green), 2 false (red), 1 missed (pink)"


# -- Figure 6 ------------------------------------------------------------------------------------------------
def test_correct_detections_needs_box_and_label():
    keypoints = torch.tensor([[8.0, 8.0, 16.0], [24.0, 8.0, 16.0], [60.0, 60.0, 16.0]])
    logits = torch.nn.functional.one_hot(torch.tensor([4, 5, 4]), 10).float()
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 0.0, 32.0, 16.0]])
    labels = torch.tensor([4, 6])
    right = correct_detections(keypoints, logits, gt, labels)
    assert right.tolist() == [True, False, False]  # right place and label; wrong label; wrong place
    counts = detection_metrics(keypoints[None], logits[None], gt[None], labels[None])
    assert int(right.sum()) == counts["matched_both"]


def test_show_classification_labels_and_colours():
    model = tiny(GridMIST, task="classify")
    batch = images(2)
    boxes = torch.tensor([[[0.0, 0, 16, 16], [0, 0, 0, 0]], [[16.0, 16, 32, 32], [0, 16, 16, 32]]])
    with torch.no_grad():
        predicted = model(batch).logits.argmax(-1)  # (2, 4)
    labels = torch.stack([torch.stack([predicted[0, 0], torch.tensor(-1)]), predicted[1, [3, 2]]])
    labels[1, 1] = (labels[1, 1] + 1) % 10  # a wrong label for the second box of image 1
    fig = show_classification(model, batch, boxes, labels)
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.axes[0].texts] == [str(v) for v in predicted[0].tolist()]
    assert colours(fig.axes[0]) == [RIGHT_COLOR, WRONG_COLOR, WRONG_COLOR, WRONG_COLOR]
    assert colours(fig.axes[1]) == [WRONG_COLOR, WRONG_COLOR, WRONG_COLOR, RIGHT_COLOR]
    assert fig.axes[0].get_title() == f"true: {int(predicted[0, 0])}"  # padding (-1) is not listed
    with pytest.raises(ValueError, match="classifying model"):
        show_classification(tiny(GridMIST), batch, boxes, labels)


# -- §8 ------------------------------------------------------------------------------------------------------
def test_layer_table_shapes_per_scale_and_parameter_counts():
    net = HeatmapNet(HeatmapConfig(channels=4, num_blocks=2, scales=(10.0, 20.0, 40.0), reference_size=20.0))
    text = layer_table(net, torch.rand(1, 1, 40, 40), max_depth=2)
    lines = text.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["stem", "blocks", "blocks.0", "blocks.1", "head", "total"]
    # the trunk runs once per scale: image resized by 2, 1 and 0.5
    assert "(1, 4, 80, 80) / (1, 4, 40, 40) / (1, 4, 20, 20)" in rows["stem"]
    assert rows["total"].split()[1] == "HeatmapNet" and "(1, 3, 40, 40)" in rows["total"]
    assert rows["total"].endswith(f"{sum(p.numel() for p in net.parameters()):,}")
    assert rows["head"].endswith(" 5")  # 4 weights + 1 bias
    assert "2 x ResBlock" in rows["blocks"] and "Conv2d 3x3 1->4" in rows["stem"]
    deeper = layer_table(net, torch.rand(1, 1, 40, 40), max_depth=3)
    assert "blocks.0.conv1" in deeper and "blocks.0.conv1" not in text


def test_count_flops_known_answers():
    assert count_flops(nn.Linear(3, 2, bias=False), torch.rand(5, 3)) == 2 * 5 * 3 * 2
    conv = nn.Conv2d(1, 4, 3, padding=1)
    assert count_flops(conv, torch.rand(2, 1, 5, 5)) == 2 * (2 * 4 * 25) * 9  # 2 FLOPs per multiply-add
    relu_only = nn.Sequential(nn.ReLU())
    assert count_flops(relu_only, torch.rand(10)) == 0  # element-wise work is not counted
    model = tiny(MIST)
    one, two = count_flops(model, images(1)), count_flops(model, images(2))
    assert one > 0 and two == 2 * one


def test_config_table_marks_exactly_the_differing_fields():
    from mistlib.experiments import recipe

    gpu = recipe("reconstruct", "mnist-hard", "mist").trainer_config()
    cpu = recipe("reconstruct", "mnist-hard", "mist", budget="cpu").trainer_config()
    lines = config_table(gpu=gpu, cpu=cpu).splitlines()
    assert lines[0].split() == ["field", "gpu", "cpu"]
    marked = {line.split()[0] for line in lines[1:] if line.endswith("*")}
    differing = {f for f in vars(gpu) if getattr(gpu, f) != getattr(cpu, f)}
    assert marked == differing and {"steps", "refine_optimizer"} <= marked
    assert len(lines) == 1 + len(vars(gpu))
    with pytest.raises(ValueError, match="same class"):
        config_table(a=gpu, b=recipe("reconstruct", "mnist-hard", "grid").trainer_config())


def test_show_compute_draws_one_bar_per_part_in_gflops():
    fig = show_compute({"a": 2e9, "b": 5e8, "c": 1e10})
    ax = fig.axes[0]
    assert [bar.get_width() for bar in ax.patches] == pytest.approx([2.0, 0.5, 10.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="flops"):
        show_compute({})
