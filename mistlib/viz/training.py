"""Figures of §6 (Algorithm 1, eq. 8–14): the three lifting stages, the training log and the ablation.

Pure functions that return a new :class:`~matplotlib.figure.Figure` (see :mod:`mistlib.viz`), plus
:func:`training_scrubber_widget`, a thin :mod:`ipywidgets` control over :func:`show_lifting_stage` that scrubs
through a recorded :class:`~mistlib.traininglog.TrainingLog`. Keypoints are (x, y, s) in pixels: a window of
side ``s`` centred on ``(x, y)``, x right, y down.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from mistlib.extract import lift_target
from mistlib.viz.scenes import _draw_boxes, _draw_image, _draw_windows, _png_outputs

BEFORE_COLOR = "#1f77b4"  # x = E_K(H(I)), the keypoints before stage 2
AFTER_COLOR = "#d62728"  # x*, the keypoints after stage 2
ACTIVE_COLOR = "#2ca02c"  # frame of the panels a stage works on
DETECTION_COLOR = "#17becf"  # a method's windows in compare_methods (ground truth boxes stay orange)
STAGES = {1: "task update", 2: "keypoint refinement", 3: "heatmap regression"}
DEFAULT_SCALES = (16.0, 20.0, 25.0)  # MISTConfig().scales
FADED = 0.3  # alpha of the panels a stage does not touch


def _draw_keypoints(ax, keypoints: torch.Tensor, color: str, dashed: bool = False, windows: bool = True):
    """Draw keypoints (K, 3) as (x, y, s): each centre, and (``windows``) a square of side s around it."""
    if windows:
        _draw_windows(ax, keypoints, color, "--" if dashed else "-")
    centres = keypoints[:, :2].detach().float().cpu()
    ax.plot(centres[:, 0].numpy(), centres[:, 1].numpy(), "+" if dashed else "o", color=color, markersize=3)


def _draw_moves(ax, before: torch.Tensor, after: torch.Tensor) -> None:
    """An arrow from each keypoint of ``before`` (K, 3) to the same keypoint of ``after`` (K, 3)."""
    for (x0, y0, _), (x1, y1, _) in zip(before.tolist(), after.tolist(), strict=True):
        if (x1 - x0) ** 2 + (y1 - y0) ** 2 > 1e-6:
            arrow = {"arrowstyle": "->", "color": AFTER_COLOR, "lw": 1}
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=arrow)


def _draw_map(ax, values: torch.Tensor, cmap: str = "magma", gamma: float = 1.0) -> None:
    """Show a non-negative (H, W) map scaled to its own maximum (colours ~ value ** gamma), pixel centres at
    integer coordinates."""
    values = values.detach().float().cpu()
    vmax = float(values.max()) if float(values.max()) > 0 else 1.0
    norm = PowerNorm(gamma, vmin=0, vmax=vmax)
    ax.imshow(values.numpy(), cmap=cmap, norm=norm, interpolation="nearest")
    height, width = values.shape
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)  # y down
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, active: bool) -> None:
    """Mark a panel as worked on by the current stage (green frame) or fade it."""
    for spine in ax.spines.values():
        spine.set_edgecolor(ACTIVE_COLOR if active else "#cccccc")
        spine.set_linewidth(2.5 if active else 0.8)
    if not active:
        for artist in [*ax.images, *ax.patches, *ax.lines, *ax.texts, *ax.containers]:
            if hasattr(artist, "set_alpha"):
                artist.set_alpha(FADED)
        for bar in ax.patches:
            bar.set_alpha(FADED)


def show_lifting_stage(
    snapshot: Mapping[str, torch.Tensor],
    stage: int,
    image: int = 0,
    scales: Sequence[float] = DEFAULT_SCALES,
    sigma: float = 0.0,
    step: int | None = None,
    warmup: bool = False,
    size: float = 2.4,
) -> Figure:
    """One stage of Algorithm 1 on one image: image, heatmap, task output and lifting target.

    Four panels, always in this order: the image ``I`` with its keypoints, the heatmap ``H_eta(I)`` (maximum
    over scales, on a square-root colour scale up to its peak), the task output at ``x*`` (the
    reconstruction, or for classification the mean class probabilities of the K patches, eq. 7) and the
    target ``h_bar = E_K^{-1}(x*)`` (summed over scales, single points dilated 3 x 3 so that they show).
    The panels the stage works on get a green frame, the others are faded:

    * stage 1, task update: ``x = E_K(H(I))`` (blue) on the image and the heatmap;
    * stage 2, keypoint refinement: ``x`` (blue, dashed) moved to ``x*`` (red) on the image, and the output;
    * stage 3, heatmap regression: ``x*`` (red) on the heatmap and on ``h_bar``.

    Args:
        snapshot: the output of :meth:`~mistlib.lifting.LiftingTrainer.inspect` or one
            :meth:`~mistlib.traininglog.TrainingLog.snapshot`: ``image`` (B, C, H, W), ``heatmap``
            (B, S, H, W),
            ``keypoints`` and ``refined`` (B, K, 3), ``output`` (B, C, H, W) or logits (B, K, classes), and
            optionally ``target`` (B, S, H, W) (computed with :func:`~mistlib.extract.lift_target` when
            missing, as in a training log), ``task_before``, ``task_after``, ``lift`` (B,).
        stage: 1, 2 or 3.
        image: which image of the batch.
        scales: (S,) the model's scale space in pixels (needed for ``h_bar``).
        sigma: the trainer's ``target_sigma`` (0: single-point targets).
        step: training step shown in the title (None: not shown).
        warmup: the snapshot was taken during the warm-up (only the task network trains, on random windows,
            so the stages shown did not run yet); the title says so.
        size: side of one panel in inches.

    Returns: a Figure with 4 axes; its title names the stage and its loss.

    Example:
        >>> snapshot = {"image": torch.rand(1, 1, 20, 20), "heatmap": torch.rand(1, 2, 20, 20),
        ...             "keypoints": torch.tensor([[[5.0, 5.0, 8.0]]]),
        ...             "refined": torch.tensor([[[7.0, 6.0, 8.0]]]),
        ...             "output": torch.rand(1, 1, 20, 20), "lift": torch.tensor([0.01])}
        >>> fig = show_lifting_stage(snapshot, stage=3, scales=(6.0, 10.0), step=40)
        >>> len(fig.axes), fig.get_suptitle()
        (4, 'step 40 · stage 3: heatmap regression · L_lift = 0.01')
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
    for name in ("image", "heatmap", "keypoints", "refined", "output"):
        if name not in snapshot:
            raise ValueError(f"snapshot has no {name!r}: expected the output of LiftingTrainer.inspect")
    picture = snapshot["image"][image]  # (C, H, W)
    heatmap = snapshot["heatmap"][image]  # (S, H, W)
    before, after = snapshot["keypoints"][image], snapshot["refined"][image]  # (K, 3)
    if "target" in snapshot:
        target = snapshot["target"][image]  # (S, H, W)
    else:
        scale_tensor = torch.as_tensor(list(scales), dtype=torch.float32)
        target = lift_target(after[None].float(), scale_tensor, tuple(picture.shape[-2:]), sigma)[0]

    fig = Figure(figsize=(4 * size, size + 0.7), layout="constrained")
    axes = [fig.add_subplot(1, 4, index + 1) for index in range(4)]
    _draw_image(axes[0], picture)
    _draw_keypoints(axes[0], before, BEFORE_COLOR, dashed=stage > 1)
    if stage > 1:
        _draw_keypoints(axes[0], after, AFTER_COLOR)
        _draw_moves(axes[0], before, after)
    axes[0].set_title("image I, x → x*" if stage > 1 else "image I, x = E_K(H(I))", fontsize=9)

    peak = heatmap.amax(0)  # (H, W), eq. (3)
    _draw_map(axes[1], peak, gamma=0.5)  # a trained heatmap is peaky: a square-root scale shows the rest
    shown_points, color = (after, AFTER_COLOR) if stage == 3 else (before, BEFORE_COLOR)
    _draw_keypoints(axes[1], shown_points, color, windows=False)
    axes[1].set_title(f"heatmap H(I) (√ scale), peak {float(peak.max()):.3g}", fontsize=9)

    output = snapshot["output"][image]
    if output.dim() == 3:  # a reconstruction (C, H, W)
        _draw_image(axes[2], output)
        _draw_keypoints(axes[2], after, AFTER_COLOR)
        axes[2].set_title("reconstruction at x*", fontsize=9)
    else:  # logits (K, classes): the predicted histogram of eq. (7)
        histogram = output.float().softmax(-1).mean(0)  # (classes,)
        axes[2].bar(range(len(histogram)), histogram.tolist(), color=AFTER_COLOR)
        axes[2].set_ylim(0, 1)
        axes[2].set_xticks(range(len(histogram)))
        axes[2].tick_params(labelsize=7)
        axes[2].set_title("mean class probabilities at x*", fontsize=9)

    shown = target.sum(0)  # (H, W)
    if sigma <= 0:
        shown = F.max_pool2d(shown[None, None], 3, stride=1, padding=1)[0, 0]  # dilate single points
    _draw_map(axes[3], shown, cmap="viridis")
    _draw_keypoints(axes[3], after, AFTER_COLOR, windows=False)
    axes[3].set_title("target h̄ = E_K⁻¹(x*)", fontsize=9)

    active = {1: (0, 1), 2: (0, 2), 3: (1, 3)}[stage]
    for index, ax in enumerate(axes):
        _frame(ax, index in active)
    parts = _title_parts(snapshot, stage, image, step)
    if warmup:
        parts.insert(1, "warm-up, not applied yet")
    fig.suptitle(" · ".join(parts), fontsize=10)
    return fig


