"""The heatmap of §4: its scale space, the local softmax as soft NMS, and a trained net run at other settings.

Figures take tensors of one image (no batch dim): ``image`` (C, H, W), raw ``scores`` and softmaxed
``heatmap`` (S, H, W), ``scales`` (S,) and ``keypoints`` (K, 3) as (x, y, s). :func:`show_scale_space` and
:func:`scales_widget` take a MIST model and run its heatmap network. See :mod:`mistlib.viz` for the
conventions shared by every figure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from mistlib.extract import topk_extract
from mistlib.heatmap import HeatmapNet, local_spatial_softmax
from mistlib.model import MIST
from mistlib.viz.draw import WINDOW_COLOR, draw_heatmap, draw_image, draw_windows
from mistlib.viz.widgets import figure_widget

SOFTMAX_GAMMA = 0.5  # softmaxed heatmaps are drawn on a square-root colour scale: their peaks are sparse


# -- the scale space and a trained net at other settings -----------------------------------------------------
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


# -- figures -------------------------------------------------------------------------------------------------
def _check_maps(
    scores: torch.Tensor, heatmap: torch.Tensor, scales: torch.Tensor | Sequence[float] | None = None
) -> None:
    """Raise a ValueError unless scores and heatmap are both (S, H, W) and ``scales`` (when given) is (S,)."""
    if scores.dim() != 3 or heatmap.shape != scores.shape:
        raise ValueError(
            f"scores and heatmap must both have shape (S, H, W), got {tuple(scores.shape)} and "
            f"{tuple(heatmap.shape)}"
        )
    if scales is not None and len(scales) != scores.shape[0]:
        raise ValueError(f"scales must have S = {scores.shape[0]} entries, got {len(scales)}")


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
    draw_image(axes[0, 0], image, "image")
    low, high = float(scores.min()), float(scores.max())
    top = max(float(heatmap.max()), 1e-12)
    for index, s in enumerate(scale_list):
        draw_heatmap(axes[0, index + 1], scores[index], low, high, title=f"s = {s:g} px")
        draw_heatmap(axes[1, index + 1], heatmap[index], 0.0, top, SOFTMAX_GAMMA, title="local softmax")
    axes[0, 1].set_ylabel("raw scores", fontsize=8)
    axes[1, 1].set_ylabel("h_s", fontsize=8)
    chosen = axes[1, 0]
    for s in scale_list:
        chosen.axvline(s, color="0.7", linewidth=0.8, linestyle="--")
    if keypoints is not None:
        draw_windows(axes[0, 0], keypoints)
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
    _check_maps(scores, heatmap)
    raw = scores.detach().float().cpu().amax(0)  # (H, W)
    soft = heatmap.detach().float().cpu().amax(0)  # (H, W)
    row = int(soft.flatten().argmax()) // soft.shape[1]
    fig = Figure(figsize=(9.0, 2.9), layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.6])
    draw_heatmap(axes[0], raw, float(raw.min()), float(raw.max()), title="raw scores, max over s")
    draw_heatmap(axes[1], soft, gamma=SOFTMAX_GAMMA, title="local softmax, max over s")
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


# -- the widget ----------------------------------------------------------------------------------------------
def scales_widget(model: MIST, image: torch.Tensor, k: int | None = None):
    """Scrub the scale space (how many scales, over which range) and the local softmax (window, strength).

    Each change calls :func:`show_scale_space`: the trained trunk re-runs at the new resize factors and the
    softmax is applied to its raw scores with the new window and strength. The figures for 1 to 5 scales
    (at the starting range, window and strength) are precomputed, so the number of scales also works on a
    static page; the range, window and strength are continuous or too many to precompute along with it,
    and redraw only where a kernel runs (JupyterLab).

    Args:
        model: a MIST model; image: (C, H, W) in [0, 1]; k: picks to draw (the model's K when None).

    Returns: a :func:`~mistlib.viz.widgets.figure_widget` with, in order, ``children[0]`` "scales"
    (``SelectionSlider`` 1-5), ``children[1]`` "range (px)" (``FloatRangeSlider``), ``children[2]`` "window"
    (odd ``IntSlider``), ``children[3]`` "strength" (``FloatSlider``), then the picture (``.picture``, one
    frame per number of scales); ``.result`` holds the current Figure. Starts at the model's own scales'
    range and softmax settings.

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
    return figure_widget(
        draw,
        live_only=("scale_range", "window", "strength"),
        num_scales=widgets.SelectionSlider(
            options=[1, 2, 3, 4, 5], value=len(config.scales), description="scales"
        ),
        scale_range=widgets.FloatRangeSlider(
            value=(low, high), min=max(2.0, low / 2), max=2 * high, step=0.5, description="range (px)"
        ),
        window=widgets.IntSlider(value=config.softmax_kernel, min=1, max=31, step=2, description="window"),
        strength=widgets.FloatSlider(
            value=config.softmax_strength, min=0.5, max=40.0, step=0.5, description="strength"
        ),
    )
