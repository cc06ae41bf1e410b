"""The results of §7 (Tables 1–2, Figures 3–6) and the implementation details of §8, drawn or tabulated.

Figures take trained models and test images (B, C, H, W) and run the models themselves (no gradients, on the
model's device), so a chapter or a widget needs only a checkpoint and a data set. Detection windows are the
squares ``(x ± s/2, y ± s/2)`` of the keypoints (B, K, 3); ground-truth boxes are xyxy pixels (B, L, 4).
See :mod:`mistlib.viz` for the conventions shared by every figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mistlib.metrics import keypoints_to_boxes, match_boxes
from mistlib.model import MISTOutput
from mistlib.viz.scenes import BOX_COLOR, _draw_image, _draw_windows, _png

DETECTION_COLOR = "#17becf"  # detection windows (cyan)
RIGHT_COLOR = "#2ca02c"  # a detection matched at IoU >= 0.5 (and, for Fig. 6, with the right label)
WRONG_COLOR = "#d62728"  # a false detection, or a wrong label
MISSED_COLOR = "#e377c2"  # a ground-truth box no detection matched (dashed)
LEGEND = {"matched": "green", "false": "red", "missed": "pink"}  # the colours above, in words
METRIC_NAMES = {"rmse": "RMSE", "iou50": "IoU 50%", "classification": "classification", "both": "both"}


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


def _window(ax, box: Sequence[float], color: str, style: str = "-", width: float = 1.2) -> None:
    """One unfilled xyxy rectangle on ``ax``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linestyle=style, linewidth=width)
    )


def _windows(ax, keypoints: torch.Tensor, color: str = DETECTION_COLOR, width: float = 1.2) -> None:
    """The windows of keypoints (K, 3) on ``ax``."""
    _draw_windows(ax, keypoints, color, width=width)


# -- tables 1 and 2 ------------------------------------------------------------------------------------------
def _get(row, name: str):
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def row_budget(row) -> str:
    """The recipe size of a result row: ``"cpu"`` if its command says ``--budget cpu``, else ``"gpu"``.

    ``row`` is a :class:`mistlib.tables.Row` or its dict (as in ``results/<table>.json``).

    Example:
        >>> row_budget({"command": "python -m mistlib train --data gabor --budget cpu"})
        'cpu'
        >>> row_budget({"command": "python -m mistlib train --data gabor"})
        'gpu'
    """
    words = str(_get(row, "command")).split()
    for index, word in enumerate(words):
        if word == "--budget" and index + 1 < len(words):
            return words[index + 1]
        if word.startswith("--budget="):
            return word.split("=", 1)[1]
    return "gpu"


def _metrics(rows: Sequence) -> list[str]:
    names = [name for name in METRIC_NAMES if any(name in _get(r, "paper") for r in rows)]
    return names or sorted({name for r in rows for name in _get(r, "ours")})


