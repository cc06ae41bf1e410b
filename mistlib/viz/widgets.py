"""Figures shown in :mod:`ipywidgets`: rendered as PNG, and the interactive control that redraws them.

The ``*_widget`` functions of the topic modules build on these. A widget never calls ``display()``: it sets
the picture as the ``outputs`` state of an ``ipywidgets.Output`` (or the ``value`` of an ``Image``), so the
picture shows in JupyterLab and in the saved widget state of the static site, while the executed cell's own
output stays the widget view alone, which nbval can compare from run to run.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable

from matplotlib.figure import Figure


def png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    """``fig`` rendered as PNG bytes (``dpi`` None: the figure's own).

    Example:
        >>> png_bytes(Figure(figsize=(1, 1)), dpi=20)[1:4]
        b'PNG'
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_outputs(fig: Figure, dpi: float | None, text: str) -> tuple[dict]:
    """The ``outputs`` of an ``ipywidgets.Output`` that shows ``fig`` as a PNG, ``text`` its plain form.

    Example:
        >>> (output,) = png_outputs(Figure(figsize=(1, 1)), 20, "<a figure>")
        >>> output["output_type"], sorted(output["data"]), output["data"]["text/plain"]
        ('display_data', ['image/png', 'text/plain'], '<a figure>')
    """
    data = {"image/png": base64.b64encode(png_bytes(fig, dpi)).decode("ascii"), "text/plain": text}
    return ({"output_type": "display_data", "data": data, "metadata": {}},)


def figure_widget(draw: Callable[..., Figure], dpi: int = 80, **controls):
    """``ipywidgets.interactive`` over ``draw``, showing each Figure it returns as a PNG in an Output widget.

    The PNG goes into the Output's ``outputs`` state (:func:`png_outputs`; nbval does not route display
    messages into Output widgets).

    Args:
        draw: called with the controls' values as keyword arguments; returns a Figure.
        dpi: resolution of the picture.
        **controls: name -> an ipywidgets control (or anything ``interactive`` accepts), one per argument.

    Returns: an ``ipywidgets.interactive`` whose children are the controls, the picture (an ``Output``), and
    interactive's own output area, where an error of ``draw`` is shown. ``.result`` holds the last Figure.

    Example:
        >>> import ipywidgets as widgets
        >>> def draw(width: int) -> Figure:
        ...     return Figure(figsize=(width, 1))
        >>> widget = figure_widget(draw, dpi=20, width=widgets.IntSlider(value=1, min=1, max=3))
        >>> widget.children[0].value = 2
        >>> float(widget.result.get_figwidth()), widget.children[1].outputs[0]["output_type"]
        (2.0, 'display_data')
    """
    import ipywidgets as widgets

    picture = widgets.Output()

    @functools.wraps(draw)
    def update(**values) -> Figure:
        fig = draw(**values)
        picture.outputs = png_outputs(fig, dpi, repr(fig))
        return fig

    widget = widgets.interactive(update, clear_output=False, **controls)
    widget.children = (*widget.children[:-1], picture, widget.children[-1])
    return widget
