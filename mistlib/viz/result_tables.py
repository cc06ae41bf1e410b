"""Tables 1 and 2 of §7: result rows as plain text, and as bars of our numbers beside the paper's.

``rows`` are :class:`mistlib.tables.Row` objects or their dicts (as in ``results/<table>.json``), e.g. from
:func:`mistlib.tables.load_results`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure

METRIC_NAMES = {"rmse": "RMSE", "iou50": "IoU 50%", "classification": "classification", "both": "both"}
OURS_COLOR = "#1f77b4"  # our numbers (blue)
PAPER_COLOR = "#bbbbbb"  # the paper's (grey)


def _get(row, name: str):
    """The field ``name`` of a row, a Row or its dict."""
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def row_budget(row) -> str:
    """The recipe size of a result row: ``"cpu"`` if its command says ``--budget cpu``, else ``"gpu"``.

    ``row`` is a :class:`mistlib.tables.Row` or its dict (as in ``results/<table>.json``).

    Example:
        >>> row_budget({"command": "python -m mistlib train --data gabor --budget cpu"})
        'cpu'
        >>> row_budget({"command": "python -m mistlib train --data gabor"})
        'gpu'
    """
    words = str(_get(row, "command")).split()
    for index, word in enumerate(words):
        if word == "--budget" and index + 1 < len(words):
            return words[index + 1]
        if word.startswith("--budget="):
            return word.split("=", 1)[1]
    return "gpu"


def _metrics(rows: Sequence) -> list[str]:
    names = [name for name in METRIC_NAMES if any(name in _get(r, "paper") for r in rows)]
    return names or sorted({name for r in rows for name in _get(r, "ours")})


def _format(value: float | None, metric: str) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if metric == "rmse" else f"{100 * value:.1f}%"


def results_table(rows: Sequence) -> str:
    """A plain-text table of result rows: each metric as ``ours / paper``, then steps, device and budget.

    ``rows``: :class:`mistlib.tables.Row` objects (or their dicts), e.g. from
    :func:`mistlib.tables.load_results`. RMSE is printed with three decimals, the shares of Table 2 as
    percentages; ``—`` where there is no number.

    Example:
        >>> rows = [{"data": "gabor", "method": "mist", "ours": {"rmse": 0.1234}, "paper": {"rmse": 0.095},
        ...          "steps": 450, "device": "cpu", "command": "python -m mistlib train --budget cpu"}]
        >>> print(results_table(rows))
        data   method  RMSE ours / paper  steps  device  budget
        gabor  mist    0.123 / 0.095        450  cpu     cpu
    """
    metrics = _metrics(rows)
    header = ["data", "method"] + [f"{METRIC_NAMES.get(m, m)} ours / paper" for m in metrics]
    header += ["steps", "device", "budget"]
    lines = [header]
    for r in rows:
        ours, paper = _get(r, "ours"), _get(r, "paper")
        cells = [_get(r, "data"), _get(r, "method")]
        cells += [f"{_format(ours.get(m), m)} / {_format(paper.get(m), m)}" for m in metrics]
        cells += [str(_get(r, "steps")), str(_get(r, "device")), row_budget(r)]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {header.index("steps")}
    text = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    return "\n".join(line.rstrip() for line in text)


def show_table(rows: Sequence, title: str | None = None) -> Figure:
    """Bars of our numbers beside the paper's, one axes per metric, one pair of bars per row.

    ``rows`` as for :func:`results_table`. A missing number (no paper entry) leaves its bar out.

    Returns: a Figure with one axes per metric; in each, the first container holds our bars, the second the
    paper's (``ax.containers``).

    Example:
        >>> rows = [{"data": "gabor", "method": "mist", "ours": {"rmse": 0.12}, "paper": {"rmse": 0.095}}]
        >>> fig = show_table(rows)
        >>> [round(float(bar.get_height()), 3) for c in fig.axes[0].containers for bar in c]
        [0.12, 0.095]
    """
    metrics = _metrics(rows)
    labels = [f"{_get(r, 'data')}\n{_get(r, 'method')}" for r in rows]
    fig = Figure(figsize=(max(4.0, 0.8 * len(rows)) * len(metrics), 3.2), layout="constrained")
    for index, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), index + 1)
        positions = torch.arange(len(rows), dtype=torch.float64)
        for offset, source, color, name in (
            (-0.2, "ours", OURS_COLOR, "ours"),
            (0.2, "paper", PAPER_COLOR, "paper"),
        ):
            values = [_get(r, source).get(metric) for r in rows]
            kept = [(p + offset, v) for p, v in zip(positions.tolist(), values, strict=True) if v is not None]
            ax.bar([p for p, _ in kept], [v for _, v in kept], width=0.4, color=color, label=name)
        ax.set_xticks(positions.tolist(), labels, fontsize=7)
        ax.set_title(METRIC_NAMES.get(metric, metric) + (" (lower is better)" if metric == "rmse" else ""))
        if metric != "rmse":
            ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