def _format(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if metric == "rmse" else f"{100 * value:.1f}%"


def results_table(rows: Sequence) -> str:
    """A plain-text table of result rows: each metric as ``ours / paper``, then steps, device and budget.

    ``rows``: :class:`mistlib.tables.Row` objects (or their dicts), e.g. from
    :func:`mistlib.tables.load_results`. RMSE is printed with three decimals, the shares of Table 2 as
    percentages; ``—`` where there is no number.

    Example:
        >>> rows = [{"data": "gabor", "method": "mist", "ours": {"rmse": 0.1234}, "paper": {"rmse": 0.095},
        ...          "steps": 450, "device": "cpu", "command": "python -m mistlib train --budget cpu"}]
        >>> print(results_table(rows))
        data   method  RMSE ours / paper  steps  device  budget
        gabor  mist    0.123 / 0.095        450  cpu     cpu
    """
    metrics = _metrics(rows)
    header = ["data", "method"] + [f"{METRIC_NAMES.get(m, m)} ours / paper" for m in metrics]
    header += ["steps", "device", "budget"]
    lines = [header]
    for r in rows:
        ours, paper = _get(r, "ours"), _get(r, "paper")
        cells = [_get(r, "data"), _get(r, "method")]
        cells += [f"{_format(ours.get(m), m)} / {_format(paper.get(m), m)}" for m in metrics]
        cells += [str(_get(r, "steps")), str(_get(r, "device")), row_budget(r)]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {header.index("steps")}
    text = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    return "\n".join(line.rstrip() for line in text)


def show_table(rows: Sequence, title: str | None = None) -> Figure:
    """Bars of our numbers beside the paper's, one axes per metric, one pair of bars per row.

    ``rows`` as for :func:`results_table`. A missing number (no paper entry) leaves its bar out.

    Returns: a Figure with one axes per metric; in each, the first container holds our bars, the second the
    paper's (``ax.containers``).

    Example:
        >>> rows = [{"data": "gabor", "method": "mist", "ours": {"rmse": 0.12}, "paper": {"rmse": 0.095}}]
        >>> fig = show_table(rows)
        >>> [round(float(bar.get_height()), 3) for c in fig.axes[0].containers for bar in c]
        [0.12, 0.095]
    """
    metrics = _metrics(rows)
    labels = [f"{_get(r, 'data')}\n{_get(r, 'method')}" for r in rows]
    fig = Figure(figsize=(max(4.0, 0.8 * len(rows)) * len(metrics), 3.2), layout="constrained")
    for index, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), index + 1)
        positions = torch.arange(len(rows), dtype=torch.float64)
        for offset, source, color, name in (
            (-0.2, "ours", "#1f77b4", "ours"),
            (0.2, "paper", "#bbbbbb", "paper"),
        ):
            values = [_get(r, source).get(metric) for r in rows]
            kept = [(p + offset, v) for p, v in zip(positions.tolist(), values, strict=True) if v is not None]
            ax.bar([p for p, _ in kept], [v for _, v in kept], width=0.4, color=color, label=name)
        ax.set_xticks(positions.tolist(), labels, fontsize=7)
        ax.set_title(METRIC_NAMES.get(metric, metric) + (" (lower is better)" if metric == "rmse" else ""))
        if metric != "rmse":
            ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


# -- figures 3 and the widget: detections and reconstructions ------------------------------------------------
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
        _draw_image(ax, picture)
        if index == 0 and gt_boxes is not None:
            for box in gt_boxes.tolist():
                _window(ax, box, BOX_COLOR, style="--", width=0.8)
        _windows(ax, keypoints, width=1.2 if index == 0 else 0.7)  # thin over the reconstruction
        ax.set_title(name, fontsize=9)
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


def results_widget(models: Mapping[str, nn.Module], images: torch.Tensor, boxes: torch.Tensor | None = None):
    """Pick a test image and a method; see its detections and reconstruction (:func:`show_method`).

    Returns an ``ipywidgets.VBox`` of three children: the image slider, the method dropdown and an
    ``ipywidgets.Image`` holding the current figure as PNG; ``.result`` is that Figure. Changing a control
    redraws both. (An image widget rather than an output area: its state is saved in the notebook, so the
    figure also shows where no kernel runs, and no output leaks into the cell.)

    Example:
        >>> from mistlib.baselines import GridMIST
        >>> from mistlib.model import MISTConfig
        >>> grid = GridMIST(MISTConfig(image_size=32, k=4, task_width=2)).eval()
        >>> widget = results_widget({"grid": grid}, torch.rand(3, 1, 32, 32))
        >>> widget.children[0].value = 1
        >>> widget.result.get_suptitle().split(",")[0], bytes(widget.children[2].value[1:4])
        ('grid: test image 1', b'PNG')
    """
    import ipywidgets as widgets

    names = list(models)
    index = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="test image")
    method = widgets.Dropdown(
        options=names, value="mist" if "mist" in names else names[0], description="method"
    )
    picture = widgets.Image(format="png")
    box = widgets.VBox([index, method, picture])

    def redraw(_change=None) -> None:
        fig = show_method(models, images, index.value, method.value, boxes)
        picture.value = _png(fig)
        box.result = fig

    index.observe(redraw, names="value")
    method.observe(redraw, names="value")
    redraw()
    return box


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
        _draw_image(ax, images[b])
        if boxes is not None:
            for box in boxes[b][(boxes[b] != 0).any(-1)].tolist():
                _window(ax, box, BOX_COLOR, style="--", width=0.8)
        if b == 0:
            ax.set_ylabel("input")
    for r, (name, out) in enumerate(outputs.items(), start=1):
        for b in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + b + 1)
            picture = out.reconstruction[b].clamp(0, 1) if out.reconstruction is not None else images[b]
            _draw_image(ax, picture)
            _windows(ax, out.keypoints[b], width=0.7)
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
        _draw_image(ax, picture.clamp(0, 1))
        if windows:
            _windows(ax, out.keypoints[0])
        ax.set_title(name, fontsize=9)
    for row, (name, patches) in enumerate((("in", out.patches), ("out", out.task_output))):
        for j in range(k):
            ax = fig.add_subplot(bottom[row, j])
            _draw_image(ax, patches[0, j].clamp(0, 1))
            if j == 0:
                ax.set_ylabel(name)
    return fig