def _title_parts(snapshot: Mapping[str, torch.Tensor], stage: int, image: int, step: int | None) -> list[str]:
    """``["step N", "stage s: name", "loss ..."]`` for the title of :func:`show_lifting_stage`."""
    parts = [] if step is None else [f"step {step}"]
    parts.append(f"stage {stage}: {STAGES[stage]}")

    def value(name: str) -> str | None:
        return f"{float(snapshot[name][image]):.3g}" if name in snapshot else None

    if stage == 1 and value("task_before") is not None:
        parts.append(f"L_task(x) = {value('task_before')}")
    elif stage == 2 and value("task_before") is not None and value("task_after") is not None:
        parts.append(f"L_task: {value('task_before')} → {value('task_after')}")
    elif stage == 3 and value("lift") is not None:
        parts.append(f"L_lift = {value('lift')}")
    return parts


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
        _draw_image(ax, images[index])
        _draw_keypoints(ax, before[index], BEFORE_COLOR, dashed=True)
        _draw_keypoints(ax, after[index], AFTER_COLOR)
        if arrows:
            _draw_moves(ax, before[index], after[index])
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
    _draw_image(ax, image)
    _draw_keypoints(ax, keypoints, BEFORE_COLOR)
    ax.set_title(f"image, K = {keypoints.shape[0]} picks", fontsize=9)
    for index, (name, grad) in enumerate(gradients.items()):
        grad = grad.detach().abs().float().cpu()
        support = (grad.sum(0) if grad.dim() == 3 else grad) > 0  # (H, W)
        ax = fig.add_subplot(1, 1 + len(gradients), index + 2)
        _draw_map(ax, support.float(), cmap="cividis")
        ax.set_title(f"{name}: {int(support.sum())} of {support.numel()} pixels", fontsize=9)
    return fig


