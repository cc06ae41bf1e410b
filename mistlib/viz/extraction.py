"""§4's extraction drawn: top-K (eq. 2-4), why eq. (2) must follow eq. (3), and the sampler ``S`` (eq. 5).

Figures take tensors of one image (no batch dim): ``image`` (C, H, W), ``heatmap`` (S, H, W), ``scales``
(S,), ``keypoints`` (K, 3) as (x, y, s) and ``patches`` (K, C, P, P). :func:`topk_widget` takes a MIST model
and runs its heatmap network. The figures of the heatmap itself (scale space, local softmax) are in
:mod:`mistlib.viz.heatmaps`, and can be imported from here too. See :mod:`mistlib.viz` for the conventions
shared by every figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from mistlib.extract import MOMENT_EPS, topk_extract
from mistlib.model import MIST
from mistlib.sampler import sample_patches
from mistlib.viz.draw import draw_centres, draw_heatmap, draw_image, draw_patches, draw_windows
from mistlib.viz.heatmaps import (  # noqa: F401 (chapter 4 imports them from here)
    SOFTMAX_GAMMA,
    heatmap_net_at,
    scale_space,
    scales_widget,
    show_scale_maps,
    show_scale_space,
    show_soft_nms,
)
from mistlib.viz.widgets import figure_widget

OTHER_COLOR = "#d62728"  # picks of a rejected alternative (red)


# -- computing what the figures show -------------------------------------------------------------------------
def sample_points(keypoint: torch.Tensor, size: int) -> torch.Tensor:
    """Where patch pixel ``(i, j)`` samples the image, eq. (5): ``(x - s/2 + (j + 1/2) s / P, ...)``.

    Args:
        keypoint: (3,) as (x, y, s) in pixels.
        size: P, the patch side.

    Returns: (P, P, 2) image coordinates (x, y) in pixels, row ``i``, column ``j``.

    Example:
        >>> sample_points(torch.tensor([2.5, 1.5, 2.0]), 2)[..., 0]  # x of the 2x2 sample points
        tensor([[2., 3.],
                [2., 3.]])
    """
    x, y, s = (float(v) for v in keypoint)
    offsets = (torch.arange(size, dtype=torch.float32) + 0.5) * s / size - s / 2  # (P,)
    rows, cols = torch.meshgrid(y + offsets, x + offsets, indexing="ij")  # (P, P) each
    return torch.stack([cols, rows], dim=-1)  # (P, P, 2)


# -- figures -------------------------------------------------------------------------------------------------
def show_topk(
    image: torch.Tensor, keypoints: torch.Tensor, patches: torch.Tensor, title: str | None = None
) -> Figure:
    """The K windows chosen by ``E_K`` on the image, numbered by rank, and the K patches ``S`` cut out.

    Args:
        image: (C, H, W) in [0, 1].
        keypoints: (K, 3) as (x, y, s) in pixels, in rank order.
        patches: (K, C, P, P) the sampled patches, same order.
        title: optional figure title.

    Returns: a Figure whose ``axes[0]`` is the image with K Rectangle patches and K rank labels, followed by K
    axes, one patch each, titled with its rank and scale.

    Example:
        >>> kp = torch.tensor([[10.0, 10.0, 8.0], [25.0, 20.0, 12.0], [5.0, 30.0, 10.0]])
        >>> fig = show_topk(torch.rand(1, 40, 40), kp, torch.rand(3, 1, 16, 16), title="K = 3")
        >>> len(fig.axes), len(fig.axes[0].patches), fig.axes[2].get_title()
        (4, 3, '2: s=12.0')
    """
    k = len(keypoints)
    if patches.dim() != 4 or len(patches) != k:
        raise ValueError(f"patches must have shape (K={k}, C, P, P), got {tuple(patches.shape)}")
    ncols = min(k, 5)
    nrows = math.ceil(k / ncols)
    fig = Figure(figsize=(3.3 + 1.05 * ncols, max(3.4, 1.2 * nrows + 0.3)), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[3.3, 1.05 * ncols])
    ax = left.subplots()
    draw_image(ax, image, f"{k} windows chosen by E_K")
    draw_windows(ax, keypoints, tags=[str(rank) for rank in range(1, k + 1)])
    titles = [f"{rank}: s={s:.1f}" for rank, s in enumerate(keypoints[:, 2].tolist(), start=1)]
    draw_patches(right, patches, ncols, titles, title_size=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def show_normalisation(heatmap: torch.Tensor, scales: torch.Tensor | Sequence[float], k: int) -> Figure:
    """Why eq. (2) must not come before eq. (3): top-K of ``max_s h`` against top-K of ``max_s`` of eq. (2).

    Args:
        heatmap: (S, H, W) non-negative, e.g. a ``HeatmapNet`` output for one image.
        scales: (S,) patch sides in pixels.
        k: K, how many picks to mark on each map.

    Returns: a Figure of 3 axes: ``max_s h`` with its K picks (``topk_extract``, circles), ``max_s`` of the
    normalised heatmap ``h_s / (sum_s h_s + 1e-6)`` with *its* K picks (crosses), and a histogram of both
    maps' values, log scale, with the bound ``1/S`` marked.

    Example:
        >>> h = torch.zeros(2, 12, 12) + 1e-3; h[0, 3, 3] = 0.9; h[1, 8, 8] = 0.5
        >>> fig = show_normalisation(h, [10.0, 20.0], k=2)
        >>> len(fig.axes), len(fig.axes[0].lines[0].get_xdata()), len(fig.axes[1].lines[0].get_xdata())
        (3, 2, 2)
    """
    if heatmap.dim() != 3 or len(scales) != heatmap.shape[0]:
        raise ValueError(f"heatmap must have shape (S={len(scales)}, H, W), got {tuple(heatmap.shape)}")
    h = heatmap.detach().float().cpu()
    scale_tensor = torch.as_tensor([float(s) for s in scales])
    width = h.shape[-1]
    raw_max = h.amax(0)  # (H, W), what eq. (3) reads
    normalised = h / (h.sum(0, keepdim=True) + MOMENT_EPS)  # (S, H, W), eq. (2) applied first
    norm_max = normalised.amax(0)  # (H, W)
    picks = topk_extract(h[None], k, scale_tensor)[0]  # (K, 3)
    other = norm_max.flatten().topk(k).indices  # (K,)
    fig = Figure(figsize=(8.6, 2.9), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    top = max(float(raw_max.max()), 1e-12)
    draw_heatmap(axes[0], raw_max, 0.0, top, SOFTMAX_GAMMA, title="max_s h: eq. (3) as we do it")
    draw_centres(axes[0], picks, marker="o", size=6, hollow=True)
    draw_heatmap(axes[1], norm_max, 0.0, 1.0, title="max_s of eq. (2) first")
    draw_centres(axes[1], torch.stack([other % width, other // width], -1), OTHER_COLOR, marker="x", size=6)
    bins = torch.logspace(-8, 0, 41).numpy()
    axes[2].hist(
        raw_max.clamp(min=1e-8).flatten().numpy(), bins=bins, color="0.5", alpha=0.7, label="max_s h"
    )
    axes[2].hist(norm_max.clamp(min=1e-8).flatten().numpy(), bins=bins, color=OTHER_COLOR, alpha=0.6,
                 label="max_s of eq. (2)")  # fmt: skip
    axes[2].axvline(1 / h.shape[0], color="black", linestyle="--", linewidth=0.8, label="1/S")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("value", fontsize=8)
    axes[2].set_ylabel("pixels", fontsize=8)
    axes[2].tick_params(labelsize=7)
    axes[2].legend(fontsize=7)
    return fig


def show_pick_sides(
    named: dict[str, tuple[torch.Tensor, torch.Tensor]],
    scales: Sequence[float] | None = None,
    bin_px: float = 1.0,
) -> Figure:
    """Eq. (4)'s scales against the instances' sizes: mean pick side per bin of true side, one line per model.

    Args:
        named: name -> (picked (M,), true (M,)) sides in pixels, as ``evaluation.pick_sides`` returns them.
        scales: marked as horizontal lines (one model's scale space), if given.
        bin_px: width of the true-side bins.

    Returns: a Figure of one axis: for each model the mean picked side (points joined by a line) over the
    centre of each true-side bin that holds at least 10 picks, and the diagonal where a pick's side equals
    its instance's.

    Example:
        >>> true = torch.arange(16.0, 24.0).repeat(10)  # 8 bins of 10 picks
        >>> fig = show_pick_sides({"exact": (true, true), "flat": (torch.full_like(true, 19.0), true)})
        >>> [len(line.get_xdata()) for line in fig.axes[0].lines]  # two models, then the diagonal
        [8, 8, 2]
    """
    fig = Figure(figsize=(4.6, 3.4), layout="constrained")
    ax = fig.subplots()
    low, high = math.inf, -math.inf
    for name, (picked, true) in named.items():
        if picked.shape != true.shape or picked.dim() != 1:
            raise ValueError(
                f"{name}: picked and true must be two (M,) tensors, got {picked.shape}, {true.shape}"
            )
        bins = torch.floor(true / bin_px)  # (M,) bin index of each pick
        centres, means = [], []
        for index in bins.unique().tolist():
            inside = bins == index
            if int(inside.sum()) >= 10:
                centres.append((index + 0.5) * bin_px)
                means.append(float(picked[inside].mean()))
        ax.plot(centres, means, marker="o", markersize=3, label=name)
        low, high = min([low, *centres]), max([high, *centres])
    ax.plot(
        [low, high], [low, high], color="black", linestyle="--", linewidth=0.8, label="pick side = true side"
    )
    for s in scales or ():
        ax.axhline(float(s), color="0.6", linewidth=0.6)
    ax.set_xlabel("true side of the instance (px)", fontsize=8)
    ax.set_ylabel("mean side of its pick (px)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return fig


def show_sampler(image: torch.Tensor, keypoint: torch.Tensor, size: int = 8, margin: int = 4) -> Figure:
    """The bilinear sampler ``S`` of eq. (5) on one window: its P x P sample points, and the patch they give.

    Args:
        image: (C, H, W) in [0, 1].
        keypoint: (3,) as (x, y, s) in pixels.
        size: P, the patch side (small values make the sample points visible).
        margin: pixels of context shown around the window.

    Returns: a Figure of 2 axes: the image zoomed on the window with the window and the P x P sample points
    (one ``Line2D`` of P * P markers), and the patch ``sample_patches(image, keypoint, size)``.

    Example:
        >>> fig = show_sampler(torch.rand(1, 30, 30), torch.tensor([12.0, 15.0, 9.0]), size=4)
        >>> len(fig.axes), len(fig.axes[0].lines[0].get_xdata()), fig.axes[1].images[0].get_array().shape
        (2, 16, (4, 4))
    """
    points = sample_points(keypoint, size)  # (P, P, 2)
    patch = sample_patches(image[None].float(), keypoint.float().view(1, 1, 3), size=size)[0, 0]  # (C, P, P)
    x, y, s = (float(v) for v in keypoint)
    fig = Figure(figsize=(6.0, 3.1), layout="constrained")
    axes = fig.subplots(1, 2)
    draw_image(axes[0], image, f"window ({x:g}, {y:g}, {s:.1f}): {size}x{size} sample points")
    axes[0].set_xlim(x - s / 2 - margin, x + s / 2 + margin)
    axes[0].set_ylim(y + s / 2 + margin, y - s / 2 - margin)
    draw_windows(axes[0], keypoint[None])
    draw_centres(axes[0], points.reshape(-1, 2), OTHER_COLOR, marker=".", size=3)
    draw_image(axes[1], patch, f"patch S(I, x), P = {size}")
    return fig


# -- the widget ----------------------------------------------------------------------------------------------
def topk_widget(model: MIST, image: torch.Tensor, k: int | None = None, max_k: int = 20):
    """Scrub K from 1 to ``max_k`` and watch the windows and patches of :func:`show_topk` follow.

    The heatmap is computed once; each K re-runs only ``topk_extract`` (with the model's ``nms``) and
    ``sample_patches``.

    Args:
        model: a MIST model (its heatmap network, scales and patch size are used).
        image: (C, H, W) in [0, 1].
        k: initial K (the model's K when None).
        max_k: largest K offered.

    Returns: a :func:`~mistlib.viz.widgets.figure_widget` whose ``children[0]`` is the ``SelectionSlider``
    labelled "K" (1 to ``max_k``) and ``children[1]`` (``.picture``) the figure of every K, precomputed, so
    that the slider works on a static page too; ``.result`` holds the current Figure.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(image_size=32, k=3, scales=(8.0, 12.0), reference_size=8.0,
        ...                         heatmap_channels=4, heatmap_blocks=1, task_width=2)).eval()
        >>> widget = topk_widget(model, torch.rand(1, 32, 32))
        >>> widget.children[0].description, len(widget.result.axes[0].patches)
        ('K', 3)
        >>> widget.children[0].value = 7
        >>> len(widget.result.axes[0].patches), len(widget.result.axes)
        (7, 8)
    """
    import ipywidgets as widgets

    device = next(model.parameters()).device
    with torch.no_grad():
        heatmap = model.heatmap_net(image[None].float().to(device))  # (1, S, H, W), computed once

    def draw(k: int) -> Figure:
        with torch.no_grad():
            keypoints = topk_extract(heatmap, k, model.scales, model.config.nms)  # (1, K, 3)
            patches = sample_patches(image[None].float().to(device), keypoints, model.config.patch_size)
        return show_topk(image, keypoints[0].cpu(), patches[0].cpu(), title=f"K = {k}")

    start = model.config.k if k is None else k
    slider = widgets.SelectionSlider(options=list(range(1, max_k + 1)), value=start, description="K")
    return figure_widget(draw, k=slider)
