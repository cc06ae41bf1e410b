"""The figures of §7 (Figures 3–6): what trained models detect and reconstruct on test images.

Figures take trained models and test images (B, C, H, W) and run the models themselves (no gradients, on the
model's device), so a chapter or a widget needs only a checkpoint and a data set. Detection windows are the
squares ``(x ± s/2, y ± s/2)`` of the keypoints (B, K, 3); ground-truth boxes are xyxy pixels (B, L, 4).
See :mod:`mistlib.viz` for the conventions shared by every figure. Tables 1–2
(:mod:`mistlib.viz.result_tables`), the matching of detections (:mod:`mistlib.viz.matching`) and the
implementation details of §8 (:mod:`mistlib.viz.compute`) can be imported from here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from matplotlib.figure import Figure
from torch import nn

from mistlib.metrics import keypoints_to_boxes
from mistlib.model import MISTOutput
from mistlib.viz.compute import (  # noqa: F401 (chapter 8 imports them from here)
    config_table,
    count_flops,
    layer_table,
    show_compute,
)
from mistlib.viz.draw import BOX_COLOR, draw_boxes, draw_image, draw_windows
from mistlib.viz.matching import correct_detections, localisation_errors
from mistlib.viz.result_tables import results_table, row_budget, show_table  # noqa: F401 (for chapter 7)
from mistlib.viz.widgets import figure_widget

RIGHT_COLOR = "#2ca02c"  # a detection matched at IoU >= 0.5 (and, for Fig. 6, with the right label)
WRONG_COLOR = "#d62728"  # a false detection, or a wrong label
MISSED_COLOR = "#e377c2"  # a ground-truth box no detection matched (dashed)
LEGEND = {"matched": "green", "false": "red", "missed": "pink"}  # the colours above, in words


# -- running a model -----------------------------------------------------------------------------------------
@torch.no_grad()
def _run(model: nn.Module, images: torch.Tensor) -> MISTOutput:
    """``model(images)``, images (B, C, H, W), on the model's device; every output tensor back on the CPU."""
    device = next(model.parameters()).device
    out = model(images.to(device))
    for name in ("heatmap", "keypoints", "patches", "task_output", "reconstruction", "logits"):
        value = getattr(out, name)
        if value is not None:
            setattr(out, name, value.detach().float().cpu())
    return out


