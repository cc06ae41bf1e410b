"""The localisers of §2 as diagrams: grids, channel-wise heatmaps, one heatmap, sequential attention,
transfer and weak supervision, each drawn on a real image.

The ``*_diagram`` and ``show_*`` functions are schematic: they draw *how* a family of methods localises
instances on a real image, not the output of a trained model of that family. Figures take tensors of one
image (no batch dim): ``image`` (C, H, W) in [0, 1], ``keypoints`` or grid ``windows`` (K, 3) as (x, y, s) in
pixels, boxes (L, 4) as xyxy pixels. See :mod:`mistlib.viz` for the shared conventions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch

from mistlib.metrics import box_iou, keypoints_to_boxes
from mistlib.viz.draw import (
    BOX_COLOR,
    WINDOW_COLOR,
    check_keypoints,
    draw_boxes,
    draw_centres,
    draw_heatmap,
    draw_image,
    draw_label,
    draw_windows,
)

BROKEN_COLOR = "#d62728"  # where a method's assumption breaks (red)
GOOD_COLOR = "#2ca02c"  # an assumption that holds (green)
CHANNEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22")


# -- grids and heatmaps --------------------------------------------------------------------------------------
def cell_counts(windows: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """How many instance centres fall in each grid window (a centre on a shared edge counts once, first cell).

    Args:
        windows: (G, 3) as (x, y, s), e.g. :func:`mistlib.baselines.grid_keypoints`.
        centers: (L, 2) instance centres (x, y) in pixels.

    Returns: (G,) int64 counts; their sum is the number of centres inside some window.

    Example:
        >>> windows = torch.tensor([[5.0, 5, 10], [15.0, 5, 10]])
        >>> cell_counts(windows, torch.tensor([[2.0, 3], [7.0, 8], [12.0, 1]])).tolist()
        [2, 1]
    """
    check_keypoints(windows)
    boxes = keypoints_to_boxes(windows.float())  # (G, 4)
    c = centers.float()[:, None]  # (L, 1, 2)
    inside = (
        (c[..., 0] >= boxes[:, 0])
        & (c[..., 0] < boxes[:, 2])
        & (c[..., 1] >= boxes[:, 1])
        & (c[..., 1] < boxes[:, 3])
    )  # (L, G)
    first = inside & (inside.cumsum(1) == 1)  # (L, G): each centre in at most one window
    return first.sum(0)


def show_grid_assignment(image: torch.Tensor, windows: torch.Tensor, centers: torch.Tensor) -> Figure:
    """Grid-based localisation: every cell may explain one instance, the one whose centre it holds.

    Every cell is outlined thin in cyan; a cell holding exactly one centre gets a green frame inside it, a
    cell holding two or more (where a one-per-cell model must miss instances) a red, shaded one; centres are
    orange dots.

    Args:
        image: (C, H, W) in [0, 1].
        windows: (G, 3) the grid cells as (x, y, s).
        centers: (L, 2) instance centres (x, y).

    Returns: a Figure with one axes: G cyan outlines, then one frame per occupied cell (in cell order), and
    one Line2D of L dots; the title counts the crowded cells.

    Example:
        >>> windows = torch.tensor([[5.0, 5, 10], [15.0, 5, 10]])
        >>> fig = show_grid_assignment(torch.rand(1, 10, 20), windows, torch.tensor([[2.0, 3], [7.0, 8]]))
        >>> from matplotlib.colors import to_hex
        >>> [to_hex(p.get_edgecolor()) for p in fig.axes[0].patches], fig.axes[0].get_title()
        (['#17becf', '#17becf', '#d62728'], '1 of 2 cells hold 2+ centres')
    """
    counts = cell_counts(windows, centers)
    fig = Figure(figsize=(2.8, 3.0), layout="constrained")
    ax = fig.add_subplot()
    draw_image(ax, image)
    boxes = keypoints_to_boxes(windows.float())  # (G, 4)
    draw_boxes(ax, boxes, WINDOW_COLOR, width=0.6)
    inset = 0.04 * float(windows[:, 2].min())  # frames sit just inside their cell: neighbours don't overlap
    frames = boxes + torch.tensor([inset, inset, -inset, -inset])  # (G, 4)
    for frame, n in zip(frames, counts.tolist(), strict=True):
        if n:
            crowded = n >= 2
            draw_boxes(ax, frame[None], BROKEN_COLOR if crowded else GOOD_COLOR, width=1.6,
                       fill=0.2 if crowded else 0.0)  # fmt: skip
    draw_centres(ax, centers, BOX_COLOR, marker=".", size=7)
    ax.set_title(f"{int((counts >= 2).sum())} of {len(windows)} cells hold 2+ centres", fontsize=9)
    return fig


def show_channelwise(
    image: torch.Tensor, maps: torch.Tensor, keypoints: torch.Tensor, shown: int = 3
) -> Figure:
    """Channel-wise heatmaps: channel k is a spatial distribution whose mean (a soft argmax) is keypoint k.

    Args:
        image: (C, H, W) in [0, 1].
        maps: (K, H, W) the per-channel distributions, e.g. ``ChannelwiseMIST`` ``heatmap[0]``.
        keypoints: (K, 3) their expected positions (x, y, s).
        shown: how many of the K maps to draw next to the image.

    Returns: a Figure with ``1 + shown`` axes: the image with all K keypoints as coloured dots, then maps
    0..shown-1, each with its own keypoint.

    Example:
        >>> maps = torch.softmax(torch.rand(4, 64), -1).view(4, 8, 8)
        >>> fig = show_channelwise(torch.rand(1, 8, 8), maps, torch.rand(4, 3) * 8, shown=2)
        >>> len(fig.axes), len(fig.axes[0].lines), fig.axes[2].get_title()
        (3, 4, 'channel 2')
    """
    check_keypoints(keypoints)
    if maps.dim() != 3 or len(maps) != len(keypoints):
        raise ValueError(f"maps must be (K, H, W) with K = {len(keypoints)}, got {tuple(maps.shape)}")
    shown = max(0, min(shown, len(maps)))
    fig = Figure(figsize=(2.3 * (1 + shown), 2.6), layout="constrained")
    axes = fig.subplots(1, 1 + shown, squeeze=False)[0]
    draw_image(axes[0], image, f"{len(maps)} channels, one point each")
    for k, (x, y, _) in enumerate(keypoints.tolist()):
        color = CHANNEL_COLORS[k % len(CHANNEL_COLORS)]
        axes[0].plot([x], [y], "o", color=color, markersize=5, markeredgecolor="white", markeredgewidth=0.6)
        if k < shown:
            draw_heatmap(axes[1 + k], maps[k], gamma=0.5, title=f"channel {k + 1}")
            axes[1 + k].plot([x], [y], "+", color=color, markersize=10, markeredgewidth=2)
    return fig


def show_heatmap_picks(image: torch.Tensor, heatmap: torch.Tensor, keypoints: torch.Tensor) -> Figure:
    """MIST's localiser: ONE heatmap for all instances, whose K highest peaks become the K windows.

    Args:
        image: (C, H, W) in [0, 1].
        heatmap: (S, H, W), reduced by a max over scales for display, as eq. (3) does.
        keypoints: (K, 3) the picks of ``topk_extract``.

    Returns: a Figure with two axes: the heatmap with K circles, the image with K windows.

    Example:
        >>> image, heatmap = torch.rand(1, 20, 20), torch.rand(2, 20, 20)  # (C, H, W), (S, H, W)
        >>> fig = show_heatmap_picks(image, heatmap, torch.tensor([[5.0, 6, 8]]))
        >>> len(fig.axes), len(fig.axes[0].lines[0].get_xdata()), len(fig.axes[1].patches)
        (2, 1, 1)
    """
    check_keypoints(keypoints)
    fig = Figure(figsize=(4.8, 2.7), layout="constrained")
    axes = fig.subplots(1, 2)
    draw_heatmap(axes[0], heatmap.amax(0), gamma=0.5, title=r"one map: $\max_s \mathbf{h}_s$")
    draw_centres(axes[0], keypoints, marker="o", size=6, hollow=True, edge_width=1.4)
    draw_image(axes[1], image, f"its top {len(keypoints)} peaks as windows")
    draw_windows(axes[1], keypoints, width=1.2)
    return fig


# -- sequential attention and transfer -----------------------------------------------------------------------
def sequential_diagram(image: torch.Tensor, boxes: torch.Tensor, steps: int = 3) -> Figure:
    """Sequential attention (DRAW, AIR): one window per step, a recurrent state carried from step to step.

    Step t shows the window attended now (solid) and those of earlier steps (dashed grey); arrows between
    panels stand for the recurrent state ``z_t``. ``boxes`` are the windows in attention order (e.g.
    ground-truth boxes, as an ideal model would visit them).

    Args:
        image: (C, H, W) in [0, 1].
        boxes: (T, 4) xyxy windows, ``T >= steps``.
        steps: number of steps drawn.

    Returns: a Figure with ``steps`` axes; axes t holds one solid and t dashed rectangles, and ``steps - 1``
    ConnectionPatch arrows join the panels.

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 5, 5], [5.0, 5, 9, 9], [1.0, 6, 4, 9]])
        >>> fig = sequential_diagram(torch.rand(1, 10, 10), boxes, steps=3)
        >>> [len(ax.patches) for ax in fig.axes], len(fig.artists)
        ([1, 2, 3], 2)
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or len(boxes) < steps or steps < 1:
        raise ValueError(f"boxes must be (T, 4) with T >= steps = {steps}, got {tuple(boxes.shape)}")
    fig = Figure(figsize=(2.4 * steps, 2.8), layout="constrained")
    axes = fig.subplots(1, steps, squeeze=False)[0]
    for t, ax in enumerate(axes):
        draw_image(ax, image, f"step {t + 1}: attend, encode")
        draw_boxes(ax, boxes[:t], "#aaaaaa", style="--", width=0.9)
        draw_boxes(ax, boxes[t : t + 1], WINDOW_COLOR, width=1.8)
        if t:
            arrow = ConnectionPatch((1.02, 0.5), (-0.02, 0.5), coordsA=axes[t - 1].transAxes,
                                    coordsB=ax.transAxes, arrowstyle="->", linewidth=1.5)  # fmt: skip
            fig.add_artist(arrow)
            ax.text(-0.04, 0.56, f"$z_{t}$", transform=ax.transAxes, fontsize=9, ha="right")
    return fig


