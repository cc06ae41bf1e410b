"""Figures of §6 (Algorithm 1, eq. 8–14): the three lifting stages, one image at a time.

A pure function that returns a new :class:`~matplotlib.figure.Figure` (see :mod:`mistlib.viz`),
:func:`show_lifting_stage`, and :func:`training_scrubber_widget`, a thin :mod:`ipywidgets` control over it
that scrubs through a recorded :class:`~mistlib.traininglog.TrainingLog`. Keypoints are (x, y, s) in pixels:
a window of side ``s`` centred on ``(x, y)``, x right, y down. The other figures of chapter 6 (keypoint moves,
gradient support, methods compared, loss curves) live in :mod:`mistlib.viz.comparisons` and
:mod:`mistlib.viz.curves`, and can be imported from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from mistlib.extract import lift_target
from mistlib.viz.comparisons import (  # noqa: F401 (chapter 6 imports them from here)
    compare_methods,
    show_gradient_support,
    show_keypoint_moves,
)
from mistlib.viz.curves import plot_losses  # noqa: F401 (chapter 6 imports it from here)
from mistlib.viz.draw import AFTER_COLOR, BEFORE_COLOR, draw_heatmap, draw_image, draw_keypoints, draw_moves
from mistlib.viz.widgets import figure_widget

ACTIVE_COLOR = "#2ca02c"  # frame of the panels a stage works on
STAGES = {1: "task update", 2: "keypoint refinement", 3: "heatmap regression"}
DEFAULT_SCALES = (16.0, 20.0, 25.0)  # MISTConfig().scales
FADED = 0.3  # alpha of the panels a stage does not touch
REQUIRED = ("image", "heatmap", "keypoints", "refined", "output")  # what a snapshot must hold


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
    for name in REQUIRED:
        if name not in snapshot:
            raise ValueError(f"snapshot has no {name!r}: expected the output of LiftingTrainer.inspect")
    before, after = snapshot["keypoints"][image], snapshot["refined"][image]  # (K, 3)
    fig = Figure(figsize=(4 * size, size + 0.7), layout="constrained")
    axes = [fig.add_subplot(1, 4, index + 1) for index in range(4)]
    _draw_input(axes[0], snapshot["image"][image], before, after, stage)
    _draw_peak(axes[1], snapshot["heatmap"][image], after if stage == 3 else before, stage)
    _draw_output(axes[2], snapshot["output"][image], after)
    target = _shown_target(snapshot, image, scales, sigma)  # (H, W)
    draw_heatmap(axes[3], target, cmap="viridis", title="target h̄ = E_K⁻¹(x*)", title_size=9)
    draw_keypoints(axes[3], after, AFTER_COLOR, windows=False)
    active = {1: (0, 1), 2: (0, 2), 3: (1, 3)}[stage]
    for index, ax in enumerate(axes):
        _frame(ax, index in active)
    parts = _title_parts(snapshot, stage, image, step)
    if warmup:
        parts.insert(1, "warm-up, not applied yet")
    fig.suptitle(" · ".join(parts), fontsize=10)
    return fig


def _draw_input(ax, picture: torch.Tensor, before: torch.Tensor, after: torch.Tensor, stage: int) -> None:
    """Panel 1: the image (C, H, W) with ``x`` (K, 3), and from stage 2 on ``x*`` (K, 3) and the moves."""
    draw_image(ax, picture, "image I, x → x*" if stage > 1 else "image I, x = E_K(H(I))", title_size=9)
    draw_keypoints(ax, before, BEFORE_COLOR, dashed=stage > 1)
    if stage > 1:
        draw_keypoints(ax, after, AFTER_COLOR)
        draw_moves(ax, before, after)


def _draw_peak(ax, heatmap: torch.Tensor, keypoints: torch.Tensor, stage: int) -> None:
    """Panel 2: ``max_s`` of the heatmap (S, H, W) with the centres of ``x*`` (stage 3) or ``x`` (K, 3)."""
    peak = heatmap.amax(0)  # (H, W), eq. (3)
    title = f"heatmap H(I) (√ scale), peak {float(peak.max()):.3g}"
    draw_heatmap(ax, peak, gamma=0.5, title=title, title_size=9)  # peaky: a square-root scale shows the rest
    draw_keypoints(ax, keypoints, AFTER_COLOR if stage == 3 else BEFORE_COLOR, windows=False)


def _draw_output(ax, output: torch.Tensor, after: torch.Tensor) -> None:
    """Panel 3: the reconstruction (C, H, W) with ``x*`` (K, 3), or the mean class probabilities of logits
    (K, classes), the predicted histogram of eq. (7)."""
    if output.dim() == 3:
        draw_image(ax, output, "reconstruction at x*", title_size=9)
        draw_keypoints(ax, after, AFTER_COLOR)
        return
    histogram = output.float().softmax(-1).mean(0)  # (classes,)
    ax.bar(range(len(histogram)), histogram.tolist(), color=AFTER_COLOR)
    ax.set_ylim(0, 1)
    ax.set_xticks(range(len(histogram)))
    ax.tick_params(labelsize=7)
    ax.set_title("mean class probabilities at x*", fontsize=9)


def _shown_target(
    snapshot: Mapping[str, torch.Tensor], image: int, scales: Sequence[float], sigma: float
) -> torch.Tensor:
    """Panel 4's map: ``h_bar = E_K^{-1}(x*)`` (the snapshot's, or computed) summed over scales, (H, W).

    Single-point targets (``sigma`` 0) are dilated 3 x 3 so that they show.
    """
    if "target" in snapshot:
        target = snapshot["target"][image]  # (S, H, W)
    else:
        after, size = snapshot["refined"][image], tuple(snapshot["image"].shape[-2:])
        scale_tensor = torch.as_tensor(list(scales), dtype=torch.float32)
        target = lift_target(after[None].float(), scale_tensor, size, sigma)[0]
    shown = target.sum(0)  # (H, W)
    if sigma <= 0:
        shown = F.max_pool2d(shown[None, None], 3, stride=1, padding=1)[0, 0]  # dilate single points
    return shown


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


def evenly_spaced(count: int, wanted: int, keep: int | None = None) -> list[int]:
    """``wanted`` indices of ``range(count)`` spread evenly, the first and last included, plus ``keep``.

    Example:
        >>> evenly_spaced(61, 5), evenly_spaced(3, 5), evenly_spaced(61, 3, keep=7)
        ([0, 15, 30, 45, 60], [0, 1, 2], [0, 7, 30, 60])
    """
    wanted = max(1, min(wanted, count))
    chosen = {round(i * (count - 1) / max(wanted - 1, 1)) for i in range(wanted)}
    return sorted(chosen | ({keep} if keep is not None else set()))


def training_scrubber_widget(
    log,
    scales: Sequence[float] = DEFAULT_SCALES,
    sigma: float = 0.0,
    warmup_steps: int = 0,
    start: int | None = None,
    size: float = 2.4,
    dpi: int = 72,
    snapshots: int = 16,
):
    """A scrubber over a :class:`~mistlib.traininglog.TrainingLog`: pick a snapshot, a stage, a probe image.

    Offers ``snapshots`` of the log's snapshots, evenly spaced (first and last included), and precomputes
    :func:`show_lifting_stage` for every snapshot, stage and probe image offered, so that every control
    works on a static page too; with a kernel, each change also redraws the figure.

    Args:
        log: a TrainingLog with at least one snapshot.
        scales, sigma: the model's scale space and the trainer's ``target_sigma`` (for ``h_bar``).
        warmup_steps: the trainer's ``warmup_steps``: snapshots taken before it are marked as warm-up.
        start: the index of the snapshot shown first (offered even if not evenly spaced; default: the
            middle offered one, so the slider can move either way).
        size: side of one panel in inches; dpi: resolution of the picture.
        snapshots: how many snapshots to offer (all of them if the log holds fewer).

    Returns: a :func:`~mistlib.viz.widgets.figure_widget` whose children are, in this order: ``step`` (a
    ``SelectionSlider`` over the offered snapshots, its value the snapshot's index in the log, its labels
    the real training steps), ``stage`` (toggle buttons 1: task update, 2: keypoint refinement, 3: heatmap
    regression), ``image`` (a dropdown of the probe images), the picture (``.picture``: snapshots x 3 x
    images frames) and the output area for errors; ``.result`` holds the last Figure.

    Example:
        >>> from mistlib.traininglog import TrainingLog
        >>> log = TrainingLog()
        >>> for step in (0, 50, 100):
        ...     log.record(step, {"image": torch.rand(1, 1, 20, 20), "heatmap": torch.rand(1, 3, 20, 20),
        ...                       "keypoints": torch.rand(1, 2, 3) * 10 + 5,
        ...                       "refined": torch.rand(1, 2, 3) * 10 + 5,
        ...                       "output": torch.rand(1, 1, 20, 20)})
        >>> widget = training_scrubber_widget(log, snapshots=2, dpi=30)
        >>> [child.description for child in widget.children[:3]], widget.children[0].options
        (['step', 'stage', 'image'], (('0', 0), ('100', 2)))
        >>> widget.children[0].value = 0
        >>> widget.result.get_suptitle()
        'step 0 · stage 1: task update'
    """
    import ipywidgets as widgets

    if len(log) == 0:
        raise ValueError("the training log holds no snapshot")
    count = log.snapshots[0]["image"].shape[0]
    offered = evenly_spaced(len(log), snapshots, start)
    step = widgets.SelectionSlider(
        options=[(str(log.steps[index]), index) for index in offered],
        value=offered[len(offered) // 2] if start is None else start,
        description="step",
    )
    stage = widgets.ToggleButtons(
        options=[(f"{number}: {name}", number) for number, name in STAGES.items()],
        value=1,
        description="stage",
        style={"button_width": "14em"},
    )
    # lay the label and the buttons out in one row like the other controls (ToggleButtons lacks the class)
    stage.add_class("widget-inline-hbox")
    image = widgets.Dropdown(options=list(range(count)), value=0, description="image")

    def draw(step: int, stage: int, image: int) -> Figure:
        real_step = log.steps[step]
        warmup = real_step < warmup_steps
        return show_lifting_stage(log.snapshot(step), stage, image, scales, sigma, real_step, warmup, size)

    return figure_widget(draw, dpi, step=step, stage=stage, image=image)
