"""Dataset samples drawn with their ground-truth boxes and labels (see :mod:`mistlib.viz` for conventions)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

BOX_COLOR = "#ff7f0e"  # boxes and their labels
Batch = Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]] | torch.Tensor


def _unpack(batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor | None], list[torch.Tensor | None]]:
    """``(images (B, C, H, W), boxes per image (L_b, 4) or None, labels per image (L_b,) or None)``."""
    if isinstance(batch, torch.Tensor):
        images = batch[None] if batch.dim() == 3 else batch
        if images.dim() != 4:
            raise ValueError(
                f"batch tensor must have shape (B, C, H, W) or (C, H, W), got {tuple(batch.shape)}"
            )
        return images, [None] * len(images), [None] * len(images)
    if isinstance(batch, Mapping) and "images" in batch:  # a collated batch: padded rows past num_instances
        images = batch["images"]
        counts = batch.get("num_instances")
        if counts is None:
            counts = torch.full((len(images),), batch["boxes"].shape[1] if "boxes" in batch else 0)
        boxes = [batch["boxes"][b, : int(n)] if "boxes" in batch else None for b, n in enumerate(counts)]
        labels = [batch["labels"][b, : int(n)] if "labels" in batch else None for b, n in enumerate(counts)]
        return images, boxes, labels
    items = [batch] if isinstance(batch, Mapping) else list(batch)
    if not items or not all(isinstance(item, Mapping) and "image" in item for item in items):
        raise ValueError("batch must be a collated dict, a dataset item, a list of items or an image tensor")
    images = torch.stack([item["image"] for item in items])  # (B, C, H, W)
    return images, [item.get("boxes") for item in items], [item.get("labels") for item in items]


def show_samples(
    batch: Batch, boxes: bool = True, ncols: int | None = None, size: float = 2.0, title: str | None = None
) -> Figure:
    """A grid of images with their ground-truth boxes and class labels.

    Args:
        batch: a collated dict (``images`` (B, C, H, W), ``boxes`` (B, L, 4) xyxy pixels, ``labels`` (B, L),
            ``num_instances`` (B,)), one dataset item or a list of them (``image`` (C, H, W),
            ``boxes`` (L, 4), ``labels`` (L,)), or a bare image tensor (B, C, H, W).
        boxes: draw the boxes, and each box's label when it is >= 0.
        ncols: columns of the grid (default: up to 8).
        size: side of one image in inches.
        title: optional figure title.

    Returns: a new Figure with one axes per image (B axes) and one Rectangle patch per drawn box.

    Example:
        >>> len(show_samples(torch.rand(3, 1, 8, 8)).axes)  # a bare (B, C, H, W) tensor: no boxes
        3
        >>> batch = {
        ...     "images": torch.rand(2, 1, 8, 8),  # (B, C, H, W)
        ...     "boxes": torch.tensor([[[1.0, 1, 4, 4], [0, 0, 0, 0]], [[2, 2, 6, 6], [3, 3, 7, 7]]]),  # xyxy
        ...     "labels": torch.tensor([[3, -1], [5, 7]]),  # (B, L)
        ...     "num_instances": torch.tensor([1, 2]),  # (B,): the second row of image 0 is padding
        ... }
        >>> fig = show_samples(batch, ncols=1)
        >>> [len(ax.patches) for ax in fig.axes], [text.get_text() for text in fig.axes[1].texts]
        ([1, 2], ['5', '7'])
    """
    images, all_boxes, all_labels = _unpack(batch)
    count = len(images)
    if count == 0:
        raise ValueError("batch must hold at least one image")
    ncols = min(count, 8) if ncols is None else max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(size * ncols, size * nrows + (0.3 if title else 0)), layout="constrained")
    for index in range(count):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        _draw_image(ax, images[index])
        if boxes and all_boxes[index] is not None:
            _draw_boxes(ax, all_boxes[index], all_labels[index])
    if title:
        fig.suptitle(title)
    return fig


def _draw_image(ax, image: torch.Tensor) -> None:
    """Show a (C, H, W) image in [0, 1] on ``ax``, pixel centres at integer coordinates, without ticks."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")  # (H, W, 3)
    height, width = image.shape[-2:]
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)  # y down
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_windows(
    ax,
    keypoints: torch.Tensor,
    color: str,
    styles: str | Sequence[str] = "-",
    width: float = 1.0,
    tags: Sequence[str] | None = None,
) -> None:
    """Draw the square windows of keypoints (K, 3) as (x, y, s) on ``ax``, shared by every chapter's figures.

    ``styles`` is one line style or one per window; ``tags`` (K,) labels each window at its top left.
    """
    rows = keypoints.detach().float().cpu().tolist()
    styles = [styles] * len(rows) if isinstance(styles, str) else list(styles)
    for index, (x, y, s) in enumerate(rows):
        corner = (x - s / 2, y - s / 2)
        ax.add_patch(
            Rectangle(corner, s, s, fill=False, edgecolor=color, linewidth=width, linestyle=styles[index])
        )
        if tags is not None:
            bbox = {"facecolor": color, "edgecolor": "none", "pad": 0.4, "alpha": 0.85}
            ax.text(corner[0] + 0.5, corner[1] + 0.5, str(tags[index]), color="black", fontsize=6,
                    va="top", ha="left", bbox=bbox, clip_on=True)  # fmt: skip


def _draw_boxes(ax, boxes: torch.Tensor, labels: torch.Tensor | None) -> None:
    """Draw xyxy ``boxes`` (L, 4) as rectangles, with each label >= 0 (``labels`` (L,)) at the top left."""
    for index, (x0, y0, x1, y1) in enumerate(boxes.detach().cpu().tolist()):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=BOX_COLOR, linewidth=1.0))
        label = int(labels[index]) if labels is not None else -1
        if label >= 0:
            ax.text(
                x0 + 0.5,
                y0 + 0.5,
                str(label),
                color="black",
                fontsize=7,
                va="top",
                ha="left",
                bbox={"facecolor": BOX_COLOR, "edgecolor": "none", "pad": 0.5, "alpha": 0.85},
                clip_on=True,
            )


def _png(fig: Figure, dpi: float | None = None) -> bytes:
    """``fig`` rendered as PNG bytes (``dpi`` None: the figure's own)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _png_outputs(fig: Figure, dpi: float | None, text: str) -> tuple[dict]:
    """The ``outputs`` of an ``ipywidgets.Output`` that shows ``fig`` as a PNG, ``text`` its plain form.

    The widget builders set an Output's ``outputs`` state instead of calling ``display()`` inside it: the
    picture then shows in JupyterLab and in the saved widget state of the static site, while the executed
    cell's own output stays the widget view alone, which nbval can compare from run to run.
    """
    data = {"image/png": base64.b64encode(_png(fig, dpi)).decode("ascii"), "text/plain": text}
    return ({"output_type": "display_data", "data": data, "metadata": {}},)
