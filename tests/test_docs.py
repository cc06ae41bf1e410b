"""Documentation checks: every docstring example runs, and every public object has a docstring with one.

The examples are doctests (``>>>`` lines with their expected output), run per module with ELLIPSIS and
NORMALIZE_WHITESPACE. The audit lists every public function or class (no leading underscore, defined in its
module) of every ``mistlib`` module, ``__main__`` modules aside, that lacks a docstring or an ``Example:``.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest
import torch

import mistlib

MODULES = ["mistlib"] + sorted(
    info.name
    for info in pkgutil.walk_packages(mistlib.__path__, prefix="mistlib.")
    if info.name.rsplit(".", 1)[-1] != "__main__"
)


def public_objects(module: ModuleType) -> dict[str, object]:
    """``{"mistlib.x.name": obj}`` for the functions and classes ``module`` defines, not named ``_...``."""
    found = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj)):
            found[f"{module.__name__}.{name}"] = obj
    return found


def docstring_problem(obj: object) -> str | None:
    """Why ``obj``'s docstring falls short (no docstring, or no ``Example:`` with ``>>>`` lines), or None."""
    doc = obj.__doc__
    name = getattr(obj, "__name__", "")
    generated = dataclasses.is_dataclass(obj) and (doc or "").startswith(f"{name}(")  # dataclass's own
    if not doc or not doc.strip() or generated:
        return "no docstring"
    if "Example" not in doc or ">>>" not in doc:
        return "no Example section with >>> lines"
    return None


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MIST_DATA_DIR", str(tmp_path / "data"))  # datasets and downloads stay out of the repo
    monkeypatch.setenv("MIST_QUIET", "1")
    monkeypatch.chdir(tmp_path)  # and so does anything written to a relative path
    module = importlib.import_module(name)
    with torch.random.fork_rng(devices=[]):  # examples may seed the global generator; other tests keep theirs
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} docstring examples of {name} failed (see the captured output)"
    )


def test_every_public_object_has_a_docstring_with_an_example() -> None:
    problems = {}
    for name in MODULES:
        for qualname, obj in public_objects(importlib.import_module(name)).items():
            problem = docstring_problem(obj)
            if problem is not None:
                problems[qualname] = problem
    missing = [f"{qualname}: {problem}" for qualname, problem in sorted(problems.items())]
    assert not missing, "public objects without a docstring or an example:\n" + "\n".join(missing)
