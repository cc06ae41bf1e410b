"""Figures in :mod:`ipywidgets`: precomputed PNG frames that the browser switches, redrawn live by a kernel.

The ``*_widget`` functions of the topic modules build on :func:`figure_widget`. Its picture is a
:func:`frame_stack`: nested ``ipywidgets.Stack`` widgets of ``ipywidgets.Image`` frames, one frame per
position of the discrete controls, each Stack's ``selected_index`` tied to its control by
``ipywidgets.jslink``, a link the browser keeps by itself. On the static website, drawn from the saved
widget state with no kernel behind it, moving a control therefore shows another saved frame. In JupyterLab
the kernel also redraws the figure into the selected frame on every change, so live and saved pictures
agree, and the controls that cannot be precomputed (continuous ones) work there as well. A widget never
calls ``display()``: the executed cell's own output stays the widget view alone, which nbval can compare
from run to run.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

if TYPE_CHECKING:  # ipywidgets is imported when a widget is built, not with mistlib.viz
    import ipywidgets


def png_bytes(fig: Figure, dpi: float | None = None, colors: int | None = None) -> bytes:
    """``fig`` rendered as PNG bytes (``dpi`` None: the figure's own).

    With ``colors``, the picture is stored with an adaptive palette of at most that many colours (no
    dithering): for plots and 8-bit images such as the book's figures, 128 colours look the same and make
    the file about 2-3 times smaller, which matters for a widget that saves hundreds of frames.

    Example:
        >>> png_bytes(Figure(figsize=(1, 1)), dpi=20)[1:4]
        b'PNG'
        >>> png_bytes(Figure(figsize=(1, 1)), dpi=20, colors=8)[25]  # the colour type: 3, a palette
        3
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    if colors is None:
        return buffer.getvalue()
    from PIL import Image

    picture = Image.open(buffer).convert("RGB")
    picture = picture.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    picture.save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def _linked_trait(control: ipywidgets.ValueWidget) -> str:
    """The trait of ``control`` equal to its position: a selection's ``index``, an IntSlider's ``value``."""
    import ipywidgets as widgets

    if isinstance(control, widgets.IntSlider):
        if control.min != 0 or control.step != 1:
            raise ValueError(
                f"an IntSlider is linked by its value, which must be its position (min 0, step 1); "
                f"{control.description!r} has min {control.min}, step {control.step}: use a SelectionSlider"
            )
        return "value"
    if hasattr(control, "_options_values"):  # Dropdown, ToggleButtons, SelectionSlider, ...
        return "index"
    raise TypeError(f"cannot precompute the frames of a {type(control).__name__}: it has no positions")


def control_values(control: ipywidgets.ValueWidget) -> list:
    """The values ``control`` can take, in the order of its positions (a selection's options).

    ``control`` is a single-selection widget (Dropdown, ToggleButtons, SelectionSlider, ...) or an
    ``IntSlider`` from 0 in steps of 1, whose value is its position.

    Example:
        >>> import ipywidgets as widgets
        >>> control_values(widgets.SelectionSlider(options=[("one", 1), ("five", 5)]))
        [1, 5]
        >>> control_values(widgets.IntSlider(value=1, min=0, max=3))
        [0, 1, 2, 3]
    """
    if _linked_trait(control) == "value":
        return list(range(control.max + 1))
    return list(control._options_values)  # ipywidgets' normalised options, in the order ``index`` counts


def frame_stack(
    controls: Sequence[ipywidgets.ValueWidget], frame: Callable[[tuple], bytes]
) -> ipywidgets.Stack:
    """Precomputed PNG frames, one per combination of the ``controls``' values, switched in the browser.

    Args:
        controls: at least one control (see :func:`control_values`), outermost first.
        frame: called once per combination with the tuple of values, one per control; returns PNG bytes.

    Returns: an ``ipywidgets.Stack`` whose children are Stacks for the second control, and so on down to
    ``ipywidgets.Image`` leaves. Every Stack at depth d has its ``selected_index`` joined to control d by
    an ``ipywidgets.jslink`` (listed in ``.links``, outermost first), so the leaf on show follows the
    controls with or without a kernel. It starts at the controls' current values.

    Example:
        >>> import ipywidgets as widgets
        >>> size = widgets.SelectionSlider(options=[1, 2, 3], value=2)
        >>> shade = widgets.Dropdown(options=["white", "black"])
        >>> def frame(values: tuple) -> bytes:
        ...     return png_bytes(Figure(figsize=(values[0], 1), facecolor=values[1]), dpi=10)
        >>> stack = frame_stack([size, shade], frame)
        >>> len(stack.children), len(stack.children[0].children), len(stack.links)
        (3, 2, 4)
        >>> stack.links[0].source == (size, "index"), stack.links[0].target == (stack, "selected_index")
        (True, True)
        >>> stack.selected_index, selected_frame(stack) is stack.children[1].children[0]  # size 2, white
        (1, True)
    """
    import ipywidgets as widgets

    if not controls:
        raise ValueError("frame_stack needs at least one control")
    links, layout = [], widgets.Layout()  # one layout for all: a saved notebook holds one model, not hundreds

    def build(chosen: tuple) -> ipywidgets.Stack | ipywidgets.Image:
        if len(chosen) == len(controls):
            return widgets.Image(value=frame(chosen), format="png", layout=layout)
        control = controls[len(chosen)]
        trait = _linked_trait(control)
        stack = widgets.Stack(layout=layout)
        links.append(widgets.jslink((control, trait), (stack, "selected_index")))  # outermost first
        stack.children = [build((*chosen, value)) for value in control_values(control)]
        stack.selected_index = getattr(control, trait)
        return stack

    top = build(())
    top.links = links
    return top


def selected_frame(stack: ipywidgets.Stack) -> ipywidgets.Image:
    """The ``ipywidgets.Image`` a :func:`frame_stack` shows now (each Stack's ``selected_index`` followed).

    Example:
        >>> import ipywidgets as widgets
        >>> step = widgets.IntSlider(value=1, min=0, max=2)
        >>> stack = frame_stack([step], lambda v: png_bytes(Figure(figsize=(v[0] + 1, 1)), 10))
        >>> selected_frame(stack) is stack.children[1]
        True
    """
    node = stack
    while hasattr(node, "selected_index"):
        node = node.children[node.selected_index]
    return node


def select_frame(stack: ipywidgets.Stack, controls: Sequence[ipywidgets.ValueWidget]) -> ipywidgets.Image:
    """Select, in each Stack of ``stack`` (a :func:`frame_stack`), the ``controls``' current position.

    The browser does this through the links; a kernel does it here, so that the frame it redraws is the one
    on show even where no browser runs (a script, a test). Returns the selected ``ipywidgets.Image``.

    Example:
        >>> import ipywidgets as widgets
        >>> step = widgets.IntSlider(value=0, min=0, max=2)
        >>> stack = frame_stack([step], lambda v: png_bytes(Figure(figsize=(v[0] + 1, 1)), 10))
        >>> step.value = 2
        >>> select_frame(stack, [step]) is stack.children[2], stack.selected_index
        (True, 2)
    """
    node = stack
    for control in controls:
        node.selected_index = getattr(control, _linked_trait(control))
        node = node.children[node.selected_index]
    return node


def frames(stack: ipywidgets.Stack | ipywidgets.Image) -> Iterator[ipywidgets.Image]:
    """Every ``ipywidgets.Image`` leaf of a :func:`frame_stack`, outermost control slowest.

    Example:
        >>> import ipywidgets as widgets
        >>> step = widgets.IntSlider(value=0, min=0, max=2)
        >>> stack = frame_stack([step], lambda v: png_bytes(Figure(figsize=(v[0] + 1, 1)), 10))
        >>> len(set(frame.value for frame in frames(stack)))
        3
    """
    if not hasattr(stack, "selected_index"):
        yield stack
        return
    for child in stack.children:
        yield from frames(child)


def figure_widget(
    draw: Callable[..., Figure],
    dpi: float = 80,
    colors: int | None = 128,
    live_only: Sequence[str] = (),
    **controls: ipywidgets.ValueWidget,
) -> ipywidgets.interactive:
    """``ipywidgets.interactive`` over ``draw``, its picture a :func:`frame_stack` of the Figures it returns.

    Every control not named in ``live_only`` is scrubbed in advance: one frame per combination of their
    values (``draw`` called with the ``live_only`` controls at their initial values), switched in the browser,
    so the widget works on a static page. With a kernel, each change also redraws the figure and writes it
    into the selected frame; the ``live_only`` controls (continuous ones, which have no positions) work
    only then.

    Args:
        draw: called with the controls' values as keyword arguments; returns a Figure.
        dpi, colors: resolution and palette size of the pictures (:func:`png_bytes`).
        live_only: names of the controls that are not precomputed.
        **controls: name -> an ipywidgets control, one per argument of ``draw``; a precomputed one is a
            selection or a 0-based ``IntSlider`` (:func:`control_values`).

    Returns: an ``ipywidgets.interactive`` whose children are the controls, the picture (the Stack, also in
    ``.picture``) and interactive's own output area, where an error of ``draw`` is shown. ``.result`` holds
    the last Figure.

    Example:
        >>> import ipywidgets as widgets
        >>> def draw(width: int, height: float) -> Figure:
        ...     return Figure(figsize=(width, height))
        >>> widget = figure_widget(draw, dpi=20, live_only=["height"],
        ...                        width=widgets.SelectionSlider(options=[1, 2, 3], value=1),
        ...                        height=widgets.FloatSlider(value=1.0, min=0.5, max=2.0))
        >>> len(list(frames(widget.picture))), widget.children[2] is widget.picture
        (3, True)
        >>> widget.children[0].value = 2
        >>> float(widget.result.get_figwidth()), selected_frame(widget.picture) is widget.picture.children[1]
        (2.0, True)
    """
    import ipywidgets as widgets

    scrubbed = [name for name in controls if name not in live_only]
    start = {name: control.value for name, control in controls.items()}

    def frame(values: tuple) -> bytes:
        return png_bytes(draw(**{**start, **dict(zip(scrubbed, values, strict=True))}), dpi, colors)

    picture = frame_stack([controls[name] for name in scrubbed], frame)

    @functools.wraps(draw)
    def update(**values) -> Figure:
        fig = draw(**values)
        select_frame(picture, [controls[name] for name in scrubbed]).value = png_bytes(fig, dpi, colors)
        return fig

    widget = widgets.interactive(update, clear_output=False, **controls)
    widget.children = (*widget.children[:-1], picture, widget.children[-1])
    widget.picture = picture
    return widget