def plot_losses(history: Sequence[Mapping[str, float]], warmup_steps: int = 0, size: float = 3.2) -> Figure:
    """The logged loss curves of a lifting run: ``L_task`` (warm-up, lifting) and ``L_lift``, warm-up shaded.

    Args:
        history: the trainer's history (``meta["history"]`` of a checkpoint): entries with ``step`` and
            ``warmup`` (warm-up steps), or ``task``, ``lift`` and ``moved_px`` (lifting steps).
        warmup_steps: the config's ``warmup_steps``; the range [0, warmup_steps] is shaded on both axes.
        size: height in inches.

    Returns: a Figure with two axes (task, lift); a curve per logged quantity that has entries.

    Example:
        >>> history = [{"step": 50, "warmup": 0.2}, {"step": 100, "warmup": 0.1},
        ...            {"step": 150, "task": 0.09, "lift": 3e-4}, {"step": 200, "task": 0.08, "lift": 2e-4}]
        >>> fig = plot_losses(history, warmup_steps=100)
        >>> [[line.get_label() for line in ax.lines] for ax in fig.axes]
        [['warm-up (task net only)', 'L_task (lifting, stage 1)'], ['L_lift (stage 3)']]
    """
    fig = Figure(figsize=(2.2 * size, size), layout="constrained")
    task_ax, lift_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    curves = (
        (task_ax, "warmup", "warm-up (task net only)", "#7f7f7f"),
        (task_ax, "task", "L_task (lifting, stage 1)", BEFORE_COLOR),
        (lift_ax, "lift", "L_lift (stage 3)", AFTER_COLOR),
    )
    for ax, key, label, color in curves:
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, color=color, label=label, marker="." if len(points) < 20 else None)
    last = max((entry["step"] for entry in history), default=warmup_steps)
    for ax, title in ((task_ax, "task loss"), (lift_ax, "lift loss, eq. (14)")):
        if warmup_steps > 0:
            ax.axvspan(0, min(warmup_steps, last), color="#dddddd", label="warm-up")
        ax.set_xlabel("training step")
        ax.set_title(title, fontsize=10)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no lifting steps logged", ha="center", va="center", transform=ax.transAxes)
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
            _draw_image(ax, images[column])
            if boxes is not None:
                real = boxes[column][(boxes[column] != 0).any(-1)]  # (L_b, 4)
                _draw_boxes(ax, real, None)
            _draw_keypoints(ax, keypoints[column], DETECTION_COLOR)
            if column == 0:
                ax.set_ylabel(f"{name}\ndetections", fontsize=9)
        for column in range(count):  # reconstructions
            ax = fig.add_subplot(rows, count, (2 * row + 1) * count + column + 1)
            _draw_image(ax, reconstruction[column].clamp(0, 1))
            if column == 0:
                ax.set_ylabel(f"{name}\nreconstruction", fontsize=9)
    return fig


