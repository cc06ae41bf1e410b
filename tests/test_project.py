"""Project-level checks: the dependency lists agree, and every chapter pair is in sync."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jupytext
import pytest
from jupytext.compare import compare_notebooks

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"


def _requirement_name(requirement: str) -> str:
    """``'torch==2.13.0'`` -> ``'torch'`` (lower case, ``_`` as ``-``)."""
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment_names() -> set[str]:
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        item = line.split("#", 1)[0].strip()
        if item.startswith("- ") and not item.endswith(":"):
            names.add(_requirement_name(item[2:]))
    return names


def test_runtime_dependencies_are_in_environment_yml():
    env = _environment_names()
    missing = [r for r in _pyproject()["project"]["dependencies"] if _requirement_name(r) not in env]
    assert not missing, f"runtime dependencies missing from environment.yml: {missing}"


def test_torch_is_a_range_for_users_and_pinned_for_our_builds():
    runtime = _pyproject()["project"]["dependencies"]
    assert "torch>=2.4" in runtime  # a library does not forbid the torch its users have
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()  # what make and CI install
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    assert "- torch==2.13.0" in (ROOT / "environment.yml").read_text()


def test_extras_split_test_docs_lab_and_dev_has_them_all():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"test", "docs", "lab", "dev"} <= set(extras)
    assert "mistlib[lab,docs,test]" in extras["dev"] and "Paper" in _pyproject()["project"]["urls"]


def test_requirement_name_parsing():
    assert _requirement_name("torch==2.13.0") == "torch"
    assert _requirement_name("jupyter_book<2") == "jupyter-book"
    assert _requirement_name("-e .[dev]") == "-e"


def pair_mismatch(py_path: Path, ipynb_path: Path) -> str | None:
    """Return why a jupytext pair differs (inputs only, timestamps ignored), or None when in sync."""
    if not ipynb_path.exists():
        return f"{ipynb_path.name} is missing: run `jupytext --sync {py_path}`"
    try:
        compare_notebooks(
            jupytext.read(py_path),
            jupytext.read(ipynb_path),
            fmt="py:percent",
            compare_outputs=False,
        )
    except Exception as error:  # jupytext raises NotebookDifference (and friends) with a diff
        return str(error)
    return None


CHAPTER_SOURCES = sorted(CHAPTERS.glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("source", CHAPTER_SOURCES, ids=lambda p: p.stem)
def test_chapter_pair_in_sync(source: Path):
    problem = pair_mismatch(source, source.with_suffix(".ipynb"))
    assert problem is None, f"{source.name} and its .ipynb are out of sync:\n{problem}"


def test_every_notebook_has_a_source():
    orphans = [nb.name for nb in CHAPTERS.glob("*.ipynb") if not nb.with_suffix(".py").exists()]
    assert not orphans, f"notebooks without a paired .py source: {orphans}"


def test_pair_check_catches_an_edited_source(tmp_path: Path):
    """The sync check itself must fail on a stale pair (nbval would silently run the old inputs)."""
    py = tmp_path / "99_demo.py"
    py.write_text("# %% [markdown]\n# Demo\n\n# %%\nx = 1\nprint(x)\n")
    nb = jupytext.read(py)
    jupytext.write(nb, tmp_path / "99_demo.ipynb")
    assert pair_mismatch(py, tmp_path / "99_demo.ipynb") is None
    py.write_text(py.read_text().replace("x = 1", "x = 2"))
    assert pair_mismatch(py, tmp_path / "99_demo.ipynb") is not None
    (tmp_path / "99_demo.ipynb").unlink()
    assert "missing" in pair_mismatch(py, tmp_path / "99_demo.ipynb")