# -- figure 5: localisation mistakes -------------------------------------------------------------------------
def localisation_errors(
    keypoints: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5
) -> dict[str, torch.Tensor]:
    """Split one image's detections into matched and false ones, and its ground truths into found and missed.

    Matching is the one-to-one IoU matching of Table 2 (:func:`mistlib.metrics.match_boxes`).

    Args:
        keypoints: (K, 3) detections as (x, y, s); gt_boxes: (L, 4) xyxy boxes.

    Returns: long tensors of indices: ``matched`` (M,) detections with their ground truths ``matched_gt``
    (M,), ``false`` (K - M,) detections matched to nothing, ``missed`` (L - M,) ground truths never found.

    Example:
        >>> keypoints = torch.tensor([[5.0, 5.0, 10.0], [40.0, 40.0, 10.0]])
        >>> errors = localisation_errors(keypoints, torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]]))
        >>> {name: value.tolist() for name, value in errors.items()}
        {'matched': [0], 'matched_gt': [0], 'false': [1], 'missed': [1]}
    """
    gt_index, det_index = match_boxes(
        keypoints_to_boxes(keypoints.detach().cpu().double()),
        gt_boxes.detach().cpu().double(),
        iou_threshold=iou_threshold,
    )
    det_free = torch.ones(keypoints.shape[0], dtype=torch.bool)
    det_free[det_index] = False
    gt_free = torch.ones(gt_boxes.shape[0], dtype=torch.bool)
    gt_free[gt_index] = False
    return {
        "matched": det_index,
        "matched_gt": gt_index,
        "false": det_free.nonzero().flatten(),
        "missed": gt_free.nonzero().flatten(),
    }


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
        _draw_image(ax, picture)
        ax.set_title(name, fontsize=9)
        if name == "detections":
            _windows(ax, keypoints)
        if name == "mistakes":
            for i in errors["matched"].tolist():
                _window(ax, boxes[i].tolist(), RIGHT_COLOR)
            for i in errors["false"].tolist():
                _window(ax, boxes[i].tolist(), WRONG_COLOR, width=1.6)
            for i in errors["missed"].tolist():
                _window(ax, gt_boxes[i].tolist(), MISSED_COLOR, style="--", width=1.6)
            counts = [f"{len(errors[key])} {key} ({color})" for key, color in LEGEND.items()]
            ax.set_xlabel(", ".join(counts), fontsize=7)
    return fig