def training_scrubber_widget(
    log,
    scales: Sequence[float] = DEFAULT_SCALES,
    sigma: float = 0.0,
    warmup_steps: int = 0,
    start: int | None = None,
    size: float = 2.4,
    dpi: int = 90,
):
    """A scrubber over a :class:`~mistlib.traininglog.TrainingLog`: pick a snapshot, a stage, a probe image.

    Returns an ``ipywidgets.VBox`` whose children are, in this order: ``step`` (an ``IntSlider`` over the
    snapshot index; the figure's title shows the real training step), ``stage`` (toggle buttons 1: task
    update, 2: keypoint refinement, 3: heatmap regression), ``image`` (a dropdown of the probe images) and an
    ``ipywidgets.Output`` that holds the figure as a PNG. Every change of a control redraws
    :func:`show_lifting_stage` of that snapshot into the output (its ``outputs`` are replaced, which works
    with or without a running kernel); the box keeps the last Figure in ``.result``.

    Args:
        log: a TrainingLog with at least one snapshot.
        scales, sigma: the model's scale space and the trainer's ``target_sigma`` (for ``h_bar``).
        warmup_steps: the trainer's ``warmup_steps``: snapshots taken before it are marked as warm-up.
        start: the snapshot shown first (default: the middle one, so the slider can move either way).
        size: side of one panel in inches; dpi: resolution of the picture.

    Example:
        >>> from mistlib.traininglog import TrainingLog
        >>> log = TrainingLog()
        >>> for step in (0, 50):
        ...     log.record(step, {"image": torch.rand(1, 1, 20, 20), "heatmap": torch.rand(1, 3, 20, 20),
        ...                       "keypoints": torch.rand(1, 2, 3) * 10 + 5,
        ...                       "refined": torch.rand(1, 2, 3) * 10 + 5,
        ...                       "output": torch.rand(1, 1, 20, 20)})
        >>> widget = training_scrubber_widget(log)
        >>> [child.description for child in widget.children[:3]], widget.children[0].max
        (['step', 'stage', 'image'], 1)
        >>> first = widget.children[3].outputs[0]["data"]["image/png"]  # base64 PNG
        >>> widget.children[0].value = 0
        >>> widget.result.get_suptitle(), widget.children[3].outputs[0]["data"]["image/png"] != first
        ('step 0 · stage 1: task update', True)
    """
    import ipywidgets as widgets

    if len(log) == 0:
        raise ValueError("the training log holds no snapshot")
    count = log.snapshots[0]["image"].shape[0]
    first = len(log) // 2 if start is None else start
    step = widgets.IntSlider(value=first, min=0, max=len(log) - 1, description="step")
    stage = widgets.ToggleButtons(
        options=[(f"{number}: {name}", number) for number, name in STAGES.items()],
        value=1,
        description="stage",
        style={"button_width": "14em"},
    )
    # lay the label and the buttons out in one row like the other controls (ToggleButtons lacks the class)
    stage.add_class("widget-inline-hbox")
    image = widgets.Dropdown(options=list(range(count)), value=0, description="image")
    out = widgets.Output()
    box = widgets.VBox([step, stage, image, out])

    def redraw(_change=None) -> None:
        real_step = log.steps[step.value]
        text = f"<lifting snapshot: step {real_step}, stage {stage.value}, image {image.value}>"
        try:
            fig = show_lifting_stage(
                log.snapshot(step.value),
                stage.value,
                image.value,
                scales,
                sigma,
                real_step,
                real_step < warmup_steps,
                size,
            )
            out.outputs = _png_outputs(fig, dpi, text)
        except Exception:
            out.outputs = ({"output_type": "stream", "name": "stderr", "text": traceback.format_exc()},)
            raise
        box.result = fig

    for control in (step, stage, image):
        control.observe(redraw, names="value")
    redraw()
    return box
