"""Dataset samples drawn with their ground-truth boxes and labels (see :mod:`mistlib.viz` for conventions)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure

from mistlib.viz.draw import draw_boxes, draw_patches

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
    for ax, drawn, labels in zip(draw_patches(fig, images, ncols), all_boxes, all_labels, strict=True):
        if boxes and drawn is not None:
            draw_boxes(ax, drawn, labels=labels)
    if title:
        fig.suptitle(title)
    return fig
