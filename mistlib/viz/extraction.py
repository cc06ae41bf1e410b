"""§4 drawn: per-scale heatmaps, the local softmax as soft NMS, top-K extraction (eq. 2-4), and the sampler.

Figures take tensors of one image (no batch dim): ``image`` (C, H, W), raw ``scores`` and softmaxed
``heatmap`` (S, H, W), ``scales`` (S,), ``keypoints`` (K, 3) as (x, y, s) and ``patches`` (K, C, P, P). The
widget builders (:func:`topk_widget`, :func:`scales_widget`) take a MIST model and run its heatmap network.
See :mod:`mistlib.viz` for the conventions shared by every figure.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import torch
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mistlib.extract import MOMENT_EPS, topk_extract
from mistlib.heatmap import HeatmapNet, local_spatial_softmax
from mistlib.model import MIST
from mistlib.sampler import sample_patches
from mistlib.viz.scenes import _draw_image, _draw_windows, _png_outputs

WINDOW_COLOR = "#17becf"  # patch windows chosen by E_K (cyan)
OTHER_COLOR = "#d62728"  # picks of a rejected alternative (red)
HEAT_CMAP = "magma"
SOFTMAX_GAMMA = 0.5  # softmaxed heatmaps are drawn on a square-root colour scale: their peaks are sparse


# -- computing what the figures show -------------------------------------------------------------------------
def scale_space(num_scales: int, smallest: float, largest: float) -> tuple[float, ...]:
    """``num_scales`` patch sides spread geometrically from ``smallest`` to ``largest`` px (rounded to 0.01).

    With one scale, the geometric mean of the two ends (the middle of the range on a log axis).

    Example:
        >>> scale_space(3, 16.0, 25.0)
        (16.0, 20.0, 25.0)
        >>> scale_space(1, 16.0, 25.0)
        (20.0,)
    """
    if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 1:
        raise ValueError(f"num_scales must be a positive integer, got {num_scales!r}")
    if not 0 < smallest <= largest:
        raise ValueError(f"need 0 < smallest <= largest, got smallest={smallest}, largest={largest}")
    if num_scales == 1:
        return (round(math.sqrt(smallest * largest), 2),)
    if largest <= smallest:
        raise ValueError(f"{num_scales} scales need largest > smallest, got {smallest} and {largest}")
    ratio = (largest / smallest) ** (1 / (num_scales - 1))
    return tuple(round(smallest * ratio**i, 2) for i in range(num_scales))


def heatmap_net_at(
    net: HeatmapNet,
    scales: Sequence[float] | None = None,
    softmax_kernel: int | None = None,
    softmax_strength: float | None = None,
) -> HeatmapNet:
    """A copy of ``net`` with the same trained weights, run at other ``scales`` or with another local softmax.

    The trunk is fully convolutional and shared across scales (§4), so it can be run at any resize factor
    ``reference_size / s``; only the scales it was trained at are the ones its weights were tuned for.

    Example:
        >>> net = HeatmapNet()
        >>> other = heatmap_net_at(net, scales=(12.0, 16.0, 20.0, 25.0), softmax_kernel=7)
        >>> other.resize_factors()[0], other.config.softmax_kernel, other(torch.rand(1, 1, 40, 40)).shape
        (1.6666666666666667, 7, torch.Size([1, 4, 40, 40]))
        >>> torch.equal(other.head.weight, net.head.weight)
        True
    """
    changes: dict = {}
    if scales is not None:
        changes["scales"] = tuple(float(s) for s in scales)
    if softmax_kernel is not None:
        changes["softmax_kernel"] = softmax_kernel
    if softmax_strength is not None:
        changes["softmax_strength"] = float(softmax_strength)
    copy = HeatmapNet(dataclasses.replace(net.config, **changes))
    copy.load_state_dict(net.state_dict())
    device = next(net.parameters()).device
    return copy.to(device).eval()


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


# -- drawing helpers -----------------------------------------------------------------------------------------
def _windows(ax, keypoints: torch.Tensor, color: str = WINDOW_COLOR, numbers: bool = False) -> None:
    """Draw the square windows of keypoints (K, 3) on ``ax``; with ``numbers``, each window's rank 1..K."""
    tags = [str(rank) for rank in range(1, len(keypoints) + 1)] if numbers else None
    _draw_windows(ax, keypoints, color, tags=tags)