def transfer_diagram(
    source: torch.Tensor,
    source_box: torch.Tensor,
    label: int,
    target: torch.Tensor,
    target_boxes: torch.Tensor,
) -> Figure:
    """Knowledge transfer: learn to detect on labelled single instances, then apply it to crowded scenes.

    Args:
        source: (C, h, w) a single-instance training image (labelled: box and class are known).
        source_box: (4,) its xyxy box.
        label: its class.
        target: (C, H, W) a multi-instance image of the new domain, with no labels.
        target_boxes: (L, 4) xyxy boxes the transferred detector should find, drawn dashed.

    Returns: a Figure with two axes (1 and L rectangles) joined by one ConnectionPatch arrow.

    Example:
        >>> targets = torch.tensor([[0.0, 0, 5, 5], [9.0, 9, 14, 14]])  # (L, 4)
        >>> source, box = torch.rand(1, 8, 8), torch.tensor([1.0, 1, 7, 7])  # (C, h, w), (4,)
        >>> fig = transfer_diagram(source, box, 3, torch.rand(1, 20, 20), targets)
        >>> [len(ax.patches) for ax in fig.axes], fig.axes[0].texts[0].get_text()
        ([1, 2], '3')
    """
    fig = Figure(figsize=(5.0, 2.7), layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=[1, 1.6])
    draw_image(axes[0], source, "labelled source:\none instance")
    draw_boxes(axes[0], source_box[None], BOX_COLOR, width=1.5)
    draw_label(axes[0], float(source_box[0]) + 0.3, float(source_box[1]) + 0.3, str(int(label)), BOX_COLOR)
    draw_image(axes[1], target, "unlabelled target: many instances\n(dashed: what transfer must find)")
    draw_boxes(axes[1], target_boxes, WINDOW_COLOR, style="--", width=1.0)
    arrow = ConnectionPatch((1.04, 0.5), (-0.04, 0.5), coordsA=axes[0].transAxes, coordsB=axes[1].transAxes,
                            arrowstyle="->", linewidth=1.5)  # fmt: skip
    fig.add_artist(arrow)
    return fig


