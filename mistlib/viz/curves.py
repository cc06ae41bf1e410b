"""Curves of training runs: the logged losses of one lifting run (chapter 6), and learning curves on the
validation split (research/README.md §9, chapter 9), one line per run.

Pure functions returning a new :class:`~matplotlib.figure.Figure` (see :mod:`mistlib.viz`). A learning curve
is a sequence of measurements, dicts with ``step`` and metric values as fractions, as
:func:`mistlib.evaluation.read_curve` reads them or as a checkpoint keeps them in ``meta["validation"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from mistlib.viz.draw import AFTER_COLOR, BEFORE_COLOR

LABELS = {
    "iou50": "validation IoU ≥ 50% (%)",
    "near4": "digits with a keypoint within 4 px (%)",
    "rmse": "validation RMSE",
    "classification": "validation classification (%)",
}


def plot_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str] = ("iou50", "rmse"),
    reference: Mapping[str, float] | None = None,
    start: int = 0,
    size: float = 3.4,
) -> Figure:
    """One panel per metric, one line per named curve; fractions are drawn as percentages.

    Args:
        curves: name -> measurements (dicts with ``step`` and the metrics).
        metrics: the metrics to draw, one panel each.
        reference: metric -> a level drawn as a dashed grey line (e.g. the untrained network's).
        start: first step drawn (e.g. the end of the warm-up, where lifting starts).
        size: panel height in inches.

    Example:
        >>> points = [{"step": 0, "iou50": 0.3, "rmse": 0.2}, {"step": 10, "iou50": 0.4, "rmse": 0.1}]
        >>> fig = plot_curves({"a": points})
        >>> len(fig.axes), fig.axes[0].get_ylabel()
        (2, 'validation IoU ≥ 50% (%)')
    """
    fig = Figure(figsize=(size * 1.45 * len(metrics), size), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        percent = metric != "rmse"
        for name, points in curves.items():
            kept = [p for p in points if p["step"] >= start and p.get(metric) is not None]
            values = [100 * p[metric] if percent else p[metric] for p in kept]
            ax.plot([p["step"] for p in kept], values, marker="o", markersize=3, label=name)
        if reference and metric in reference:
            level = 100 * reference[metric] if percent else reference[metric]
            ax.axhline(level, color="0.5", linestyle="--", linewidth=1, label="untrained network")
        ax.set_xlabel("training step")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
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


def plot_loss_profile(
    offsets: Sequence[float],
    losses: Mapping[str, Sequence[float]],
    reach: float,
    size: float = 3.4,
) -> Figure:
    """``L_task`` as one keypoint slides along x with the others fixed, one curve per keypoint.

    Each curve is drawn relative to its value at offset 0; the shaded band marks how far stage 2 can move a
    keypoint in one training step (``reach`` pixels either way).

    Args:
        offsets: the shifts in pixels, including 0; losses: name -> L_task at each offset.
        reach: the stage-2 reach in pixels.

    Example:
        >>> fig = plot_loss_profile([-2, 0, 2], {"digit 7": [0.3, 0.2, 0.25]}, reach=2.0)
        >>> fig.axes[0].get_xlabel(), len(fig.axes[0].lines)
        ('shift of the keypoint along x (px)', 2)
    """
    fig = Figure(figsize=(size * 1.5, size), layout="constrained")
    ax = fig.add_subplot()
    zero = list(offsets).index(0)
    for name, values in losses.items():
        ax.plot(offsets, [v - values[zero] for v in values], marker=".", label=name)
    ax.axvspan(-reach, reach, color="0.85", zorder=0, label=f"stage 2 reach (±{reach:g} px)")
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.set_xlabel("shift of the keypoint along x (px)")
    ax.set_ylabel("L_task - L_task at the pick")
    ax.legend(fontsize=7)
    return fig