# -- figure 6: detection and classification ------------------------------------------------------------------
def correct_detections(
    keypoints: torch.Tensor,
    logits: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    iou_threshold: float = 0.5,
) -> torch.Tensor:
    """Which detections are right under Table 2's "both": matched one-to-one at IoU >= 0.5, same label.

    Args:
        keypoints: (K, 3); logits: (K, classes); gt_boxes: (L, 4) xyxy; gt_labels: (L,) integer labels.

    Returns: (K,) bool.

    Example:
        >>> keypoints = torch.tensor([[5.0, 5.0, 10.0], [25.0, 5.0, 10.0]])
        >>> logits = torch.tensor([[0.0, 3.0], [0.0, 3.0]])  # both say "1"
        >>> gt_boxes, gt_labels = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]]), torch.tensor([1, 0])
        >>> correct_detections(keypoints, logits, gt_boxes, gt_labels).tolist()
        [True, False]
    """
    det_boxes = keypoints_to_boxes(keypoints.detach().cpu().double())
    _, det_index = match_boxes(
        det_boxes, gt_boxes.detach().cpu().double(), logits.argmax(-1).cpu(), gt_labels.cpu(), iou_threshold
    )
    right = torch.zeros(keypoints.shape[0], dtype=torch.bool)
    right[det_index] = True
    return right


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
        _draw_image(ax, images[b])
        predicted = logits.argmax(-1).tolist()
        for k, box in enumerate(keypoints_to_boxes(keypoints.float()).tolist()):
            color = RIGHT_COLOR if bool(right[k]) else WRONG_COLOR
            _window(ax, box, color)
            ax.text(
                box[0] + 0.5,
                box[1] + 0.5,
                str(predicted[k]),
                color="white",
                fontsize=7,
                va="top",
                bbox={"facecolor": color, "edgecolor": "none", "pad": 0.5, "alpha": 0.85},
                clip_on=True,
            )
        ax.set_title("true: " + " ".join(str(v) for v in sorted(labels.tolist())), fontsize=9)
    return fig


# -- §8: layer tables and FLOPs ------------------------------------------------------------------------------
def _shape(value) -> str | None:
    if isinstance(value, torch.Tensor):
        return "(" + ", ".join(str(d) for d in value.shape) + ")"
    return None


def _pair(value) -> str:
    value = value if isinstance(value, tuple) else (value, value)
    return "x".join(str(v) for v in value)


def describe_layer(module: nn.Module) -> str:
    """A short name for a layer: kind, kernel and channels of a conv; contents of a ``Sequential``.

    Example:
        >>> describe_layer(nn.Conv2d(8, 16, 3, padding=1))
        'Conv2d 3x3 8->16'
        >>> up = nn.Sequential(nn.GroupNorm(1, 8), nn.ReLU(), nn.ConvTranspose2d(8, 4, 2, stride=2))
        >>> describe_layer(up)
        'GroupNorm -> ReLU -> ConvTranspose2d 2x2 /2 8->4'
        >>> describe_layer(nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()))
        '4 x ReLU'
    """
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        stride = _pair(module.stride)
        step = "" if stride == "1x1" else (" /2" if stride == "2x2" else f" stride {stride}")
        return f"{kind} {_pair(module.kernel_size)}{step} {module.in_channels}->{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}->{module.out_features}"
    if isinstance(module, nn.MaxPool2d):
        return f"MaxPool2d {_pair(module.kernel_size)}"
    if isinstance(module, nn.Sequential) and len(module):
        kinds = [type(child).__name__ for child in module]
        if len(module) > 1 and len(set(kinds)) == 1:
            return f"{len(module)} x {kinds[0]}"
        if len(module) <= 3:
            return " -> ".join(describe_layer(child) for child in module)
    return kind


