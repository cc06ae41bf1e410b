"""Eq. (1) of §3 drawn end to end, why top-K stops gradients (§1, §6), and the localisers of §2 as diagrams.

Figures take tensors of one image (no batch dim): ``image`` (C, H, W) in [0, 1], ``heatmap`` (S, H, W),
``keypoints`` (K, 3) as (x, y, s) in pixels, ``patches`` (K, C, P, P), boxes (L, 4) as xyxy pixels. The
``*_diagram`` functions are schematic: they draw *how* a family of methods localises instances on a real
image, not the output of a trained model of that family. See :mod:`mistlib.viz` for the shared conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.colors import PowerNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch, FancyBboxPatch, Rectangle

from mistlib.metrics import box_iou, keypoints_to_boxes
from mistlib.viz.scenes import BOX_COLOR, _draw_image, _draw_windows

WINDOW_COLOR = "#17becf"  # windows chosen by a localiser (cyan, as in the other viz modules)
NO_GRAD_COLOR = "#d62728"  # what blocks gradients, or breaks a method's assumption (red)
GOOD_COLOR = "#2ca02c"  # an assumption that holds (green)
TRAINABLE_COLOR = "#c6dbef"  # boxes of trainable networks in the diagram of eq. (1) (light blue)
FIXED_COLOR = "#e5e5e5"  # boxes of operators without weights (light grey)
HEAT_CMAP = "magma"
CHANNEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22")


# -- small drawing helpers -----------------------------------------------------------------------------------
def _box(
    ax, box: Sequence[float], color: str, style: str = "-", width: float = 1.2, fill: float = 0.0
) -> None:
    """One xyxy rectangle on ``ax``; ``fill`` > 0 adds a translucent face of the same colour."""
    x0, y0, x1, y1 = (float(v) for v in box)
    face = to_rgba(color, fill) if fill else "none"
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, edgecolor=color, facecolor=face, linestyle=style,
                           linewidth=width))  # fmt: skip


def _tag(ax, x: float, y: float, text: str, color: str) -> None:
    """A small label with a coloured background at (x, y), clipped to the axes."""
    bbox = {"facecolor": color, "edgecolor": "none", "pad": 0.4, "alpha": 0.85}
    ax.text(x, y, text, fontsize=6, color="black", va="top", ha="left", bbox=bbox, clip_on=True)


def _windows(ax, keypoints: torch.Tensor, color: str = WINDOW_COLOR, tags: Sequence[str] | None = None,
             width: float = 1.2) -> None:  # fmt: skip
    """The square windows of keypoints (K, 3) on ``ax``, each with its tag at the top left when given."""
    _draw_windows(ax, keypoints, color, width=width, tags=tags)


def _circles(ax, keypoints: torch.Tensor, size: float) -> None:
    """The centres of keypoints (K, 3) as hollow cyan circles: one Line2D with K markers."""
    xs, ys = keypoints[:, 0].tolist(), keypoints[:, 1].tolist()
    ax.plot(xs, ys, "o", markersize=size, markerfacecolor="none", markeredgecolor=WINDOW_COLOR,
            markeredgewidth=1.4)  # fmt: skip


def _heat(ax, values: torch.Tensor, title: str | None = None, gamma: float = 0.5) -> None:
    """A non-negative (H, W) map on a power colour scale (0.5: square root, sparse peaks stay visible)."""
    values = values.detach().float().cpu()
    top = max(float(values.max()), 1e-12)
    norm = PowerNorm(gamma, vmin=0, vmax=top)
    ax.imshow(values.numpy(), cmap=HEAT_CMAP, norm=norm, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _check_keypoints(keypoints: torch.Tensor) -> None:
    if keypoints.dim() != 2 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (K, 3) as (x, y, s), got {tuple(keypoints.shape)}")


# -- eq. (1) end to end --------------------------------------------------------------------------------------
def show_windows(
    image: torch.Tensor, keypoints: torch.Tensor, numbers: bool = False, title: str | None = None
) -> Figure:
    """One image with the K square windows ``(x ± s/2, y ± s/2)`` of its keypoints.

    Args:
        image: (C, H, W) in [0, 1].
        keypoints: (K, 3) as (x, y, s) in pixels.
        numbers: tag each window with its rank 1..K (the order of the keypoints).
        title: optional axes title.

    Returns: a Figure with one axes holding K Rectangle patches (and K tags when ``numbers``).

    Example:
        >>> keypoints = torch.tensor([[10.0, 10, 8], [30, 20, 12]])  # (K, 3)
        >>> fig = show_windows(torch.rand(1, 40, 40), keypoints, numbers=True)
        >>> len(fig.axes[0].patches), [t.get_text() for t in fig.axes[0].texts]
        (2, ['1', '2'])
    """
    _check_keypoints(keypoints)
    fig = Figure(figsize=(2.8, 2.9), layout="constrained")
    ax = fig.add_subplot()
    _draw_image(ax, image)
    tags = [str(k + 1) for k in range(len(keypoints))] if numbers else None
    _windows(ax, keypoints, tags=tags)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def show_first_look(
    image: torch.Tensor, keypoints: torch.Tensor, reconstruction: torch.Tensor, title: str | None = None
) -> Figure:
    """A trained MIST at a glance: the input, the K windows it picked, and its reconstruction (eq. 6).

    Args:
        image: (C, H, W) in [0, 1].
        keypoints: (K, 3) as (x, y, s) in pixels.
        reconstruction: (C, H, W), the sum of the K decoded patches placed back at their windows.
        title: optional figure title.

    Returns: a Figure with three axes (input, input with K windows, reconstruction with K thin windows).

    Example:
        >>> fig = show_first_look(torch.rand(1, 40, 40), torch.tensor([[10.0, 10, 8]]), torch.rand(1, 40, 40))
        >>> [len(ax.patches) for ax in fig.axes], fig.axes[2].get_title()
        ([0, 1, 1], 'reconstruction')
    """
    _check_keypoints(keypoints)
    fig = Figure(figsize=(7.2, 2.7), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [("input image", image), (f"the {len(keypoints)} windows found", image),
              ("reconstruction", reconstruction)]  # fmt: skip
    for index, (ax, (name, picture)) in enumerate(zip(axes, panels, strict=True)):
        _draw_image(ax, picture)
        ax.set_title(name, fontsize=9)
        if index:
            _windows(ax, keypoints, width=1.2 if index == 1 else 0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def show_patches(
    patches: torch.Tensor,
    keypoints: torch.Tensor | None = None,
    ncols: int | None = None,
    size: float = 0.95,
    title: str | None = None,
) -> Figure:
    """The K patches of one image side by side, each titled with its window when keypoints are given.

    Args:
        patches: (K, C, P, P) in [0, 1] (values outside are clipped for display).
        keypoints: (K, 3) as (x, y, s), or None.
        ncols: columns of the grid (default: up to 9).
        size: side of one patch in inches.
        title: optional figure title.

    Returns: a Figure with exactly K axes, one image each, in the order of the patches.

    Example:
        >>> fig = show_patches(torch.rand(4, 1, 8, 8), torch.tensor([[3.0, 4, 8]] * 4), ncols=2)
        >>> len(fig.axes), fig.axes[0].get_title(), fig.axes[0].images[0].get_array().shape
        (4, '1: (3, 4)\\ns = 8.0', (8, 8))
    """
    if patches.dim() != 4:
        raise ValueError(f"patches must have shape (K, C, P, P), got {tuple(patches.shape)}")
    if keypoints is not None:
        _check_keypoints(keypoints)
    count = len(patches)
    ncols = min(count, 9) if ncols is None else max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(size * ncols, (size + 0.35) * nrows + (0.3 if title else 0)), layout="constrained")
    for index in range(count):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        _draw_image(ax, patches[index])
        if keypoints is not None:
            x, y, s = keypoints[index].tolist()
            ax.set_title(f"{index + 1}: ({x:.0f}, {y:.0f})\ns = {s:.1f}", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def show_pipeline(
    image: torch.Tensor,
    heatmap: torch.Tensor,
    keypoints: torch.Tensor,
    patches: torch.Tensor,
    task_output: torch.Tensor,
    reconstruction: torch.Tensor | None = None,
    scales: Sequence[float] | torch.Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """Eq. (1) on one image, every intermediate shown: ``I -> h = H(I) -> x = E_K(h) -> P = S(I, x) -> T(P)``.

    Top row: the image, the S heatmap channels ``h_s``, the K windows of ``E_K``, and the task output (the
    reconstruction of eq. 6, or for a classifier the image with each window tagged by its predicted class).
    Second row: the K patches ``S(I, x_k)``. Third row (auto-encoder only): the K decoded patches.

    Args:
        image: (C, H, W) in [0, 1].
        heatmap: (S, H, W) non-negative, e.g. ``MISTOutput.heatmap[0]``.
        keypoints: (K, 3) as (x, y, s) in pixels.
        patches: (K, C, P, P) sampled patches.
        task_output: (K, C, P, P) decoded patches, or (K, classes) logits.
        reconstruction: (C, H, W) for the auto-encoder, None for a classifier.
        scales: (S,) patch sides in pixels, used in the heatmap titles, or None.
        title: optional figure title.

    Returns: a Figure with ``S + 3 + K`` axes (classifier) or ``S + 3 + 2K`` (auto-encoder), in the order
    image, ``h_1 .. h_S``, windows, output, patches, decoded patches; the windows axes holds K rectangles.

    Example:
        >>> K, S = 2, 3
        >>> image, heatmap, keypoints = torch.rand(1, 32, 32), torch.rand(S, 32, 32), torch.rand(K, 3) * 9
        >>> fig = show_pipeline(image, heatmap, keypoints, torch.rand(K, 1, 8, 8), torch.rand(K, 1, 8, 8),
        ...                     reconstruction=torch.rand(1, 32, 32))
        >>> len(fig.axes), len(fig.axes[S + 1].patches)
        (10, 2)
        >>> logits = torch.tensor([[0.0, 3.0], [2.0, 1.0]])  # (K, classes): predicted classes 1 and 0
        >>> fig = show_pipeline(image, heatmap, keypoints, torch.rand(K, 1, 8, 8), logits)
        >>> len(fig.axes), [t.get_text() for t in fig.axes[S + 2].texts]
        (8, ['1', '0'])
    """
    _check_keypoints(keypoints)
    if heatmap.dim() != 3:
        raise ValueError(f"heatmap must have shape (S, H, W), got {tuple(heatmap.shape)}")
    count, num_scales = len(keypoints), len(heatmap)
    if len(patches) != count or len(task_output) != count:
        raise ValueError(f"patches and task_output must hold K = {count} rows, got {len(patches)} and "
                         f"{len(task_output)}")  # fmt: skip
    classify = reconstruction is None
    if classify and task_output.dim() != 2:
        raise ValueError(f"without a reconstruction task_output must be logits (K, classes), got "
                         f"{tuple(task_output.shape)}")  # fmt: skip
    scales = [float(s) for s in scales] if scales is not None else None
    top_count = num_scales + 3
    rows = 2 if classify else 3
    width = max(1.75 * top_count, 0.8 * min(count, 12))
    fig = Figure(figsize=(width, 2.1 + 1.0 * (rows - 1) * math.ceil(count / 12)), layout="constrained")
    parts = fig.subfigures(rows, 1, height_ratios=[2.1] + [1.0] * (rows - 1))
    top = parts[0].subplots(1, top_count)
    _draw_image(top[0], image)
    top[0].set_title("$I$", fontsize=9)
    for s in range(num_scales):
        name = f"$h_{s + 1}$" + (f", s = {scales[s]:g} px" if scales else "")
        _heat(top[1 + s], heatmap[s], name)
    _draw_image(top[num_scales + 1], image)
    _windows(top[num_scales + 1], keypoints)
    top[num_scales + 1].set_title(rf"$\mathcal{{E}}_K$: K = {count}", fontsize=9)
    out_ax = top[num_scales + 2]
    if classify:
        _draw_image(out_ax, image)
        _windows(out_ax, keypoints, tags=[str(int(c)) for c in task_output.argmax(-1).tolist()])
        out_ax.set_title(r"$\mathcal{T}_\tau$: classes", fontsize=9)
    else:
        _draw_image(out_ax, reconstruction)
        out_ax.set_title(r"reconstruction $\Sigma_k\, \mathcal{S}^{-1}$", fontsize=9)
    rows_of = [(parts[1], patches, r"$\mathcal{S}$: the K patches $P_k$")]
    if not classify:
        rows_of.append((parts[2], task_output, r"$\mathcal{T}_\tau$: the K decoded patches"))
    for part, tiles, name in rows_of:
        ncols = min(count, 12)
        for index in range(count):
            ax = part.add_subplot(math.ceil(count / ncols), ncols, index + 1)
            _draw_image(ax, tiles[index])
        part.suptitle(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pipeline_diagram(gradient: bool = True) -> Figure:
    """Eq. (1) as a block diagram: ``I -> H_eta -> h -> E_K -> {x_k} -> S -> {P_k} -> T_tau -> L_task``.

    Operators are boxes: trainable networks light blue, ``S`` grey, ``E_K`` with a red edge. With
    ``gradient`` a dashed arrow shows back-propagation from ``L_task`` reaching ``T_tau`` and ``S`` but
    stopped at ``E_K`` (a red cross): the top-K positions pass no gradient to ``h``, hence none to ``eta``.

    Returns: a Figure with one axes holding four FancyBboxPatch operators and the data between them as text.

    Example:
        >>> fig = pipeline_diagram()
        >>> ax = fig.axes[0]
        >>> from matplotlib.colors import to_hex
        >>> [to_hex(p.get_edgecolor()) for p in ax.patches if isinstance(p, FancyBboxPatch)]  # H, E_K, S, T
        ['#000000', '#d62728', '#000000', '#000000']
    """
    items = [("$I$", None), (r"$\mathcal{H}_\eta$", TRAINABLE_COLOR), (r"$\mathbf{h}$", None),
             (r"$\mathcal{E}_K$", FIXED_COLOR), (r"$\{\mathbf{x}_k\}$", None),
             (r"$\mathcal{S}$", FIXED_COLOR), (r"$\{\mathbf{P}_k\}$", None),
             (r"$\mathcal{T}_\tau$", TRAINABLE_COLOR), (r"$\mathcal{L}_\mathrm{task}$", None)]  # fmt: skip
    fig = Figure(figsize=(8.0, 1.9 if gradient else 1.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(-0.6, len(items) - 0.4)
    ax.set_ylim(-1.25 if gradient else -0.5, 0.6)
    ax.set_axis_off()
    ax.set_aspect("equal")
    for x, (text, face) in enumerate(items):
        ax.text(x, 0, text, ha="center", va="center", fontsize=13)
        if face is not None:
            edge = NO_GRAD_COLOR if text == r"$\mathcal{E}_K$" else "black"
            ax.add_patch(FancyBboxPatch((x - 0.38, -0.3), 0.76, 0.6, boxstyle="round,pad=0.04",
                                        facecolor=face, edgecolor=edge, linewidth=1.5, zorder=0))  # fmt: skip
        if x:
            ax.annotate("", xy=(x - 0.42, 0), xytext=(x - 0.58, 0), arrowprops={"arrowstyle": "->", "lw": 1})
    ax.text(3, 0.42, "top-K: integer positions", ha="center", fontsize=7, color=NO_GRAD_COLOR)
    if gradient:
        ax.annotate(
            "",
            xy=(3.55, -0.75),
            xytext=(8, -0.75),
            arrowprops={"arrowstyle": "->", "lw": 1.2, "linestyle": "--", "color": "#555555"},
        )
        ax.text(5.8, -1.05, r"gradient of $\mathcal{L}_\mathrm{task}$", ha="center", fontsize=8)
        ax.plot([3.3], [-0.75], marker="x", markersize=11, color=NO_GRAD_COLOR, markeredgewidth=2.5)
        ax.text(1.6, -1.05, r"nothing reaches $\mathbf{h}$ or $\eta$", ha="center", fontsize=8,
                color=NO_GRAD_COLOR)  # fmt: skip
    return fig


# -- §1 / §6: the top-K selection passes no gradient to the positions ----------------------------------------
def show_topk_gradient(
    peak: torch.Tensor,
    keypoints: torch.Tensor,
    grad_xy: torch.Tensor,
    grad_s: torch.Tensor,
    sweep: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Figure:
    """What back-propagation sees through ``E_K``: the heatmap and its picks, then two gradient maps.

    Args:
        peak: (H, W) the heatmap after the max over scales (what eq. 3 ranks).
        keypoints: (K, 3) the picks (x, y, s), marked on the first panel.
        grad_xy: (H, W) ``|d (sum of x_k + y_k) / d h|`` summed over scales: zero when positions pass nothing.
        grad_s: (H, W) ``|d (sum of s_k) / d h|`` summed over scales: non-zero at most at the K picks.
        sweep: optional ``(values (N,), positions (N,))``: the x of the first pick as one other pixel's
            score is raised through ``values``; drawn as a fourth panel, a staircase.

    Returns: a Figure with 3 axes (4 with ``sweep``); each gradient panel's title gives its largest value
    and its number of non-zero pixels.

    Example:
        >>> peak, grad = torch.rand(6, 6), torch.zeros(6, 6)
        >>> fig = show_topk_gradient(peak, torch.tensor([[1.0, 2, 10]]), grad, grad)
        >>> len(fig.axes), fig.axes[1].get_title()
        (3, '|∂(x, y)/∂h|: max 0, non-zero at 0 px')
    """
    _check_keypoints(keypoints)
    fig = Figure(figsize=(2.5 * (3 + (sweep is not None)), 2.8), layout="constrained")
    axes = fig.subplots(1, 3 + (sweep is not None))
    _heat(axes[0], peak, r"$\max_s \mathbf{h}_s$ and its top K", gamma=1.0)
    _circles(axes[0], keypoints, size=12)
    for ax, grad, name in ((axes[1], grad_xy, "|∂(x, y)/∂h|"), (axes[2], grad_s, "|∂s/∂h|")):
        grad = grad.detach().abs().float().cpu()
        top = float(grad.max())
        ax.imshow(grad.numpy(), cmap="viridis", vmin=0, vmax=top if top > 0 else 1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name}: max {top:.3g}, non-zero at {int((grad > 0).sum())} px", fontsize=8)
    if sweep is not None:
        values, positions = (v.detach().float().cpu() for v in sweep)
        axes[3].step(values.tolist(), positions.tolist(), where="post", color=NO_GRAD_COLOR)
        axes[3].set_xlabel("score of another pixel", fontsize=8)
        axes[3].set_ylabel("x of the first pick", fontsize=8)
        axes[3].set_title("position vs score: a staircase", fontsize=8)
        axes[3].tick_params(labelsize=7)
    return fig


# -- §2: how each family localises instances -----------------------------------------------------------------
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
    _check_keypoints(windows)
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
    _draw_image(ax, image)
    boxes = keypoints_to_boxes(windows.float())  # (G, 4)
    for box in boxes.tolist():
        _box(ax, box, WINDOW_COLOR, width=0.6)
    inset = 0.04 * float(
        windows[:, 2].min()
    )  # frames sit just inside their cell, so neighbours don't overlap
    for box, n in zip(
        (boxes + torch.tensor([inset, inset, -inset, -inset])).tolist(), counts.tolist(), strict=True
    ):
        if n:
            _box(ax, box, NO_GRAD_COLOR if n >= 2 else GOOD_COLOR, width=1.6, fill=0.2 if n >= 2 else 0.0)
    ax.plot(centers[:, 0].tolist(), centers[:, 1].tolist(), ".", color=BOX_COLOR, markersize=7)
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
    _check_keypoints(keypoints)
    if maps.dim() != 3 or len(maps) != len(keypoints):
        raise ValueError(f"maps must be (K, H, W) with K = {len(keypoints)}, got {tuple(maps.shape)}")
    shown = max(0, min(shown, len(maps)))
    fig = Figure(figsize=(2.3 * (1 + shown), 2.6), layout="constrained")
    axes = fig.subplots(1, 1 + shown, squeeze=False)[0]
    _draw_image(axes[0], image)
    axes[0].set_title(f"{len(maps)} channels, one point each", fontsize=8)
    for k, (x, y, _) in enumerate(keypoints.tolist()):
        color = CHANNEL_COLORS[k % len(CHANNEL_COLORS)]
        axes[0].plot([x], [y], "o", color=color, markersize=5, markeredgecolor="white", markeredgewidth=0.6)
        if k < shown:
            _heat(axes[1 + k], maps[k], f"channel {k + 1}")
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
    _check_keypoints(keypoints)
    fig = Figure(figsize=(4.8, 2.7), layout="constrained")
    axes = fig.subplots(1, 2)
    _heat(axes[0], heatmap.amax(0), r"one map: $\max_s \mathbf{h}_s$")
    _circles(axes[0], keypoints, size=6)
    _draw_image(axes[1], image)
    _windows(axes[1], keypoints)
    axes[1].set_title(f"its top {len(keypoints)} peaks as windows", fontsize=8)
    return fig


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
        _draw_image(ax, image)
        for earlier in boxes[:t].tolist():
            _box(ax, earlier, "#aaaaaa", style="--", width=0.9)
        _box(ax, boxes[t].tolist(), WINDOW_COLOR, width=1.8)
        ax.set_title(f"step {t + 1}: attend, encode", fontsize=8)
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
    _draw_image(axes[0], source)
    _box(axes[0], source_box.tolist(), BOX_COLOR, width=1.5)
    _tag(axes[0], float(source_box[0]) + 0.3, float(source_box[1]) + 0.3, str(int(label)), BOX_COLOR)
    axes[0].set_title("labelled source:\none instance", fontsize=8)
    _draw_image(axes[1], target)
    for box in target_boxes.tolist():
        _box(axes[1], box, WINDOW_COLOR, style="--", width=1.0)
    axes[1].set_title("unlabelled target: many instances\n(dashed: what transfer must find)", fontsize=8)
    arrow = ConnectionPatch((1.04, 0.5), (-0.04, 0.5), coordsA=axes[0].transAxes, coordsB=axes[1].transAxes,
                            arrowstyle="->", linewidth=1.5)  # fmt: skip
    fig.add_artist(arrow)
    return fig


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
    _draw_image(axes[0], image)
    for box in proposals.tolist():
        _box(axes[0], box, "#bbbbbb", width=0.4)
    axes[0].set_title(f"{len(proposals)} proposals (fixed rule)", fontsize=8)
    _draw_image(axes[1], image)
    for index in kept.tolist():
        _box(axes[1], proposals[index].tolist(), WINDOW_COLOR, width=1.3)
    axes[1].set_title(f"the {len(kept)} best scored", fontsize=8)
    classes = ", ".join(str(c) for c in sorted(set(labels)))
    fig.suptitle(f"image-level labels only: {{{classes}}}", fontsize=9)
    return fig
