"""Tests of mistlib/viz/draw.py (the panels of every figure), viz/widgets.py, and the package's layout."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.colors import Normalize, PowerNorm, to_hex, to_rgba
from matplotlib.figure import Figure

import mistlib.viz
from mistlib.viz.draw import (
    BOX_COLOR,
    WINDOW_COLOR,
    check_keypoints,
    draw_boxes,
    draw_centres,
    draw_heatmap,
    draw_image,
    draw_keypoints,
    draw_moves,
    draw_patches,
    draw_windows,
)
from mistlib.viz.widgets import control_values, figure_widget, frame_stack, frames, png_bytes, selected_frame

VIZ = Path(mistlib.viz.__file__).parent


@pytest.fixture
def ax():
    return Figure().add_subplot()


def test_draw_image_clips_and_shows_grey_or_rgb_in_pixel_coordinates(ax):
    grey = torch.tensor([[[-1.0, 0.5, 2.0]]])  # (1, 1, 3): clipped to [0, 1]
    draw_image(ax, grey, title="grey", title_size=9)
    assert ax.images[0].get_array().tolist() == [[0.0, 0.5, 1.0]]
    assert ax.get_xlim() == (-0.5, 2.5) and ax.get_ylim() == (0.5, -0.5)  # y down
    assert not ax.get_xticks().size and ax.get_title() == "grey" and ax.title.get_fontsize() == 9
    other = Figure().add_subplot()
    draw_image(other, torch.rand(4, 5, 6))  # RGBA-like: the first three channels
    assert other.images[0].get_array().shape == (5, 6, 3)


def test_draw_heatmap_scales_to_its_own_maximum_or_to_given_limits(ax):
    draw_heatmap(ax, torch.tensor([[0.0, 2.0], [1.0, 0.5]]), gamma=0.5)
    norm = ax.images[0].norm
    assert isinstance(norm, PowerNorm) and (norm.vmin, norm.vmax, norm.gamma) == (0.0, 2.0, 0.5)
    flat = Figure().add_subplot()
    draw_heatmap(flat, torch.zeros(3, 3), cmap="viridis")  # nothing positive: a range of [0, 1]
    norm = flat.images[0].norm
    assert type(norm) is Normalize and (norm.vmin, norm.vmax) == (0.0, 1.0)
    assert flat.images[0].get_cmap().name == "viridis"
    signed = Figure().add_subplot()
    draw_heatmap(signed, torch.rand(4, 4) - 0.5, -1.0, 1.0, cmap="RdBu_r", title="residual")
    assert (signed.images[0].norm.vmin, signed.images[0].norm.vmax) == (-1.0, 1.0)
    assert signed.get_title() == "residual" and signed.get_ylim() == (3.5, -0.5)


def test_draw_windows_and_boxes_place_rectangles_and_labels(ax):
    keypoints = torch.tensor([[5.0, 6.0, 4.0], [10.0, 10.0, 2.0]])  # (K, 3)
    draw_windows(ax, keypoints, styles=["-", "--"], width=1.5, tags=["a", "b"])
    (first, second) = ax.patches
    assert (first.get_xy(), first.get_width(), first.get_height()) == ((3.0, 4.0), 4.0, 4.0)
    assert [p.get_linestyle() for p in ax.patches] == ["-", "--"] and first.get_linewidth() == 1.5
    assert to_hex(first.get_edgecolor()) == WINDOW_COLOR and not first.get_fill()
    assert [(t.get_text(), t.get_position()) for t in ax.texts] == [("a", (3.5, 4.5)), ("b", (9.5, 9.5))]

    boxes = Figure().add_subplot()
    draw_boxes(
        boxes, torch.tensor([[0.0, 0, 4, 2], [1, 1, 3, 3]]), fill=0.2, labels=[2, -1], label_color="white"
    )
    assert to_hex(boxes.patches[0].get_edgecolor()) == BOX_COLOR
    assert boxes.patches[0].get_facecolor() == pytest.approx(to_rgba(BOX_COLOR, 0.2))
    assert [t.get_text() for t in boxes.texts] == ["2"] and boxes.texts[0].get_color() == "white"


def test_draw_centres_keypoints_and_moves(ax):
    keypoints = torch.tensor([[5.0, 6.0, 4.0], [10.0, 10.0, 2.0]])
    draw_centres(ax, keypoints, "#123456", marker="o", size=6, hollow=True, edge_width=1.4)
    (line,) = ax.lines
    assert line.get_xdata().tolist() == [5.0, 10.0] and line.get_markerfacecolor() == "none"
    assert line.get_markeredgecolor() == "#123456" and line.get_markeredgewidth() == 1.4

    both = Figure().add_subplot()
    draw_keypoints(both, keypoints, "#123456")
    draw_keypoints(both, keypoints, "#654321", windows=False)
    assert len(both.patches) == 2 and [line.get_marker() for line in both.lines] == ["o", "o"]

    moves = Figure().add_subplot()
    draw_moves(moves, keypoints, keypoints + torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    assert len(moves.texts) == 1  # the second keypoint only changed its scale: no arrow


def test_draw_patches_fills_a_grid_row_by_row():
    fig = Figure()
    axes = draw_patches(fig, torch.rand(7, 1, 4, 4), ncols=3, titles=[str(k) for k in range(7)], title_size=7)
    assert len(axes) == len(fig.axes) == 7
    assert axes[-1].get_subplotspec().get_geometry() == (3, 3, 6, 6)
    assert axes[3].get_title() == "3" and axes[3].title.get_fontsize() == 7


def test_check_keypoints_names_the_expected_layout():
    check_keypoints(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"keypoints must have shape \(K, 3\)"):
        check_keypoints(torch.zeros(4, 2))


def test_png_bytes_with_a_palette_keeps_the_picture_and_shrinks_the_file():
    from PIL import Image

    fig = Figure(figsize=(3, 2))
    fig.add_subplot().imshow(torch.rand(40, 40).numpy(), cmap="viridis")
    full, palette = png_bytes(fig, 60), png_bytes(fig, 60, colors=128)
    assert full[:8] == palette[:8] == b"\x89PNG\r\n\x1a\n" and len(palette) < len(full)
    exact = Image.open(io.BytesIO(full)).convert("RGB")
    reduced = Image.open(io.BytesIO(palette))
    assert reduced.mode == "P" and reduced.size == exact.size and len(reduced.getcolors(256)) <= 128
    difference = torch.tensor(np.asarray(reduced.convert("RGB"))).float() - torch.tensor(np.asarray(exact))
    assert difference.abs().float().mean() < 2  # out of 255


def width_frame(values: tuple) -> bytes:
    """A frame whose size encodes the values: ``width`` by ``height + 1`` inches."""
    return png_bytes(Figure(figsize=(values[0], values[1] + 1 if len(values) > 1 else 1)), dpi=10)


def test_frame_stack_nests_one_stack_per_control_each_linked_to_it():
    import ipywidgets as widgets
    from ipywidgets import widget_link

    width = widgets.SelectionSlider(options=[("narrow", 1), ("wide", 3)], value=3)
    height = widgets.IntSlider(value=1, min=0, max=2)
    stack = frame_stack([width, height], width_frame)
    assert isinstance(stack, widgets.Stack) and len(stack.children) == 2
    assert all(isinstance(child, widgets.Stack) and len(child.children) == 3 for child in stack.children)
    assert stack.selected_index == 1 and [child.selected_index for child in stack.children] == [1, 1]
    saved = [bytes(frame.value) for frame in frames(stack)]
    assert saved == [width_frame((w, h)) for w in (1, 3) for h in (0, 1, 2)]  # outer control slowest
    assert len(set(saved)) == 6  # a different picture at every position
    # the selection's index and the 0-based IntSlider's value are what the browser links, both ways
    assert [type(link) for link in stack.links] == [widget_link.Link] * 3
    assert [(link.source, link.target) for link in stack.links] == [
        ((width, "index"), (stack, "selected_index")),
        ((height, "value"), (stack.children[0], "selected_index")),
        ((height, "value"), (stack.children[1], "selected_index")),
    ]
    assert selected_frame(stack) is stack.children[1].children[1]
    assert control_values(width) == [1, 3] and control_values(height) == [0, 1, 2]


def test_frame_stack_refuses_controls_it_cannot_link():
    import ipywidgets as widgets

    with pytest.raises(ValueError, match="SelectionSlider"):
        frame_stack([widgets.IntSlider(value=1, min=1, max=3)], width_frame)  # value 1 at position 0
    with pytest.raises(ValueError, match="SelectionSlider"):
        frame_stack([widgets.IntSlider(value=0, min=0, max=4, step=2)], width_frame)
    with pytest.raises(TypeError, match="FloatSlider"):
        frame_stack([widgets.FloatSlider()], width_frame)
    with pytest.raises(ValueError, match="at least one control"):
        frame_stack([], width_frame)


def test_figure_widget_redraws_live_into_the_selected_frame_only():
    import ipywidgets as widgets

    calls = []

    def draw(width: int, height: float) -> Figure:
        calls.append((width, height))
        return Figure(figsize=(width, height))

    width = widgets.Dropdown(options=[1, 2, 3], value=2)
    height = widgets.FloatSlider(value=1.0, min=0.5, max=2.0)
    widget = figure_widget(draw, dpi=10, live_only=["height"], width=width, height=height)
    assert widget.children[:3] == (width, height, widget.picture)
    assert [(link.source, link.target) for link in widget.picture.links] == [
        ((width, "index"), (widget.picture, "selected_index"))
    ]
    assert calls == [(1, 1.0), (2, 1.0), (3, 1.0), (2, 1.0)]  # three saved frames, then the live one
    saved = [bytes(frame.value) for frame in frames(widget.picture)]
    assert bytes(selected_frame(widget.picture).value) == saved[1] == png_bytes(widget.result, 10, 128)
    height.value = 2.0  # a live-only control: redrawn into the frame on show, the others stay as saved
    after = [bytes(frame.value) for frame in frames(widget.picture)]
    assert after[0] == saved[0] and after[2] == saved[2] and after[1] != saved[1]
    assert after[1] == png_bytes(widget.result, 10, 128)
    assert widget.result.get_size_inches().tolist() == [2, 2]
    width.value = 3  # a scrubbed control: the Stack follows it in Python too, and the redraw lands there
    assert widget.picture.selected_index == 2 and selected_frame(widget.picture) is widget.picture.children[2]
    assert bytes(widget.picture.children[2].value) == png_bytes(Figure(figsize=(3, 2)), 10, 128)


# -- the layout of the package -------------------------------------------------------------------------------
def test_no_viz_module_imports_a_private_name_of_another_module():
    found = []
    for path in sorted(VIZ.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mistlib"):
                found += [
                    f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                ]
    assert not found, found


def test_viz_modules_and_functions_stay_short():
    long = []
    for path in sorted(VIZ.glob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            long.append(f"{path.name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                lines = node.end_lineno - min([node.lineno] + [d.lineno for d in node.decorator_list]) + 1
                doc = node.body[0]
                if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
                    lines -= doc.end_lineno - doc.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}: {node.name} has {lines} lines besides its docstring")
    assert not long, long