# -- figure 3 and the widget: detections and reconstructions -------------------------------------------------
def show_detections(
    image: torch.Tensor,
    keypoints: torch.Tensor,
    reconstruction: torch.Tensor | None = None,
    gt_boxes: torch.Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """One image with its detection windows, and its reconstruction with the same windows.

    Args:
        image: (C, H, W) in [0, 1].
        keypoints: (K, 3) as (x, y, s) in pixels.
        reconstruction: (C, H, W), or None for a classifier (then one panel only).
        gt_boxes: (L, 4) xyxy ground-truth boxes drawn dashed in orange on the input, or None.
        title: optional figure title.

    Returns: a Figure with one or two axes; each carries K detection rectangles (plus L on the input).

    Example:
        >>> fig = show_detections(torch.rand(1, 40, 40), torch.tensor([[10.0, 10, 8], [30, 20, 12]]),
        ...                       torch.rand(1, 40, 40), gt_boxes=torch.tensor([[5.0, 5, 15, 15]]))
        >>> [len(ax.patches) for ax in fig.axes]
        [3, 2]
    """
    panels = [("input and detections", image)]
    if reconstruction is not None:
        panels.append(("reconstruction", reconstruction))
    fig = Figure(figsize=(2.6 * len(panels), 2.9), layout="constrained")
    for index, (name, picture) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        draw_image(ax, picture, name, title_size=9)
        if index == 0 and gt_boxes is not None:
            draw_boxes(ax, gt_boxes, BOX_COLOR, style="--", width=0.8)
        draw_windows(ax, keypoints, width=1.2 if index == 0 else 0.7)  # thin over the reconstruction
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def show_method(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    index: int,
    method: str,
    boxes: torch.Tensor | None = None,
) -> Figure:
    """The widget's figure: test image ``index`` run through ``models[method]``, its detections and output.

    Args:
        models: method name -> trained model (e.g. ``{"mist": ..., "grid": ...}``).
        images: (N, C, H, W) test images.
        index: which image, ``0 <= index < N``.
        method: a key of ``models``.
        boxes: (N, L, 4) xyxy ground-truth boxes (padding rows all zero are skipped), or None.

    Returns: :func:`show_detections` of that image, titled with the method, the index and (for an
    auto-encoder) the image's RMSE.

    Example:
        >>> from mistlib.baselines import GridMIST
        >>> from mistlib.model import MISTConfig
        >>> grid = GridMIST(MISTConfig(image_size=32, k=4, task_width=2)).eval()
        >>> fig = show_method({"grid": grid}, torch.rand(3, 1, 32, 32), index=2, method="grid")
        >>> fig.get_suptitle().split(",")[0], len(fig.axes[1].patches)
        ('grid: test image 2', 4)
    """
    if method not in models:
        raise ValueError(f"method must be one of {', '.join(models)}; got {method!r}")
    if not 0 <= index < len(images):
        raise ValueError(f"index must be in [0, {len(images) - 1}], got {index}")
    out = _run(models[method], images[index : index + 1])
    title = f"{method}: test image {index}"
    reconstruction = None
    if out.reconstruction is not None:
        reconstruction = out.reconstruction[0].clamp(0, 1)
        error = (reconstruction - images[index].float().cpu()).square().mean().sqrt()
        title += f", RMSE {float(error):.3f}"
    gt = None
    if boxes is not None:
        gt = boxes[index][(boxes[index] != 0).any(-1)]  # (L_b, 4): padding rows are all zero
    return show_detections(images[index], out.keypoints[0], reconstruction, gt, title)


def results_widget(
    models: Mapping[str, nn.Module], images: torch.Tensor, boxes: torch.Tensor | None = None, dpi: float = 90
):
    """Pick a test image and a method; see its detections and reconstruction (:func:`show_method`).

    The figure of every image and method is precomputed (``N x len(models)`` frames at ``dpi``), so the
    controls work on a static page too; with a kernel, each change also reruns the model on that image.

    Returns: a :func:`~mistlib.viz.widgets.figure_widget` whose children are the image slider (an
    ``IntSlider`` from 0), the method dropdown, the picture (``.picture``) and the output area for errors;
    ``.result`` is the current Figure.

    Example:
        >>> from mistlib.baselines import GridMIST
        >>> from mistlib.model import MISTConfig
        >>> from mistlib.viz.widgets import selected_frame
        >>> grid = GridMIST(MISTConfig(image_size=32, k=4, task_width=2)).eval()
        >>> widget = results_widget({"grid": grid}, torch.rand(3, 1, 32, 32), dpi=30)
        >>> widget.children[0].value = 1
        >>> widget.result.get_suptitle().split(",")[0], bytes(selected_frame(widget.picture).value[1:4])
        ('grid: test image 1', b'PNG')
    """
    import ipywidgets as widgets

    names = list(models)
    index = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="test image")
    method = widgets.Dropdown(
        options=names, value="mist" if "mist" in names else names[0], description="method"
    )

    def draw(index: int, method: str) -> Figure:
        return show_method(models, images, index, method, boxes)

    return figure_widget(draw, dpi, index=index, method=method)