def _map(
    ax, values: torch.Tensor, vmin: float, vmax: float, title: str | None = None, gamma: float = 1.0
) -> None:
    """Show an (H, W) map with the heat colour map (``gamma`` < 1: a power-law colour scale that lifts faint
    values), pixel centres at integers, no ticks."""
    norm = PowerNorm(gamma, vmin=vmin, vmax=vmax) if gamma != 1.0 else Normalize(vmin=vmin, vmax=vmax)
    ax.imshow(values.detach().float().cpu().numpy(), cmap=HEAT_CMAP, norm=norm, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _check_maps(scores: torch.Tensor, heatmap: torch.Tensor, scales: torch.Tensor | Sequence[float]) -> None:
    if scores.dim() != 3 or heatmap.shape != scores.shape:
        raise ValueError(
            f"scores and heatmap must both have shape (S, H, W), got {tuple(scores.shape)} and "
            f"{tuple(heatmap.shape)}"
        )
    if len(scales) != scores.shape[0]:
        raise ValueError(f"scales must have S = {scores.shape[0]} entries, got {len(scales)}")


# -- figures -------------------------------------------------------------------------------------------------
def show_scale_maps(
    image: torch.Tensor,
    scores: torch.Tensor,
    heatmap: torch.Tensor,
    scales: torch.Tensor | Sequence[float],
    keypoints: torch.Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """The scale-space heatmap of §4, one column per scale: raw scores on top, local softmax below.

    Args:
        image: (C, H, W) in [0, 1].
        scores: (S, H, W) raw scores ``H_eta(I_s)`` upsampled to the image (``HeatmapNet.scores``).
        heatmap: (S, H, W) after the local spatial softmax (``HeatmapNet.forward``).
        scales: (S,) patch sides in pixels.
        keypoints: (K, 3) as (x, y, s) to draw as windows on the image and as chosen scales, or None.
        title: optional figure title.

    Returns: a Figure with a 2 x (S + 1) grid of axes, row-major: the image (with K windows) and the raw
    map of each scale (one shared colour range), then the chosen scales ``s_k`` against the scale space
    and the softmaxed map of each scale (one shared colour range from 0, on a square-root scale).

    Example:
        >>> scores = torch.rand(3, 20, 20)
        >>> heatmap = local_spatial_softmax(scores[None], 5)[0]
        >>> fig = show_scale_maps(torch.rand(1, 20, 20), scores, heatmap, [8.0, 10.0, 12.5],
        ...                       keypoints=torch.tensor([[5.0, 5.0, 9.0], [15.0, 12.0, 11.0]]))
        >>> len(fig.axes), len(fig.axes[0].patches), fig.axes[1].get_title()
        (8, 2, 's = 8 px')
    """
    _check_maps(scores, heatmap, scales)
    scale_list = [float(s) for s in scales]
    num = len(scale_list)
    fig = Figure(figsize=(1.9 * (num + 1), 4.1), layout="constrained")
    axes = fig.subplots(2, num + 1, squeeze=False)
    _draw_image(axes[0, 0], image)
    axes[0, 0].set_title("image", fontsize=8)
    low, high = float(scores.min()), float(scores.max())
    top = max(float(heatmap.max()), 1e-12)
    for index, s in enumerate(scale_list):
        _map(axes[0, index + 1], scores[index], low, high, f"s = {s:g} px")
        _map(axes[1, index + 1], heatmap[index], 0.0, top, "local softmax", SOFTMAX_GAMMA)
    axes[0, 1].set_ylabel("raw scores", fontsize=8)
    axes[1, 1].set_ylabel("h_s", fontsize=8)
    chosen = axes[1, 0]
    for s in scale_list:
        chosen.axvline(s, color="0.7", linewidth=0.8, linestyle="--")
    if keypoints is not None:
        _windows(axes[0, 0], keypoints)
        values = keypoints[:, 2].detach().float().cpu()
        chosen.plot(values.numpy(), torch.arange(1, len(values) + 1).numpy(), "o", color=WINDOW_COLOR,
                    markersize=3)  # fmt: skip
        chosen.set_ylim(len(values) + 0.5, 0.5)
    span = scale_list[-1] - scale_list[0]
    pad = max(1.0, 0.15 * span)
    chosen.set_xlim(scale_list[0] - pad, scale_list[-1] + pad)
    chosen.set_xlabel("scale s_k (px)", fontsize=8)
    chosen.set_ylabel("pick k", fontsize=8)
    chosen.tick_params(labelsize=7)
    chosen.set_title("chosen scales", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def show_soft_nms(scores: torch.Tensor, heatmap: torch.Tensor, title: str | None = None) -> Figure:
    """Raw scores against the local spatial softmax: the softmax keeps one peak per window (soft NMS, §4).

    Args:
        scores: (S, H, W) raw scores; heatmap: (S, H, W) their local spatial softmax.
        title: optional figure title.

    Returns: a Figure of 4 axes: ``max_s`` of the raw scores, ``max_s`` of the heatmap (square-root colour
    scale), and a profile along
    the image row through the heatmap's strongest pixel (raw scores on the left y axis, the softmax on a
    twin right y axis); the row is marked by a dashed line on both maps.

    Example:
        >>> scores = torch.zeros(1, 9, 9); scores[0, 4, 2] = 1.0; scores[0, 4, 4] = 0.8
        >>> fig = show_soft_nms(scores, local_spatial_softmax(scores[None], 5)[0])
        >>> len(fig.axes), fig.axes[2].get_title()
        (4, 'profile along row y = 4')
    """
    if scores.dim() != 3 or heatmap.shape != scores.shape:
        raise ValueError(f"scores and heatmap must both have shape (S, H, W), got {tuple(scores.shape)} "
                         f"and {tuple(heatmap.shape)}")  # fmt: skip
    raw = scores.detach().float().cpu().amax(0)  # (H, W)
    soft = heatmap.detach().float().cpu().amax(0)  # (H, W)
    row = int(soft.flatten().argmax()) // soft.shape[1]
    fig = Figure(figsize=(9.0, 2.9), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.6])
    _map(axes[0], raw, float(raw.min()), float(raw.max()), "raw scores, max over s")
    _map(axes[1], soft, 0.0, max(float(soft.max()), 1e-12), "local softmax, max over s", SOFTMAX_GAMMA)
    for ax in axes[:2]:
        ax.axhline(row, color="white", linestyle="--", linewidth=0.8)
    columns = torch.arange(raw.shape[1]).numpy()
    axes[2].plot(columns, raw[row].numpy(), color="0.4", label="raw score")
    axes[2].set_ylabel("raw score", fontsize=8)
    axes[2].set_xlabel("x (px)", fontsize=8)
    axes[2].set_title(f"profile along row y = {row}", fontsize=8)
    twin = axes[2].twinx()
    twin.plot(columns, soft[row].numpy(), color=WINDOW_COLOR, label="local softmax")
    twin.set_ylabel("local softmax", fontsize=8, color=WINDOW_COLOR)
    for ax in (axes[2], twin):
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


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
    _draw_image(ax, image)
    _windows(ax, keypoints, numbers=True)
    ax.set_title(f"{k} windows chosen by E_K", fontsize=8)
    grid = right.subplots(nrows, ncols, squeeze=False)
    for index, cell in enumerate(grid.flat):
        if index >= k:
            cell.remove()
            continue
        _draw_image(cell, patches[index])
        cell.set_title(f"{index + 1}: s={float(keypoints[index, 2]):.1f}", fontsize=7)
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
    _map(axes[0], raw_max, 0.0, top, "max_s h: eq. (3) as we do it", SOFTMAX_GAMMA)
    axes[0].plot(picks[:, 0].numpy(), picks[:, 1].numpy(), "o", markerfacecolor="none",
                 markeredgecolor=WINDOW_COLOR, markersize=6)  # fmt: skip
    _map(axes[1], norm_max, 0.0, 1.0, "max_s of eq. (2) first")
    axes[1].plot((other % width).numpy(), (other // width).numpy(), "x", color=OTHER_COLOR, markersize=6)
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
    _draw_image(axes[0], image)
    axes[0].set_xlim(x - s / 2 - margin, x + s / 2 + margin)
    axes[0].set_ylim(y + s / 2 + margin, y - s / 2 - margin)
    axes[0].add_patch(Rectangle((x - s / 2, y - s / 2), s, s, fill=False, edgecolor=WINDOW_COLOR))
    axes[0].plot(points[..., 0].flatten().numpy(), points[..., 1].flatten().numpy(), ".", color=OTHER_COLOR,
                 markersize=3)  # fmt: skip
    axes[0].set_title(f"window ({x:g}, {y:g}, {s:.1f}): {size}x{size} sample points", fontsize=8)
    _draw_image(axes[1], patch)
    axes[1].set_title(f"patch S(I, x), P = {size}", fontsize=8)
    return fig


def show_scale_space(
    model: MIST,
    image: torch.Tensor,
    scales: Sequence[float],
    softmax_kernel: int = 15,
    softmax_strength: float = 10.0,
    k: int | None = None,
) -> Figure:
    """Run ``model``'s heatmap net at other ``scales`` and another local softmax; :func:`show_scale_maps` it.

    The trained weights are kept (:func:`heatmap_net_at`); only the resize factors and the softmax change.

    Args:
        model: a MIST model; its heatmap network is used.
        image: (C, H, W) in [0, 1].
        scales: patch sides in pixels, strictly increasing.
        softmax_kernel: odd window of the local softmax; softmax_strength: its sharpness.
        k: K picks to draw (the model's K when None).

    Returns: :func:`show_scale_maps` of the result, titled with the settings.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(image_size=32, k=3, scales=(8.0, 12.0), reference_size=8.0,
        ...                         heatmap_channels=4, heatmap_blocks=1, task_width=2)).eval()
        >>> fig = show_scale_space(model, torch.rand(1, 32, 32), (6.0, 8.0, 10.0), softmax_kernel=5)
        >>> len(fig.axes), fig.get_suptitle()
        (8, 'scales (6, 8, 10) px, softmax window 5, strength 10; 3 picks')
    """
    net = heatmap_net_at(model.heatmap_net, scales=scales)
    device = next(net.parameters()).device
    k = model.config.k if k is None else k
    with torch.no_grad():
        scores = net.scores(image[None].float().to(device))  # (1, S, H, W)
        heatmap = local_spatial_softmax(scores, softmax_kernel, softmax_strength)  # (1, S, H, W)
        keypoints = topk_extract(heatmap, k, net.scales)  # (1, K, 3)
    title = (
        f"scales ({', '.join(f'{s:g}' for s in scales)}) px, softmax window {softmax_kernel}, "
        f"strength {softmax_strength:g}; {k} picks"
    )
    return show_scale_maps(image, scores[0].cpu(), heatmap[0].cpu(), scales, keypoints[0].cpu(), title)


# -- widgets -------------------------------------------------------------------------------------------------
def _figure_widget(draw: Callable[..., Figure], dpi: int = 80, **controls):
    """``ipywidgets.interactive`` over ``draw``, showing each Figure it returns as a PNG in an Output widget.

    The PNG goes into the Output's ``outputs`` state (:func:`mistlib.viz.scenes._png_outputs`; nbval does
    not route display messages into Output widgets). Children: the controls, the picture (an ``Output``),
    and interactive's own output area, where an error of ``draw`` is shown. ``.result`` holds the last
    Figure.
    """
    import ipywidgets as widgets

    picture = widgets.Output()

    @functools.wraps(draw)
    def update(**values) -> Figure:
        fig = draw(**values)
        picture.outputs = _png_outputs(fig, dpi, repr(fig))
        return fig

    widget = widgets.interactive(update, clear_output=False, **controls)
    widget.children = (*widget.children[:-1], picture, widget.children[-1])
    return widget


def topk_widget(model: MIST, image: torch.Tensor, k: int | None = None, max_k: int = 20):
    """Scrub K from 1 to ``max_k`` and watch the windows and patches of :func:`show_topk` follow.

    The heatmap is computed once; each K re-runs only ``topk_extract`` (with the model's ``nms``) and
    ``sample_patches``.

    Args:
        model: a MIST model (its heatmap network, scales and patch size are used).
        image: (C, H, W) in [0, 1].
        k: initial K (the model's K when None).
        max_k: largest K offered.

    Returns: an ``ipywidgets.interactive`` whose ``children[0]`` is the ``IntSlider`` labelled "K" and
    ``children[1]`` the ``Output`` showing the figure as a PNG; ``.result`` holds the current Figure.

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
    return _figure_widget(draw, k=widgets.IntSlider(value=start, min=1, max=max_k, description="K"))


def scales_widget(model: MIST, image: torch.Tensor, k: int | None = None):
    """Scrub the scale space (how many scales, over which range) and the local softmax (window, strength).

    Each change calls :func:`show_scale_space`: the trained trunk re-runs at the new resize factors and the
    softmax is applied to its raw scores with the new window and strength.

    Args:
        model: a MIST model; image: (C, H, W) in [0, 1]; k: picks to draw (the model's K when None).

    Returns: an ``ipywidgets.interactive`` with, in order, ``children[0]`` "scales" (``IntSlider`` 1-5),
    ``children[1]`` "range (px)" (``FloatRangeSlider``), ``children[2]`` "window" (odd ``IntSlider``),
    ``children[3]`` "strength" (``FloatSlider``), then the ``Output`` showing the figure as a PNG;
    ``.result`` holds the current Figure. Starts at the
    model's own scales' range and softmax settings.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(image_size=32, k=3, scales=(8.0, 12.0), reference_size=8.0,
        ...                         heatmap_channels=4, heatmap_blocks=1, task_width=2)).eval()
        >>> widget = scales_widget(model, torch.rand(1, 32, 32))
        >>> [c.description for c in widget.children[:4]], len(widget.result.axes)
        (['scales', 'range (px)', 'window', 'strength'], 6)
        >>> widget.children[0].value = 4
        >>> len(widget.result.axes)
        10
    """
    import ipywidgets as widgets

    config = model.config

    def draw(num_scales: int, scale_range: tuple[float, float], window: int, strength: float) -> Figure:
        smallest, largest = scale_range
        largest = max(largest, smallest + 1.0)  # several scales need a range of at least a pixel
        scales = scale_space(num_scales, smallest, largest)
        return show_scale_space(model, image, scales, window, strength, k)

    low, high = float(config.scales[0]), float(config.scales[-1])
    return _figure_widget(
        draw,
        num_scales=widgets.IntSlider(value=len(config.scales), min=1, max=5, description="scales"),
        scale_range=widgets.FloatRangeSlider(
            value=(low, high), min=max(2.0, low / 2), max=2 * high, step=0.5, description="range (px)"
        ),
        window=widgets.IntSlider(value=config.softmax_kernel, min=1, max=31, step=2, description="window"),
        strength=widgets.FloatSlider(
            value=config.softmax_strength, min=0.5, max=40.0, step=0.5, description="strength"
        ),
    )
