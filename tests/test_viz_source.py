"""Tests for mistlib.viz.source: the code the chapters print is the library's, minus the docstring."""

from __future__ import annotations

import ast

from mistlib.lifting import LiftingTrainer, heatmap_regression
from mistlib.viz.source import source


def test_source_drops_only_the_docstring():
    shown = source(heatmap_regression)
    full = source(heatmap_regression, docstring=True)
    assert heatmap_regression.__doc__.strip().splitlines()[0] not in shown
    assert heatmap_regression.__doc__.strip().splitlines()[0] in full
    body = [line for line in full.splitlines() if line not in shown.splitlines()]
    assert all(line.strip() == "" or line.startswith("    ") for line in body)  # only docstring lines went
    compiled = ast.parse(shown).body[0]
    assert (
        compiled.name == "heatmap_regression" and len(compiled.body) == len(ast.parse(full).body[0].body) - 1
    )


def test_a_method_is_dedented_and_parses():
    shown = source(LiftingTrainer.train_step)
    assert shown.startswith("def train_step(")
    assert "heatmap_regression(" in shown and "task_update(" in shown and "self.refine(" in shown
    ast.parse(shown)