def compare_methods(
    models: Mapping[str, nn.Module], images: torch.Tensor, boxes: torch.Tensor | None = None
) -> Figure:
    """Figure 3: the input images on top, then one row per method: its reconstruction and detection windows.

    Args:
        models: method name -> trained auto-encoding model, in the order of the rows.
        images: (B, C, H, W) test images, one column each.
        boxes: (B, L, 4) xyxy ground-truth boxes for the top row (all-zero padding rows skipped), or None.

    Returns: a Figure of ``(1 + len(models)) * B`` axes, row-major; the row's name is the y label of its first
    axes.

    Example:
        >>> from mistlib.baselines import GridMIST
        >>> from mistlib.model import MISTConfig
        >>> grid = GridMIST(MISTConfig(image_size=32, k=4, task_width=2)).eval()
        >>> fig = compare_methods({"grid": grid}, torch.rand(2, 1, 32, 32))
        >>> len(fig.axes), fig.axes[2].get_ylabel(), len(fig.axes[3].patches)
        (4, 'grid', 4)
    """
    outputs = {name: _run(model, images) for name, model in models.items()}
    rows, cols = 1 + len(models), len(images)
    fig = Figure(figsize=(1.9 * cols, 1.9 * rows), layout="constrained")
    for b in range(cols):
        ax = fig.add_subplot(rows, cols, b + 1)
        draw_image(ax, images[b])
        if boxes is not None:
            draw_boxes(ax, boxes[b][(boxes[b] != 0).any(-1)], BOX_COLOR, style="--", width=0.8)
        if b == 0:
            ax.set_ylabel("input")
    for r, (name, out) in enumerate(outputs.items(), start=1):
        for b in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + b + 1)
            picture = out.reconstruction[b].clamp(0, 1) if out.reconstruction is not None else images[b]
            draw_image(ax, picture)
            draw_windows(ax, out.keypoints[b], width=0.7)
            if b == 0:
                ax.set_ylabel(name)
    return fig


# -- figure 4: per-patch auto-encoding -----------------------------------------------------------------------
def show_autoencoding(model: nn.Module, image: torch.Tensor) -> Figure:
    """Figure 4: input, detections and synthesis on top; below, each patch as extracted and as decoded.

    Args:
        model: a trained auto-encoding MIST; image: (C, H, W).

    Returns: a Figure with ``3 + 2K`` axes: the three top panels, then the K input patches (row "in") and the
    K decoded patches (row "out"), patch k in column k.

    Example:
        >>> from mistlib.model import MIST, MISTConfig
        >>> config = MISTConfig(image_size=32, k=2, scales=(8.0, 12.0), reference_size=8.0,
        ...                     heatmap_channels=4, heatmap_blocks=1, task_width=2)
        >>> fig = show_autoencoding(MIST(config).eval(), torch.rand(1, 32, 32))
        >>> len(fig.axes), [ax.get_ylabel() for ax in fig.axes[3:]]  # K = 2 patches in, 2 out
        (7, ['in', '', 'out', ''])
    """
    out = _run(model, image[None])
    if out.reconstruction is None:
        raise ValueError("show_autoencoding needs an auto-encoding model (task 'reconstruct')")
    k = out.keypoints.shape[1]
    fig = Figure(figsize=(max(6.0, 0.8 * k), 2.6 + 1.8 * max(1.0, 6.0 / k)), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[2.0, 1.6])
    top, bottom = grid[0].subgridspec(1, 3), grid[1].subgridspec(2, k)
    for index, (name, picture, windows) in enumerate(
        (("input", image, False), ("detections", image, True), ("synthesis", out.reconstruction[0], False))
    ):
        ax = fig.add_subplot(top[0, index])
        draw_image(ax, picture.clamp(0, 1), name, title_size=9)
        if windows:
            draw_windows(ax, out.keypoints[0], width=1.2)
    for row, (name, patches) in enumerate((("in", out.patches), ("out", out.task_output))):
        for j in range(k):
            ax = fig.add_subplot(bottom[row, j])
            draw_image(ax, patches[0, j].clamp(0, 1))
            if j == 0:
                ax.set_ylabel(name)
    return fig