# -- weak supervision: fixed proposals, image-level labels ---------------------------------------------------
def sliding_proposals(image_size: int, sides: Sequence[int], stride: int) -> torch.Tensor:
    """Hand-made region proposals: square windows of each side slid over the image with a fixed stride.

    Returns: (N, 4) xyxy boxes inside ``[0, image_size]``, all of one side first, then the next.

    Example:
        >>> sliding_proposals(10, sides=(6,), stride=4).tolist()
        [[0.0, 0.0, 6.0, 6.0], [4.0, 0.0, 10.0, 6.0], [0.0, 4.0, 6.0, 10.0], [4.0, 4.0, 10.0, 10.0]]
    """
    boxes = []
    for side in sides:
        starts = torch.arange(0, image_size - side + 1, stride, dtype=torch.float32)
        y0, x0 = torch.meshgrid(starts, starts, indexing="ij")
        corner = torch.stack([x0, y0], -1).reshape(-1, 2)  # (n, 2)
        boxes.append(torch.cat([corner, corner + side], -1))  # (n, 4)
    return torch.cat(boxes)


def ink_scores(image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """A hand-tuned 'objectness': the mean intensity inside each box (integer xyxy pixels).

    Args: image (C, H, W); boxes (N, 4) xyxy with integer corners. Returns: (N,) scores.

    Example:
        >>> image = torch.zeros(1, 4, 4); image[0, :2, :2] = 1
        >>> ink_scores(image, torch.tensor([[0.0, 0, 2, 2], [0.0, 0, 4, 4]])).tolist()
        [1.0, 0.25]
    """
    gray = image.float().mean(0)  # (H, W)
    return torch.stack(
        [gray[int(y0) : int(y1), int(x0) : int(x1)].mean() for x0, y0, x1, y1 in boxes.tolist()]
    )


def select_proposals(boxes: torch.Tensor, scores: torch.Tensor, keep: int, iou: float = 0.3) -> torch.Tensor:
    """Greedy non-maximum suppression: the best-scoring boxes, skipping any that overlaps a kept one.

    Args: boxes (N, 4) xyxy; scores (N,); keep: at most this many; iou: overlap above which a box is skipped.
    Returns: (M,) int64 indices into ``boxes``, M <= keep, best first.

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 4, 4], [1.0, 0, 5, 4], [6.0, 6, 9, 9]])
        >>> select_proposals(boxes, torch.tensor([0.9, 0.8, 0.5]), keep=3).tolist()
        [0, 2]
    """
    overlap = box_iou(boxes.float(), boxes.float())  # (N, N)
    kept: list[int] = []
    for index in scores.argsort(descending=True, stable=True).tolist():
        if len(kept) == keep:
            break
        if all(float(overlap[index, j]) <= iou for j in kept):
            kept.append(index)
    return torch.tensor(kept, dtype=torch.int64)


def weakly_supervised_diagram(
    image: torch.Tensor, proposals: torch.Tensor, kept: torch.Tensor, labels: Sequence[int]
) -> Figure:
    """Weakly supervised detection: proposals from a fixed generator, a few kept, image-level labels only.

    Args:
        image: (C, H, W) in [0, 1].
        proposals: (N, 4) xyxy boxes from a hand-made generator (e.g. :func:`sliding_proposals`).
        kept: (M,) indices of the proposals a scorer keeps (e.g. :func:`select_proposals`).
        labels: the classes present in the image: the only supervision, with no positions.

    Returns: a Figure with two axes: all N proposals (thin grey), then the M kept ones; the title lists
    the image-level labels.

    Example:
        >>> proposals = sliding_proposals(12, sides=(6,), stride=3)
        >>> fig = weakly_supervised_diagram(torch.rand(1, 12, 12), proposals, torch.tensor([0, 8]), [7, 1])
        >>> [len(ax.patches) for ax in fig.axes], fig.get_suptitle()
        ([9, 2], 'image-level labels only: {1, 7}')
    """
    fig = Figure(figsize=(4.8, 2.9), layout="constrained")
    axes = fig.subplots(1, 2)
    draw_image(axes[0], image, f"{len(proposals)} proposals (fixed rule)")
    draw_boxes(axes[0], proposals, "#bbbbbb", width=0.4)
    draw_image(axes[1], image, f"the {len(kept)} best scored")
    draw_boxes(axes[1], proposals[kept], WINDOW_COLOR, width=1.3)
    classes = ", ".join(str(c) for c in sorted(set(labels)))
    fig.suptitle(f"image-level labels only: {{{classes}}}", fontsize=9)
    return fig
