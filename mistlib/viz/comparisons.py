"""Side-by-side figures of §6: keypoints before and after, where each loss sends gradient, methods compared.

Pure functions that return a new :class:`~matplotlib.figure.Figure` (see :mod:`mistlib.viz`). Keypoints are
(x, y, s) in pixels: a window of side ``s`` centred on ``(x, y)``, x right, y down; the keypoints before a
change are blue and dashed, those after it red (as in :mod:`mistlib.viz.training`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from matplotlib.figure import Figure

from mistlib.viz.draw import (
    AFTER_COLOR,
    BEFORE_COLOR,
    WINDOW_COLOR,
    draw_boxes,
    draw_heatmap,
    draw_image,
    draw_keypoints,
    draw_moves,
)


def show_keypoint_moves(
    images: torch.Tensor,
    before: torch.Tensor,
    after: torch.Tensor,
    labels: tuple[str, str] = ("before", "after"),
    arrows: bool = True,
    size: float = 2.4,
) -> Figure:
    """Keypoints of the same images at two moments: ``before`` (blue, dashed), ``after`` (red), and arrows.

    The arrows join the keypoints in the order they are given (the k-th before to the k-th after), which is
    meaningful for stage 2; two separate top-K extractions are ordered by score, so pass ``arrows=False``.

    Args:
        images: (B, C, H, W) in [0, 1]; before, after: (B, K, 3) as (x, y, s).
        labels: legend names of the two sets.
        arrows: draw an arrow from each keypoint of ``before`` to the same one of ``after``.
        size: side of one image in inches.

    Returns: a Figure with B axes; each holds 2K rectangles (K dashed, K solid).

    Example:
        >>> images = torch.rand(2, 1, 16, 16)
        >>> before = torch.tensor([[[4.0, 4.0, 6.0]], [[8.0, 8.0, 6.0]]])
        >>> fig = show_keypoint_moves(images, before, before + torch.tensor([2.0, 0.0, 0.0]))
        >>> len(fig.axes), [len(ax.patches) for ax in fig.axes], len(fig.axes[0].texts)
        (2, [2, 2], 1)
    """
    if before.shape != after.shape or before.shape[0] != images.shape[0]:
        raise ValueError(
            f"before {tuple(before.shape)} and after {tuple(after.shape)} must both be (B, K, 3) with "
            f"B = {images.shape[0]} images"
        )
    count = images.shape[0]
    fig = Figure(figsize=(size * count, size + 0.5), layout="constrained")
    for index in range(count):
        ax = fig.add_subplot(1, count, index + 1)
        draw_image(ax, images[index])
        draw_keypoints(ax, before[index], BEFORE_COLOR, dashed=True)
        draw_keypoints(ax, after[index], AFTER_COLOR)
        if arrows:
            draw_moves(ax, before[index], after[index])
    fig.suptitle(f"{labels[0]} (blue, dashed) and {labels[1]} (red)", fontsize=10)
    return fig


def show_gradient_support(
    image: torch.Tensor, keypoints: torch.Tensor, gradients: Mapping[str, torch.Tensor], size: float = 2.6
) -> Figure:
    """Where a loss sends gradient into the heatmap: the image with its K picks, then ``|dL/dh|`` per loss.

    Each gradient map is reduced to its support: a pixel is bright when the gradient is non-zero at any scale,
    dark otherwise, and the panel's title counts the bright pixels.

    Args:
        image: (C, H, W); keypoints: (K, 3) as (x, y, s); gradients: name -> (S, H, W) or (H, W).
        size: side of one panel in inches.

    Returns: a Figure with ``1 + len(gradients)`` axes.

    Example:
        >>> grad = torch.zeros(2, 8, 8); grad[0, 3, 4] = 0.5
        >>> fig = show_gradient_support(torch.rand(1, 8, 8), torch.tensor([[4.0, 3.0, 4.0]]), {"top-K": grad})
        >>> len(fig.axes), fig.axes[1].get_title()
        (2, 'top-K: 1 of 64 pixels')
    """
    fig = Figure(figsize=(size * (1 + len(gradients)), size + 0.4), layout="constrained")
    ax = fig.add_subplot(1, 1 + len(gradients), 1)
    draw_image(ax, image, f"image, K = {keypoints.shape[0]} picks", title_size=9)
    draw_keypoints(ax, keypoints, BEFORE_COLOR)
    for index, (name, grad) in enumerate(gradients.items()):
        grad = grad.detach().abs().float().cpu()
        support = (grad.sum(0) if grad.dim() == 3 else grad) > 0  # (H, W)
        ax = fig.add_subplot(1, 1 + len(gradients), index + 2)
        title = f"{name}: {int(support.sum())} of {support.numel()} pixels"
        draw_heatmap(ax, support.float(), cmap="cividis", title=title, title_size=9)
    return fig


def compare_methods(
    images: torch.Tensor,
    results: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    boxes: torch.Tensor | None = None,
    size: float = 2.0,
) -> Figure:
    """Methods side by side on the same images: per method a row of detections (cyan windows, ground truth
    in orange) and a row of reconstructions.

    Args:
        images: (B, C, H, W) in [0, 1].
        results: method name -> (keypoints (B, K, 3), reconstruction (B, C, H, W)).
        boxes: optional ground-truth boxes (B, L, 4) as (x0, y0, x1, y1), drawn in orange under the picks
            (rows of zeros are padding and are skipped).
        size: side of one image in inches.

    Returns: a Figure with ``2 * len(results) * B`` axes, row by row (a method: detections, reconstructions).

    Example:
        >>> images = torch.rand(3, 1, 16, 16)
        >>> picks = torch.tensor([[4.0, 4.0, 6.0], [10.0, 10.0, 6.0]]).expand(3, 2, 3)
        >>> fig = compare_methods(images, {"a": (picks, images), "b": (picks, images * 0)})
        >>> len(fig.axes), len(fig.axes[0].patches), fig.axes[3].get_ylabel()
        (12, 2, 'a\\nreconstruction')
    """
    count = images.shape[0]
    rows = 2 * len(results)
    fig = Figure(figsize=(size * count + 0.4, size * rows), layout="constrained")
    for row, (name, (keypoints, reconstruction)) in enumerate(results.items()):
        for column in range(count):  # detections
            ax = fig.add_subplot(rows, count, 2 * row * count + column + 1)
            draw_image(ax, images[column])
            if boxes is not None:
                draw_boxes(ax, boxes[column][(boxes[column] != 0).any(-1)])  # (L_b, 4): padding skipped
            draw_keypoints(ax, keypoints[column], WINDOW_COLOR)
            if column == 0:
                ax.set_ylabel(f"{name}\ndetections", fontsize=9)
        for column in range(count):  # reconstructions
            ax = fig.add_subplot(rows, count, (2 * row + 1) * count + column + 1)
            draw_image(ax, reconstruction[column].clamp(0, 1))
            if column == 0:
                ax.set_ylabel(f"{name}\nreconstruction", fontsize=9)
    return fig


def show_lift_push(
    image: torch.Tensor, refined: torch.Tensor, descent: torch.Tensor, size: float = 2.8
) -> Figure:
    """Where a step on ``L_lift`` raises the heatmap (red) and where it lowers it (blue), next to the image.

    ``descent`` is ``-dL_lift/dh``; it is summed over scales and shown as ``sign(v) sqrt(|v| / max|v|)``,
    so the small, widespread pushes down stay visible next to the K large pushes up.

    Args:
        image: (C, H, W); refined: (K, 3) the keypoints x* that ``h_bar`` marks; descent: (S, H, W).
        size: side of one panel in inches.

    Returns: a Figure with 2 axes; the second's title counts the pixels pushed up and down.

    Example:
        >>> descent = -torch.full((2, 8, 8), 0.01); descent[:, 3, 4] = 0.5
        >>> fig = show_lift_push(torch.rand(1, 8, 8), torch.tensor([[4.0, 3.0, 4.0]]), descent)
        >>> fig.axes[1].get_title()
        'descent on L_lift: 1 px up, 63 down'
    """
    values = descent.detach().float().cpu().sum(0)  # (H, W)
    shown = values.sign() * (values.abs() / values.abs().max().clamp_min(1e-30)).sqrt()
    fig = Figure(figsize=(2 * size, size + 0.4), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    draw_image(ax, image, "image and x* (red)", title_size=9)
    draw_keypoints(ax, refined, AFTER_COLOR)
    ax = fig.add_subplot(1, 2, 2)
    title = f"descent on L_lift: {int((values > 0).sum())} px up, {int((values < 0).sum())} down"
    draw_heatmap(ax, shown, vmin=-1.0, vmax=1.0, cmap="RdBu_r", title=title, title_size=9)
    return fig
