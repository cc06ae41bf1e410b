"""Chapters open in JupyterLab as paired notebooks, from `make lab` (root chapters/) or from the repo root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jupyter_server.services.contents.largefilemanager import LargeFileManager
from jupytext.sync_contentsmanager import build_sync_jupytext_contents_manager_class

ROOT = Path(__file__).resolve().parents[1]
ContentsManager = build_sync_jupytext_contents_manager_class(LargeFileManager)


@pytest.mark.parametrize(
    "root, path", [("chapters", "04_patch_extraction.py"), (".", "chapters/04_patch_extraction.py")]
)
def test_a_py_chapter_opens_as_a_notebook_with_the_outputs_of_its_ipynb(root, path):
    manager = ContentsManager(root_dir=str(ROOT / root))
    model = manager.get(path)
    assert model["type"] == "notebook"
    outputs = sum(len(cell.get("outputs", [])) for cell in model["content"].cells if cell.cell_type == "code")
    assert outputs >= 10  # read from the paired .ipynb: the .py holds no outputs
    assert manager.get(path, content=False)["type"] == "notebook"


def test_lab_opens_python_files_with_the_jupytext_notebook_viewer():
    overrides = json.loads((ROOT / "docs" / "lab" / "overrides.json").read_text())
    assert (
        overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"]
        == "Jupytext Notebook"
    )
    assert "docs/lab/overrides.json" in (ROOT / "Makefile").read_text()
