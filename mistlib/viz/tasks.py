"""§5 drawn: reconstruction as a sum of placed patches (S^-1, eq. 6) and the multi-instance loss (eq. 7).

Figures take tensors of one image (no batch dim): ``image`` (C, H, W), ``keypoints`` (K, 3) as (x, y, s),
``patches`` / ``decoded`` (K, C, P, P), per-patch class probabilities ``probs`` (K, N) and ``labels`` (L,)
padded with -1. :func:`reconstruction_widget` takes a MIST auto-encoding model and runs it once.
See :mod:`mistlib.viz` for the conventions shared by every figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from mistlib.model import MIST
from mistlib.objective import Reconstruction
from mistlib.sampler import COMPOSITES, place_patches
from mistlib.viz.draw import WINDOW_COLOR, check_keypoints, draw_heatmap, draw_image, draw_label, draw_windows
from mistlib.viz.widgets import figure_widget

LABEL_COLOR = "#ff7f0e"  # the label histogram q (orange, as the ground-truth boxes)
PREDICTION_COLOR = "#1f77b4"  # the mean prediction p (blue)
SIGNED_CMAP = "RdBu_r"  # residuals, from -1 (blue) to 1 (red)


def _check_patches(keypoints: torch.Tensor, decoded: torch.Tensor, name: str = "decoded") -> None:
    """Raise a ValueError unless keypoints are (K, 3) and ``decoded`` (K, C, P, P)."""
    check_keypoints(keypoints)
    if decoded.dim() != 4 or len(decoded) != len(keypoints):
        raise ValueError(f"{name} must have shape (K={len(keypoints)}, C, P, P), got {tuple(decoded.shape)}")


def placed_canvases(
    decoded: torch.Tensor, keypoints: torch.Tensor, image_size: Sequence[int], background: float = 0.0
) -> torch.Tensor:
    """``S^-1(P_k, x_k)`` for every patch, each on its own zero canvas (§5.1): the terms of eq. (6).

    With a non-zero ``background`` b each patch contributes ``P_k - b`` (what the model does), so that
    ``b + canvases.sum(0)`` is the reconstruction.

    Args:
        decoded: (K, C, P, P) decoded patches; keypoints: (K, 3) as (x, y, s); image_size: (H, W).

    Returns: (K, C, H, W).

    Example:
        >>> keypoints = torch.tensor([[2.5, 2.5, 4.0], [9.5, 5.5, 4.0]])  # the second half outside the canvas
        >>> canvases = placed_canvases(torch.ones(2, 1, 4, 4), keypoints, (8, 10))
        >>> canvases.shape, float(canvases[0].sum()), float(canvases[1].sum())
        (torch.Size([2, 1, 8, 10]), 16.0, 8.0)
    """
    _check_patches(keypoints, decoded)
    placed = place_patches((decoded.float() - background)[None], keypoints.float()[None], image_size)
    return placed[0]  # (K, C, H, W)


def running_composite(canvases: torch.Tensor, composite: str = "sum") -> torch.Tensor:
    """The reconstruction from the first k placed patches, for every k: (K, C, H, W) -> (K, C, H, W).

    ``composite="sum"`` is eq. (6)'s running sum; ``"max"`` the running pixelwise maximum that
    ``MISTConfig(composite="max")`` uses (see :func:`mistlib.losses.reconstruct`).

    Example:
        >>> canvases = torch.tensor([1.0, 3.0, 2.0]).view(3, 1, 1, 1)
        >>> running_composite(canvases).flatten().tolist()
        [1.0, 4.0, 6.0]
        >>> running_composite(canvases, "max").flatten().tolist()
        [1.0, 3.0, 3.0]
    """
    if composite == "sum":
        return canvases.cumsum(0)
    if composite == "max":
        return canvases.cummax(0).values
    raise ValueError(f"composite must be one of {COMPOSITES}, got {composite!r}")


def show_reconstruction_steps(
    image: torch.Tensor,
    keypoints: torch.Tensor,
    decoded: torch.Tensor,
    patches: torch.Tensor | None = None,
    background: float = 0.0,
    title: str | None = None,
    composite: str = "sum",
) -> Figure:
    """Eq. (6) step by step: each patch decoded, placed back by ``S^-1``, and the running sum (or max).

    Args:
        image: (C, H, W) in [0, 1].
        keypoints: (K, 3) as (x, y, s) in pixels.
        decoded: (K, C, P, P) the auto-encoder's output ``T(P_k)``.
        patches: (K, C, P, P) the extracted patches ``P_k`` (an extra top row), or None.
        background: the canvas value b the patches are placed on (0 for MNIST).
        title: optional figure title.
        composite: how the model combines the placed patches, "sum" (eq. 6) or "max".

    Returns: a Figure. Its first 3 axes: the image with the K windows, the reconstruction
    ``b + sum_k S^-1(T(P_k) - b, x_k)`` (or the max over k) and the residual ``I - reconstruction``; then a
    grid of K columns (row-major) with rows ``P_k`` (if given), ``T(P_k)``, ``S^-1(T(P_k), x_k)`` and the
    sum (or max) over the first k patches.

    Example:
        >>> kp = torch.tensor([[8.0, 8.0, 10.0], [20.0, 14.0, 12.0]])
        >>> fig = show_reconstruction_steps(torch.rand(1, 30, 30), kp, torch.rand(2, 1, 8, 8),
        ...                                 patches=torch.rand(2, 1, 8, 8))
        >>> len(fig.axes), len(fig.axes[0].patches), fig.axes[3 + 4 * 2 - 1].get_title()
        (11, 2, 'sum k ≤ 2')
    """
    _check_patches(keypoints, decoded)
    if patches is not None:
        _check_patches(keypoints, patches, "patches")
    k = len(keypoints)
    canvases = placed_canvases(decoded, keypoints, tuple(image.shape[-2:]), background)  # (K, C, H, W)
    partial = background + running_composite(canvases, composite)  # (K, C, H, W): over the first k
    reconstruction = partial[-1]
    image = image.detach().float().cpu()
    rows = [("P_k", patches), ("T(P_k)", decoded), ("S⁻¹(T(P_k))", canvases), (composite, partial)]
    rows = [(name, values) for name, values in rows if values is not None]
    fig = Figure(figsize=(max(6.5, 1.05 * k), 2.4 + 1.1 * len(rows)), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4, 1.1 * len(rows)])
    axes = top.subplots(1, 3)
    draw_image(axes[0], image, "image I and the K windows")
    draw_windows(axes[0], keypoints)
    error = float((image - reconstruction.cpu()).pow(2).mean())
    draw_image(axes[1], reconstruction, f"reconstruction, MSE {error:.4f}")
    residual = (image - reconstruction.cpu())[0]  # (H, W): first channel, signed
    draw_heatmap(axes[2], residual, -1.0, 1.0, cmap=SIGNED_CMAP, title="residual I - reconstruction")
    grid = bottom.subplots(len(rows), k, squeeze=False)
    for row, (name, values) in enumerate(rows):
        for column in range(k):
            ax = grid[row, column]
            draw_image(ax, values[column])
            if name == composite:
                ax.set_title(f"{composite} k ≤ {column + 1}", fontsize=7)
            elif row == 0:
                ax.set_title(f"k = {column + 1}", fontsize=7)
        grid[row, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def show_partial_reconstruction(
    image: torch.Tensor,
    keypoints: torch.Tensor,
    decoded: torch.Tensor,
    placed: int,
    background: float = 0.0,
    composite: str = "sum",
) -> Figure:
    """The reconstruction of eq. (6) after placing only the first ``placed`` of the K decoded patches.

    Args:
        image: (C, H, W) in [0, 1]; keypoints: (K, 3) as (x, y, s); decoded: (K, C, P, P).
        placed: how many patches to place, ``0 <= placed <= K``.
        background: the canvas value b.
        composite: "sum" (eq. 6) or "max", as the model combines the placed patches.

    Returns: a Figure of 3 axes: the image with the windows (the placed ones solid, the others dotted), the
    partial sum (or max), and the residual; titled with the count and the mean squared error.

    Example:
        >>> kp = torch.tensor([[8.0, 8.0, 10.0], [20.0, 14.0, 12.0]])
        >>> fig = show_partial_reconstruction(torch.rand(1, 30, 30), kp, torch.rand(2, 1, 8, 8), placed=1)
        >>> fig.get_suptitle().split(",")[0], [p.get_linestyle() for p in fig.axes[0].patches]
        ('1 of 2 patches placed', ['-', ':'])
    """
    _check_patches(keypoints, decoded)
    k = len(keypoints)
    if not 0 <= placed <= k:
        raise ValueError(f"placed must be in [0, K={k}], got {placed}")
    canvases = placed_canvases(decoded, keypoints, tuple(image.shape[-2:]), background)  # (K, C, H, W)
    partial = torch.full_like(canvases[0], background)  # (C, H, W): nothing placed yet
    if placed:
        partial = background + running_composite(canvases[:placed], composite)[-1]
    image = image.detach().float().cpu()
    error = float((image - partial).pow(2).mean())
    fig = Figure(figsize=(7.2, 2.8), layout="constrained")
    axes = fig.subplots(1, 3)
    draw_image(axes[0], image, "image and windows")
    draw_windows(axes[0], keypoints, styles=["-" if index < placed else ":" for index in range(k)])
    draw_image(axes[1], partial, f"{composite} of the first {placed} placed patches")
    draw_heatmap(axes[2], (image - partial)[0], -1.0, 1.0, cmap=SIGNED_CMAP, title="residual")
    fig.suptitle(f"{placed} of {k} patches placed, MSE {error:.4f}", fontsize=9)
    return fig


def reconstruction_widget(model: MIST, image: torch.Tensor):
    """Place the decoded patches of ``model`` one at a time (:func:`show_partial_reconstruction`).

    The model runs once; the slider only changes how many terms of eq. (6) are combined (summed, or
    maximised for a ``composite="max"`` model).

    Args:
        model: a MIST model of the reconstruction task; image: (C, H, W) in [0, 1].

    Returns: a :func:`~mistlib.viz.widgets.figure_widget` whose ``children[0]`` is the ``IntSlider``
    "placed" (0..K, starting at K) and ``children[1]`` (``.picture``) the figure for every count,
    precomputed, so that the slider works on a static page too; ``.result`` holds the current Figure.

    Example:
        >>> from mistlib.model import MISTConfig
        >>> model = MIST(MISTConfig(image_size=32, k=3, scales=(8.0, 12.0), reference_size=8.0,
        ...                         heatmap_channels=4, heatmap_blocks=1, task_width=2)).eval()
        >>> widget = reconstruction_widget(model, torch.rand(1, 32, 32))
        >>> widget.children[0].value = 1
        >>> widget.result.get_suptitle().split(",")[0]
        '1 of 3 patches placed'
    """
    import ipywidgets as widgets

    if not isinstance(model.task, Reconstruction):
        raise ValueError(f"model must be a reconstruction model, got task {model.task.name!r}")
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(image[None].float().to(device))
    keypoints, decoded = out.keypoints[0].cpu(), out.task_output[0].float().cpu()  # (K, 3), (K, C, P, P)
    background = model.config.background

    def draw(placed: int) -> Figure:
        return show_partial_reconstruction(
            image, keypoints, decoded, placed, background, model.config.composite
        )

    k = len(keypoints)
    slider = widgets.IntSlider(value=k, min=0, max=k, description="placed")
    return figure_widget(draw, placed=slider)


def label_histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``q = (1/L) sum_l onehot(y_l)`` of eq. (7): the share of each class among the valid labels.

    Args:
        labels: (L,) int class ids, -1 for padding (at least one valid); num_classes: N.

    Returns: (N,) float, summing to 1.

    Example:
        >>> label_histogram(torch.tensor([2, 0, 2, -1]), 4)
        tensor([0.3333, 0.0000, 0.6667, 0.0000])
    """
    valid = labels[labels >= 0].long()
    if valid.numel() == 0:
        raise ValueError("labels must hold at least one valid (non -1) label")
    return torch.bincount(valid, minlength=num_classes).float() / valid.numel()