def layer_table(module: nn.Module, *inputs: torch.Tensor, max_depth: int = 2) -> str:
    """A table of ``module``'s sub-modules down to ``max_depth``: layer, output shape(s) and parameters.

    The shapes are recorded by forward hooks during one real forward pass on ``inputs`` (no gradients); a
    sub-module called several times (the heatmap trunk once per scale) lists each distinct shape in call
    order. Parameters count the sub-module with everything inside it; ``total`` is the whole module's.
    Names are those of ``named_modules()``, indented by depth; layers are named by :func:`describe_layer`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        >>> print(layer_table(net, torch.rand(2, 1, 5, 5)))
        layer  type             output shape  params
        0      Conv2d 3x3 1->4  (2, 4, 5, 5)      40
        1      ReLU             (2, 4, 5, 5)       0
        2      Flatten          (2, 100)           0
        total  Sequential       (2, 100)          40
    """
    shapes: dict[str, list[str]] = {}
    handles = []
    selected = [(name, sub) for name, sub in module.named_modules() if name and name.count(".") < max_depth]

    def hook(name: str):
        def record(_module, _inputs, output) -> None:
            shape = _shape(output)
            if shape is not None and shape not in shapes.setdefault(name, []):
                shapes[name].append(shape)

        return record

    for name, sub in selected:
        handles.append(sub.register_forward_hook(hook(name)))
    handles.append(module.register_forward_hook(hook("")))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    lines = [["layer", "type", "output shape", "params"]]
    for name, sub in selected:
        indent = "  " * name.count(".")
        params = sum(p.numel() for p in sub.parameters())
        lines.append([indent + name, describe_layer(sub), " / ".join(shapes.get(name, ["—"])), f"{params:,}"])
    total = sum(p.numel() for p in module.parameters())
    lines.append(["total", type(module).__name__, " / ".join(shapes.get("", ["—"])), f"{total:,}"])
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(line[:3], widths[:3], strict=True))
        + "  "
        + line[3].rjust(widths[3])
        for line in lines
    ]
    return "\n".join(line.rstrip() for line in text)


def config_table(**configs) -> str:
    """Dataclass configs side by side, one line per field, ``*`` marking the fields whose values differ.

    Args:
        **configs: column name -> a dataclass instance (all of the same class, e.g. two ``LiftingConfig``).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Config:
        ...     steps: int = 6000
        ...     batch_size: int = 32
        ...     device: str = "auto"
        >>> print(config_table(long=Config(), short=Config(steps=400)))
        field       long  short
        steps       6000  400    *
        batch_size  32    32
        device      auto  auto
    """
    import dataclasses

    values = list(configs.values())
    if not values or len({type(v) for v in values}) != 1 or not dataclasses.is_dataclass(values[0]):
        raise ValueError("config_table needs one or more dataclass instances of the same class")
    lines = [["field", *configs]]
    marks = [""]
    for field in dataclasses.fields(values[0]):
        row = [getattr(v, field.name) for v in values]
        lines.append([field.name, *(str(v) for v in row)])
        marks.append("*" if any(v != row[0] for v in row) else "")
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + "  " + mark
        for line, mark in zip(lines, marks, strict=True)
    ]
    return "\n".join(line.rstrip() for line in text)


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Floating-point operations of one forward pass ``module(*inputs)``, as PyTorch's flop counter sees them.

    :class:`torch.utils.flop_counter.FlopCounterMode` counts the matrix products and convolutions (a
    multiply-add is 2 FLOPs); element-wise work (ReLU, norms, softmax, interpolation) is not counted. The
    count depends only on the shapes, so it is the same on every run and every machine.

    Example:
        >>> count_flops(nn.Linear(3, 2), torch.rand(5, 3))  # 2 * 5 * 3 * 2
        60
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def show_compute(flops: Mapping[str, float], title: str = "Where the compute goes") -> Figure:
    """A horizontal bar chart of FLOPs per forward pass, one bar per named part, in GFLOPs.

    Example:
        >>> fig = show_compute({"heatmap network": 3.0e9, "auto-encoder x 9": 1.2e9})
        >>> [round(float(bar.get_width()), 2) for bar in fig.axes[0].patches]
        [3.0, 1.2]
    """
    if not flops:
        raise ValueError("flops must name at least one part")
    names, values = list(flops), [float(v) / 1e9 for v in flops.values()]
    fig = Figure(figsize=(7.5, 0.45 * len(names) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(range(len(names)), values, color=DETECTION_COLOR)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # first part on top, in the order given
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlabel("GFLOPs per image (one forward pass)")
    ax.set_xlim(0, max(values) * 1.18)
    ax.set_title(title)
    return fig
