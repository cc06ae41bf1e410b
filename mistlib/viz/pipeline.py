"""Eq. (1) of §3 drawn end to end, and why top-K stops gradients (§1, §6).

Figures take tensors of one image (no batch dim): ``image`` (C, H, W) in [0, 1], ``heatmap`` (S, H, W),
``keypoints`` (K, 3) as (x, y, s) in pixels, ``patches`` (K, C, P, P). See :mod:`mistlib.viz` for the shared
conventions. The diagrams of §2's localisers live in :mod:`mistlib.viz.localisers` and can be imported from
here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from mistlib.viz.draw import (
    check_keypoints,
    draw_centres,
    draw_heatmap,
    draw_image,
    draw_patches,
    draw_windows,
)
from mistlib.viz.localisers import (  # noqa: F401 (the §2 diagrams: chapter 2 imports them from here)
    cell_counts,
    ink_scores,
    select_proposals,
    sequential_diagram,
    show_channelwise,
    show_grid_assignment,
    show_heatmap_picks,
    sliding_proposals,
    transfer_diagram,
    weakly_supervised_diagram,
)

NO_GRAD_COLOR = "#d62728"  # what blocks gradients (red)
TRAINABLE_COLOR = "#c6dbef"  # boxes of trainable networks in the diagram of eq. (1) (light blue)
FIXED_COLOR = "#e5e5e5"  # boxes of operators without weights (light grey)


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
    check_keypoints(keypoints)
    fig = Figure(figsize=(2.8, 2.9), layout="constrained")
    ax = fig.add_subplot()
    draw_image(ax, image, title, title_size=9)
    tags = [str(k + 1) for k in range(len(keypoints))] if numbers else None
    draw_windows(ax, keypoints, width=1.2, tags=tags)
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
    check_keypoints(keypoints)
    fig = Figure(figsize=(7.2, 2.7), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [("input image", image), (f"the {len(keypoints)} windows found", image),
              ("reconstruction", reconstruction)]  # fmt: skip
    for index, (ax, (name, picture)) in enumerate(zip(axes, panels, strict=True)):
        draw_image(ax, picture, name, title_size=9)
        if index:
            draw_windows(ax, keypoints, width=1.2 if index == 1 else 0.6)
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
        check_keypoints(keypoints)
    count = len(patches)
    ncols = min(count, 9) if ncols is None else max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(size * ncols, (size + 0.35) * nrows + (0.3 if title else 0)), layout="constrained")
    titles = None
    if keypoints is not None:
        windows = keypoints.tolist()
        titles = [f"{k}: ({x:.0f}, {y:.0f})\ns = {s:.1f}" for k, (x, y, s) in enumerate(windows, start=1)]
    draw_patches(fig, patches, ncols, titles)
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
    check_keypoints(keypoints)
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
    draw_image(top[0], image, "$I$", title_size=9)
    for s in range(num_scales):
        name = f"$h_{s + 1}$" + (f", s = {scales[s]:g} px" if scales else "")
        draw_heatmap(top[1 + s], heatmap[s], gamma=0.5, title=name)
    draw_image(top[num_scales + 1], image, rf"$\mathcal{{E}}_K$: K = {count}", title_size=9)
    draw_windows(top[num_scales + 1], keypoints, width=1.2)
    out_ax = top[num_scales + 2]
    if classify:
        draw_image(out_ax, image, r"$\mathcal{T}_\tau$: classes", title_size=9)
        classes = [str(int(c)) for c in task_output.argmax(-1).tolist()]
        draw_windows(out_ax, keypoints, width=1.2, tags=classes)
    else:
        draw_image(out_ax, reconstruction, r"reconstruction $\Sigma_k\, \mathcal{S}^{-1}$", title_size=9)
    rows_of = [(parts[1], patches, r"$\mathcal{S}$: the K patches $P_k$")]
    if not classify:
        rows_of.append((parts[2], task_output, r"$\mathcal{T}_\tau$: the K decoded patches"))
    for part, tiles, name in rows_of:
        draw_patches(part, tiles, min(count, 12))
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
    check_keypoints(keypoints)
    fig = Figure(figsize=(2.5 * (3 + (sweep is not None)), 2.8), layout="constrained")
    axes = fig.subplots(1, 3 + (sweep is not None))
    draw_heatmap(axes[0], peak, title=r"$\max_s \mathbf{h}_s$ and its top K")
    draw_centres(axes[0], keypoints, marker="o", size=12, hollow=True, edge_width=1.4)
    for ax, grad, name in ((axes[1], grad_xy, "|∂(x, y)/∂h|"), (axes[2], grad_s, "|∂s/∂h|")):
        grad = grad.detach().abs().float().cpu()
        title = f"{name}: max {float(grad.max()):.3g}, non-zero at {int((grad > 0).sum())} px"
        draw_heatmap(ax, grad, cmap="viridis", title=title)
    if sweep is not None:
        values, positions = (v.detach().float().cpu() for v in sweep)
        axes[3].step(values.tolist(), positions.tolist(), where="post", color=NO_GRAD_COLOR)
        axes[3].set_xlabel("score of another pixel", fontsize=8)
        axes[3].set_ylabel("x of the first pick", fontsize=8)
        axes[3].set_title("position vs score: a staircase", fontsize=8)
        axes[3].tick_params(labelsize=7)
    return fig