# -- figure 5: localisation mistakes -------------------------------------------------------------------------
def show_inverse_rendering(
    model: nn.Module, image: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5
) -> Figure:
    """Figure 5: input, detections, reconstruction, and the localisation mistakes.

    In the last panel a detection matched to a ground-truth box (:func:`localisation_errors`) is green, a
    false detection red, and a ground-truth box that nothing matched is dashed pink.

    Args:
        model: a trained auto-encoding model; image: (C, H, W); gt_boxes: (L, 4) xyxy boxes of its instances.

    Returns: a Figure of four axes; the last one's x label counts the matched, false and missed boxes.

    Example:
        >>> from mistlib.baselines import GridMIST
        >>> from mistlib.model import MISTConfig
        >>> grid = GridMIST(MISTConfig(image_size=32, k=4, task_width=2)).eval()  # windows of side 16
        >>> fig = show_inverse_rendering(grid, torch.rand(1, 32, 32), torch.tensor([[0.0, 0, 16, 16]]))
        >>> fig.axes[3].get_xlabel()
        '1 matched (green), 3 false (red), 0 missed (pink)'
    """
    out = _run(model, image[None])
    keypoints = out.keypoints[0]
    errors = localisation_errors(keypoints, gt_boxes, iou_threshold)
    reconstruction = out.reconstruction[0] if out.reconstruction is not None else image
    fig = Figure(figsize=(10.0, 3.1), layout="constrained")
    panels = ("input", "detections", "reconstruction", "mistakes")
    pictures = (image, image, reconstruction.clamp(0, 1), image)
    boxes = keypoints_to_boxes(keypoints.float())
    for index, (name, picture) in enumerate(zip(panels, pictures, strict=True)):
        ax = fig.add_subplot(1, 4, index + 1)
        draw_image(ax, picture, name, title_size=9)
        if name == "detections":
            draw_windows(ax, keypoints, width=1.2)
        if name == "mistakes":
            draw_boxes(ax, boxes[errors["matched"]], RIGHT_COLOR, width=1.2)
            draw_boxes(ax, boxes[errors["false"]], WRONG_COLOR, width=1.6)
            draw_boxes(ax, gt_boxes[errors["missed"]], MISSED_COLOR, style="--", width=1.6)
            counts = [f"{len(errors[key])} {key} ({color})" for key, color in LEGEND.items()]
            ax.set_xlabel(", ".join(counts), fontsize=7)
    return fig


# -- figure 6: detection and classification ------------------------------------------------------------------
def show_classification(
    model: nn.Module,
    images: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    iou_threshold: float = 0.5,
) -> Figure:
    """Figure 6: each image's detection windows labelled with the predicted digit (right green, wrong red).

    Args:
        model: a trained classifying MIST; images: (B, C, H, W); gt_boxes: (B, L, 4) xyxy; gt_labels: (B, L)
            integer labels padded with -1 (padding is skipped).

    Returns: a Figure with one axes per image; in each, K windows whose label texts are the predicted classes
    and whose colours say right or wrong (:func:`correct_detections`); the title lists the true labels.

    Example:
        >>> from mistlib.baselines import GridMIST
        >>> from mistlib.model import MISTConfig
        >>> classifier = GridMIST(MISTConfig(task="classify", image_size=32, k=4, task_width=2)).eval()
        >>> boxes, labels = torch.tensor([[[0.0, 0, 16, 16]]]), torch.tensor([[3]])  # (B, L, 4), (B, L)
        >>> fig = show_classification(classifier, torch.rand(1, 1, 32, 32), boxes, labels)
        >>> len(fig.axes[0].patches), len(fig.axes[0].texts), fig.axes[0].get_title()
        (4, 4, 'true: 3')
    """
    out = _run(model, images)
    if out.logits is None:
        raise ValueError("show_classification needs a classifying model (task 'classify')")
    count = len(images)
    ncols = min(count, 4)
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(3.0 * ncols, 3.1 * nrows), layout="constrained")
    for b in range(count):
        valid = gt_labels[b] >= 0
        boxes, labels = gt_boxes[b][valid], gt_labels[b][valid]
        keypoints, logits = out.keypoints[b], out.logits[b]
        right = correct_detections(keypoints, logits, boxes, labels, iou_threshold)
        ax = fig.add_subplot(nrows, ncols, b + 1)
        draw_image(ax, images[b], "true: " + " ".join(str(v) for v in sorted(labels.tolist())), title_size=9)
        windows = keypoints_to_boxes(keypoints.float())  # (K, 4)
        for k, predicted in enumerate(logits.argmax(-1).tolist()):
            color = RIGHT_COLOR if bool(right[k]) else WRONG_COLOR
            draw_boxes(ax, windows[k : k + 1], color, width=1.2, labels=[predicted], label_color="white")
    return fig