def show_instance_loss(
    probs: torch.Tensor,
    labels: torch.Tensor,
    image: torch.Tensor | None = None,
    keypoints: torch.Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """Eq. (7) drawn: each patch's class probabilities, their mean p, the label histogram q, and H(q, p).

    Args:
        probs: (K, N) softmax of each patch's logits.
        labels: (L,) int class ids, -1 for padding.
        image: (C, H, W) to show with the windows of ``keypoints`` (K, 3), each labelled with its most
            likely class; or None.
        title: figure title; by default ``H(q, p) = ...``.

    Returns: a Figure whose last two axes are the (K, N) probability table (an image with one text per
    cell) and the bar chart of q and p (2 N bars); with an image, it comes first.

    Example:
        >>> probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])  # p = (.4, .15, .45), q = (.5, 0, .5)
        >>> fig = show_instance_loss(probs, torch.tensor([0, 2]))
        >>> len(fig.axes), len(fig.axes[-1].patches), fig.get_suptitle()
        (2, 6, 'H(q, p) = 0.8574')
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (K, N), got {tuple(probs.shape)}")
    probs = probs.detach().float().cpu()
    k, n = probs.shape
    q = label_histogram(labels.cpu(), n)  # (N,)
    p = probs.mean(0)  # (N,)
    loss = float(-(q * p.log()).sum())
    panels = 2 if image is None else 3
    fig = Figure(figsize=(3.0 * panels + 0.6, max(2.8, 0.28 * k + 1.2)), layout="constrained")
    axes = fig.subplots(1, panels)
    if image is not None:
        draw_image(axes[0], image, "patches and their most likely class")
        if keypoints is not None:
            draw_windows(axes[0], keypoints)
            classes = probs.argmax(1).tolist()
            for (x, y, s), c in zip(keypoints.detach().float().cpu().tolist(), classes, strict=True):
                corner = (x - s / 2 + 0.5, y - s / 2 + 0.5)
                draw_label(axes[0], *corner, str(c), WINDOW_COLOR, size=7, alpha=None)
    table, bars = axes[-2], axes[-1]
    table.imshow(probs.numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for row in range(k):
        for column in range(n):
            value = float(probs[row, column])
            table.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                       color="white" if value > 0.6 else "black")  # fmt: skip
    table.set_xticks(range(n))
    table.set_yticks(range(k))
    table.set_yticklabels([str(i + 1) for i in range(k)])
    table.set_xlabel("class c", fontsize=8)
    table.set_ylabel("patch k", fontsize=8)
    table.tick_params(labelsize=7)
    table.set_title("p̂_k = softmax(ŷ_k)", fontsize=8)
    positions = torch.arange(n).float()
    bars.bar((positions - 0.2).numpy(), q.numpy(), width=0.4, color=LABEL_COLOR, label="q: labels")
    bars.bar((positions + 0.2).numpy(), p.numpy(), width=0.4, color=PREDICTION_COLOR, label="p: mean of p̂_k")
    bars.set_xticks(range(n))
    bars.set_xlabel("class c", fontsize=8)
    bars.set_ylim(0, 1)
    bars.tick_params(labelsize=7)
    bars.legend(fontsize=7)
    bars.set_title("histograms compared by eq. (7)", fontsize=8)
    fig.suptitle(title if title is not None else f"H(q, p) = {loss:.4f}", fontsize=9)
    return fig
