"""The chapters as a reader runs them: JupyterLab in chromium, "Run All", then the widgets moved by keyboard.

A JupyterLab server (token, 127.0.0.1, its own settings with autosave off) serves copies of the chapter
notebooks with their outputs stripped, so the committed files are never touched and every output seen here
was produced by this run. The server is stopped by its process id when the module ends, pass or fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
from browser import (
    ROOT,
    change_choice,
    chromium,
    control,
    free_port,
    move_slider,
    require_chromium,
    start_server,
    wait_for_picture,
)

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "_build" / "screenshots"
NOTEBOOKS = ["chapters/04_patch_extraction.ipynb", "chapters/06_training_by_lifting.ipynb"]
RUN_TIMEOUT_S = 400  # a chapter executes in < 90 s alone; leave room for a busy 2-core machine

# JupyterLab user settings for the test server: no autosave (the copies stay as they are), no news toast,
# every cell kept in the DOM (JupyterLab 4 otherwise detaches cells scrolled out of view).
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def stripped_copy(source: Path, target: Path) -> None:
    """Copy a notebook without outputs, execution counts or saved widget state."""
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over stripped copies of the chapters; yields (base URL, token, chromium path)."""
    executable = require_chromium()
    missing = [n for n in NOTEBOOKS if not (ROOT / n).exists()]
    assert not missing, f"chapters not written yet: {missing}"
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    for name in NOTEBOOKS:
        stripped_copy(ROOT / name, root / name)
    settings = tmp / "settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    for folder in ("config", "runtime", "workspaces"):
        (tmp / folder).mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or "jupyter"
    command = [
        jupyter,
        "lab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
    ]
    base = f"http://127.0.0.1:{port}/"
    with start_server(command, f"{base}api/status?token={token}", tmp / "lab.log", env=env, timeout=90):
        yield base, token, executable
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def browser_context(lab):
    with chromium(lab[2], viewport=(1400, 1000)) as context:
        yield context


KERNEL_STATE = """() => {
  const w = window.jupyterapp && jupyterapp.shell.currentWidget;
  const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel || !w.content || !w.content.widgets) return null;
  const code = w.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  for (const c of code) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
  }
  return {path: w.context.path, status: kernel.status, cells: code.length,
          pending: code.filter(c => c.model.executionCount === null).length, errors: errors};
}"""


def run_all(page, base: str, token: str, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, run all cells and wait for an idle kernel; fail on an error output."""
    page.goto(f"{base}lab/tree/{notebook}?token={token}")
    page.wait_for_function(
        f"() => {{ const s = ({KERNEL_STATE})(); return s && s.path === {json.dumps(notebook)} "
        "&& s.status === 'idle' && s.cells > 0; }",
        timeout=120_000,
    )
    page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    idle_since = None
    while True:
        state = page.evaluate(KERNEL_STATE)
        if state["errors"]:
            break  # "Run All" stops at the first error
        done = state["status"] == "idle" and state["pending"] == 0
        idle_since = (idle_since or time.monotonic()) if done else None
        if idle_since and time.monotonic() - idle_since > 1.0:
            break
        assert time.monotonic() < deadline, f"{notebook} still running after {RUN_TIMEOUT_S} s: {state}"
        time.sleep(0.5)
    assert not state["errors"], f"{notebook} produced error outputs: {state['errors']}"


def widget_cell(page, label: str):
    """The visible notebook cell whose widget has a control described ``label``."""
    control_label = page.locator(".widget-label:visible").filter(has_text=re.compile(rf"^\s*{label}\s*$"))
    cell = page.locator(".jp-Notebook .jp-Cell").filter(has=control_label)
    cell.first.wait_for(state="visible", timeout=60_000)
    assert cell.count() == 1, f"expected one cell with a '{label}' control, found {cell.count()}"
    return cell.first


@pytest.fixture
def page(browser_context):
    tab = browser_context.new_page()
    yield tab
    tab.close()


def test_chapter4_k_slider_redraws_the_patches(lab, page):
    base, token, _ = lab
    run_all(page, base, token, NOTEBOOKS[0])
    cell = widget_cell(page, "K")
    before = wait_for_picture(cell)  # the first drawing
    k_before, k_after = move_slider(control(cell, "K"))
    assert int(k_after) == int(k_before) + (-1 if int(k_before) > 1 else 1)
    wait_for_picture(cell, lambda now: now != before)
    # a control that has no saved frames: only the kernel can redraw it
    cell = widget_cell(page, "strength")
    before = wait_for_picture(cell)
    move_slider(control(cell, "strength"))
    wait_for_picture(cell, lambda now: now != before)
    page.screenshot(path=str(SCREENSHOTS / "lab-04_patch_extraction.png"))


def test_chapter6_training_scrubber_redraws(lab, page):
    base, token, _ = lab
    run_all(page, base, token, NOTEBOOKS[1])
    cell = widget_cell(page, "step")
    first = wait_for_picture(cell)
    move_slider(control(cell, "step"))
    after_step = wait_for_picture(cell, lambda now: now != first)
    change_choice(control(cell, "stage"))
    wait_for_picture(cell, lambda now: now != after_step)
    page.screenshot(path=str(SCREENSHOTS / "lab-06_training_by_lifting.png"))
