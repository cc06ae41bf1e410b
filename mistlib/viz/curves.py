"""Learning curves on the validation split (research/README.md §9, chapter 9): one line per run.

Pure functions returning a new :class:`~matplotlib.figure.Figure` (see :mod:`mistlib.viz`). A curve is a
sequence of measurements, dicts with ``step`` and metric values as fractions, as
:func:`mistlib.evaluation.read_curve` reads them or as a checkpoint keeps them in ``meta["validation"]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

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
