"""The panels every figure is made of, each drawn onto a given matplotlib axes (see :mod:`mistlib.viz`).

One function per kind of thing drawn: an image (:func:`draw_image`), a grid of patches
(:func:`draw_patches`), a non-negative or signed map (:func:`draw_heatmap`), the square windows of
keypoints (:func:`draw_windows`), xyxy boxes (:func:`draw_boxes`), keypoint centres (:func:`draw_centres`),
both at once (:func:`draw_keypoints`), the moves of keypoints (:func:`draw_moves`) and the small coloured
labels on windows and boxes (:func:`draw_label`).
They add artists and return nothing (:func:`draw_patches` returns the axes it made), so a figure function
composes them and a test can read them back from ``ax.images``, ``ax.patches``, ``ax.lines`` and
``ax.texts``. Coordinates are pixels: pixel ``(i, j)`` has centre ``x = j, y = i``, x right, y down.
Keypoints are (K, 3) as (x, y, s): the window of side ``s`` centred on ``(x, y)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from matplotlib.colors import Normalize, PowerNorm, to_rgba
from matplotlib.patches import Rectangle

BOX_COLOR = "#ff7f0e"  # ground-truth boxes and their labels (orange)
WINDOW_COLOR = "#17becf"  # windows chosen by a localiser (cyan)
BEFORE_COLOR = "#1f77b4"  # keypoints x = E_K(H(I)), before lifting's stage 2 (blue)
AFTER_COLOR = "#d62728"  # keypoints x* after stage 2 (red)
HEAT_CMAP = "magma"  # heatmaps


def check_keypoints(keypoints: torch.Tensor) -> None:
    """Raise a ValueError unless ``keypoints`` is (K, 3), as (x, y, s), the layout the windows are drawn from.

    Example:
        >>> check_keypoints(torch.zeros(2, 3))
        >>> check_keypoints(torch.zeros(1, 2, 3))
        Traceback (most recent call last):
        ValueError: keypoints must have shape (K, 3) as (x, y, s), got (1, 2, 3)
    """
    if keypoints.dim() != 2 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (K, 3) as (x, y, s), got {tuple(keypoints.shape)}")


def _finish(ax, height: int, width: int, title: str | None, title_size: float) -> None:
    """Pixel limits (y down), no ticks and the optional title of an image-like panel."""
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)  # y down
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=title_size)


def draw_image(ax, image: torch.Tensor, title: str | None = None, title_size: float = 8) -> None:
    """An image (C, H, W) in [0, 1] (clipped), grey for one channel, RGB from the first three otherwise.

    Pixel centres sit at integer coordinates, y down, without ticks; ``title`` is set with ``title_size``.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw_image(ax, torch.rand(1, 4, 6), title="I")
        >>> ax.images[0].get_array().shape, ax.get_title()
        ((4, 6), 'I')
        >>> [float(v) for v in (*ax.get_xlim(), *ax.get_ylim())]  # pixel centres at integers, y down
        [-0.5, 5.5, 3.5, -0.5]
    """
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")  # (H, W, 3)
    _finish(ax, *image.shape[-2:], title, title_size)


def draw_patches(
    parent, patches: torch.Tensor, ncols: int, titles: Sequence[str] | None = None, title_size: float = 6
) -> list:
    """A grid of images, e.g. the K patches (K, C, P, P) of one image: one new axes each, row-major.

    Args:
        parent: the Figure or SubFigure that gets ``ceil(K / ncols)`` rows of ``ncols`` axes (the last row
            may be short).
        patches: (K, C, P, P) in [0, 1], drawn with :func:`draw_image`.
        ncols: columns of the grid.
        titles: (K,) titles, or None; ``title_size``: their font size.

    Returns: the K axes, in the order of the patches.

    Example:
        >>> from matplotlib.figure import Figure
        >>> axes = draw_patches(Figure(), torch.rand(5, 1, 8, 8), ncols=3, titles=list("abcde"))
        >>> len(axes), axes[4].get_subplotspec().get_geometry(), axes[4].get_title()
        (5, (2, 3, 4, 4), 'e')
    """
    nrows = math.ceil(len(patches) / ncols)
    axes = []
    for index in range(len(patches)):
        ax = parent.add_subplot(nrows, ncols, index + 1)
        draw_image(ax, patches[index], titles[index] if titles is not None else None, title_size)
        axes.append(ax)
    return axes


def draw_heatmap(
    ax,
    heatmap: torch.Tensor,
    vmin: float = 0.0,
    vmax: float | None = None,
    gamma: float = 1.0,
    cmap: str = HEAT_CMAP,
    title: str | None = None,
    title_size: float = 8,
) -> None:
    """A map (H, W) in a colour map from ``vmin`` to ``vmax``, pixel centres at integers, y down, no ticks.

    Args:
        ax: the axes.
        heatmap: (H, W), e.g. one scale of a heatmap, its maximum over scales, or a gradient.
        vmin: the value of the colour map's first colour.
        vmax: the value of its last colour; None: the map's own maximum (1 when that is not positive).
        gamma: below 1, a power-law colour scale ``((v - vmin) / (vmax - vmin)) ** gamma`` that lifts faint
            values (0.5: a square root, under which sparse peaks leave the rest visible); 1: linear.
        cmap: the colour map (e.g. ``"viridis"``, or ``"RdBu_r"`` from -1 to 1 for a signed map).
        title: optional axes title; title_size: its font size.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw_heatmap(ax, torch.tensor([[0.0, 4.0], [1.0, 0.0]]), gamma=0.5, title="h")
        >>> image = ax.images[0]
        >>> type(image.norm).__name__, image.norm.vmax, image.get_cmap().name, ax.get_title()
        ('PowerNorm', 4.0, 'magma', 'h')
    """
    values = heatmap.detach().float().cpu()
    if vmax is None:
        top = float(values.max())
        vmax = top if top > 0 else 1.0
    norm = Normalize(vmin=vmin, vmax=vmax) if gamma == 1.0 else PowerNorm(gamma, vmin=vmin, vmax=vmax)
    ax.imshow(values.numpy(), cmap=cmap, norm=norm, interpolation="nearest")
    _finish(ax, *values.shape, title, title_size)


def draw_label(
    ax,
    x: float,
    y: float,
    text: str,
    color: str,
    size: float = 6,
    pad: float = 0.4,
    alpha: float | None = 0.85,
    text_color: str = "black",
) -> None:
    """A small label on a ``color`` background, its top left corner at (x, y), clipped to the axes.

    Args:
        ax: the axes; x, y: the corner in pixels; text: the label.
        color: the background; alpha: its opacity (None: opaque); pad: its margin in points.
        size: the font size; text_color: the colour of the letters.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw_label(ax, 2.5, 3.5, "7", "#ff7f0e")
        >>> text = ax.texts[0]
        >>> text.get_text(), text.get_position(), text.get_bbox_patch().get_alpha()
        ('7', (2.5, 3.5), 0.85)
    """
    bbox = {"facecolor": color, "edgecolor": "none", "pad": pad, "alpha": alpha}
    ax.text(x, y, text, color=text_color, fontsize=size, va="top", ha="left", bbox=bbox, clip_on=True)


def draw_windows(
    ax,
    keypoints: torch.Tensor,
    color: str = WINDOW_COLOR,
    styles: str | Sequence[str] = "-",
    width: float = 1.0,
    tags: Sequence[str] | None = None,
) -> None:
    """The square windows ``(x ± s/2, y ± s/2)`` of keypoints (K, 3) as (x, y, s), unfilled.

    Args:
        ax: the axes.
        keypoints: (K, 3) in pixels.
        color: the edge colour; width: the line width.
        styles: one line style for all windows, or (K,) one per window.
        tags: (K,) texts, each drawn with :func:`draw_label` at its window's top left corner; or None.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw_windows(ax, torch.tensor([[10.0, 10, 8], [20, 5, 4]]), styles=["-", ":"], tags=["1", "2"])
        >>> [(p.get_xy(), p.get_width(), p.get_linestyle()) for p in ax.patches]
        [((6.0, 6.0), 8.0, '-'), ((18.0, 3.0), 4.0, ':')]
        >>> [t.get_text() for t in ax.texts]
        ['1', '2']
    """
    rows = keypoints.detach().float().cpu().tolist()
    styles = [styles] * len(rows) if isinstance(styles, str) else list(styles)
    for index, (x, y, s) in enumerate(rows):
        corner = (x - s / 2, y - s / 2)
        ax.add_patch(
            Rectangle(corner, s, s, fill=False, edgecolor=color, linewidth=width, linestyle=styles[index])
        )
        if tags is not None:
            draw_label(ax, corner[0] + 0.5, corner[1] + 0.5, str(tags[index]), color)


def draw_boxes(
    ax,
    boxes: torch.Tensor,
    color: str = BOX_COLOR,
    style: str = "-",
    width: float = 1.0,
    fill: float = 0.0,
    labels: torch.Tensor | Sequence[int] | None = None,
    label_color: str = "black",
) -> None:
    """Rectangles of xyxy boxes (L, 4) in pixels, each with its label when one is given and >= 0.

    Args:
        ax: the axes.
        boxes: (L, 4) as (x0, y0, x1, y1).
        color: the edge colour (and the labels' background); style: the line style; width: the line width.
        fill: above 0, the opacity of a face of the same colour; 0: unfilled.
        labels: (L,) integer classes, drawn at each box's top left corner with :func:`draw_label` (font
            size 7) in ``label_color``; a label < 0 is left out; or None.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw_boxes(ax, torch.tensor([[1.0, 2, 5, 4], [0, 0, 3, 3]]), labels=torch.tensor([3, -1]))
        >>> [(p.get_xy(), p.get_width(), p.get_height()) for p in ax.patches]
        [((1.0, 2.0), 4.0, 2.0), ((0.0, 0.0), 3.0, 3.0)]
        >>> [t.get_text() for t in ax.texts]
        ['3']
    """
    face = to_rgba(color, fill) if fill else "none"
    for index, (x0, y0, x1, y1) in enumerate(boxes.detach().cpu().tolist()):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, edgecolor=color, facecolor=face, linestyle=style,
                               linewidth=width))  # fmt: skip
        label = int(labels[index]) if labels is not None else -1
        if label >= 0:
            draw_label(ax, x0 + 0.5, y0 + 0.5, str(label), color, size=7, pad=0.5, text_color=label_color)


def draw_centres(
    ax,
    points: torch.Tensor,
    color: str = WINDOW_COLOR,
    marker: str = "o",
    size: float = 3,
    hollow: bool = False,
    edge_width: float | None = None,
) -> None:
    """One marker at each point: the centres (x, y) of keypoints (K, 3), or any points (N, 2), in one Line2D.

    Args:
        ax: the axes; points: (N, 2) or (N, 3), the first two columns (x, y) in pixels.
        color: the marker colour; marker: a matplotlib marker (``"o"``, ``"+"``, ``"x"``, ``"."``);
        size: the marker size in points.
        hollow: draw only the marker's edge (in ``color``); edge_width: the edge's width (None: default).

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw_centres(ax, torch.tensor([[10.0, 4, 8], [3, 5, 8]]), marker="+")
        >>> line = ax.lines[0]
        >>> line.get_xdata().tolist(), line.get_ydata().tolist(), line.get_marker()
        ([10.0, 3.0], [4.0, 5.0], '+')
    """
    centres = points[:, :2].detach().float().cpu()
    style = {"markerfacecolor": "none", "markeredgecolor": color} if hollow else {"color": color}
    if edge_width is not None:
        style["markeredgewidth"] = edge_width
    ax.plot(centres[:, 0].numpy(), centres[:, 1].numpy(), marker, markersize=size, **style)


def draw_keypoints(
    ax, keypoints: torch.Tensor, color: str, dashed: bool = False, windows: bool = True
) -> None:
    """Keypoints (K, 3) as (x, y, s): a marker at each centre and, with ``windows``, its window around it.

    Solid windows and round markers, or with ``dashed`` dashed windows and ``+`` markers (the keypoints
    before a change, drawn under those after it).

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> draw_keypoints(ax, torch.tensor([[10.0, 4, 8]]), "#1f77b4", dashed=True)
        >>> ax.patches[0].get_linestyle(), ax.lines[0].get_marker()
        ('--', '+')
    """
    if windows:
        draw_windows(ax, keypoints, color, "--" if dashed else "-")
    draw_centres(ax, keypoints, color, "+" if dashed else "o")


def draw_moves(ax, before: torch.Tensor, after: torch.Tensor, color: str = AFTER_COLOR) -> None:
    """An arrow from each keypoint of ``before`` (K, 3) to the same keypoint of ``after`` (K, 3).

    A keypoint that did not move (by more than 0.001 px) gets no arrow.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().add_subplot()
        >>> before = torch.tensor([[4.0, 4, 6], [9, 9, 6]])
        >>> draw_moves(ax, before, before + torch.tensor([[2.0, 0, 0], [0, 0, 0]]))
        >>> [(text.xy, text.xyann) for text in ax.texts]  # (head, tail)
        [((6.0, 4.0), (4.0, 4.0))]
    """
    for (x0, y0, _), (x1, y1, _) in zip(before.tolist(), after.tolist(), strict=True):
        if (x1 - x0) ** 2 + (y1 - y0) ** 2 > 1e-6:
            arrow = {"arrowstyle": "->", "color": color, "lw": 1}
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=arrow)
