"""Library code shown in the chapters: the source of a function as it is, without its docstring.

The chapters print the functions that implement an equation straight from :mod:`mistlib`, so what a reader
sees is what runs, never a copy.
"""

from __future__ import annotations

import ast
import inspect
import textwrap


def source(obj: object, docstring: bool = False) -> str:
    """The source text of a function, class or method; without its docstring unless ``docstring``.

    Example:
        >>> from mistlib.lifting import heatmap_regression
        >>> print(source(heatmap_regression).splitlines()[0])
        def heatmap_regression(
        >>> "one optimiser step" in source(heatmap_regression)  # a phrase of its docstring
        False
    """
    text = textwrap.dedent(inspect.getsource(obj))
    if docstring:
        return text.rstrip("\n")
    tree = ast.parse(text)
    node = tree.body[0]
    lines = text.splitlines()
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        del lines[first.lineno - 1 : first.end_lineno]
    return "\n".join(lines).rstrip("\n")
