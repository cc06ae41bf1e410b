"""Helpers for the browser tests: find Debian's chromium, start and stop servers by process id.

The tests drive the system chromium through the Python ``playwright`` package (``executable_path``), never a
browser downloaded by ``playwright install``. Without chromium they skip locally and fail in CI (``CI=true``).

Run as a script to refresh the README's screenshot of the built site::

    python tests/browser.py screenshot _build/html docs/site.png
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "install it with `apt-get install -y chromium` (Debian's package; never `playwright install`)"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where a missing browser is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def chromium_path() -> str | None:
    """The chromium executable: ``$CHROMIUM`` if set, else ``/usr/bin/chromium`` or one on ``PATH``."""
    candidates = [os.environ.get("CHROMIUM", ""), "/usr/bin/chromium", shutil.which("chromium") or ""]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def require_chromium() -> str:
    """Return chromium's path, or skip the test (locally) / fail it (in CI) with how to install it."""
    import pytest

    path = chromium_path()
    if path is None:
        message = f"chromium not found: {INSTALL_HINT}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        message = "the Python package playwright is missing: `pip install -e '.[dev]'`"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def chromium(executable: str, viewport: tuple[int, int] = (1280, 900)) -> Iterator:
    """Yield a headless chromium ``BrowserContext`` (playwright); closed on exit, even after a failure.

    Playwright's sync API allows one instance per thread at a time: use it from module-scoped fixtures.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            try:
                yield context
            finally:
                context.close()
        finally:
            browser.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers (any HTTP status below 500); fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"no answer from {url} within {timeout:.0f} s")


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a server started by :func:`start_server` and its children, by its process-group id."""
    if process.poll() is not None:
        return
    pgid = process.pid  # start_new_session=True: the server leads its own process group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=grace)


@contextlib.contextmanager
def start_server(
    command: list[str], ready_url: str, log: Path, env: dict | None = None, timeout: float = 60.0
) -> Iterator[subprocess.Popen]:
    """Run ``command`` in its own process group until ``ready_url`` answers; stop it by pid on exit.

    Its output goes to ``log``, which is printed when the server fails to start.
    """
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    try:
        try:
            wait_for_http(ready_url, process, timeout)
        except (RuntimeError, TimeoutError) as error:
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{error}\n--- server log ---\n{tail}") from None
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def static_server(directory: Path, log: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 with ``python -m http.server``; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(directory)]
    url = f"http://127.0.0.1:{port}/"
    with start_server(command, url, log, timeout=30):
        yield url


# -- ipywidgets in a page: find a control by its label, move it, see which picture a widget shows ----------
PICTURE_DIGEST = """async img => {
  const data = await (await fetch(img.src)).arrayBuffer();
  const digest = await crypto.subtle.digest('SHA-256', data);
  return Array.from(new Uint8Array(digest), b => b.toString(16).padStart(2, '0')).join('');
}"""


def control(container, label: str):
    """The widget box (slider, toggle buttons, dropdown ...) inside ``container`` described ``label``."""
    named = re.compile(rf"^\s*{re.escape(label)}\s*$")
    labels = container.locator(".widget-label:visible").filter(has_text=named)
    assert labels.count() == 1, f"expected one '{label}' control, found {labels.count()}"
    return labels.locator("xpath=..")  # ipywidgets puts a control's description label inside its box


def shown_picture(container) -> str | None:
    """SHA-256 of the bytes of the one widget image (``img.widget-image``) visible in ``container``, or None
    while there is none (a frame Stack shows one child at a time; its ``src`` is a blob URL, new per view)."""
    from playwright.sync_api import Error

    images = container.locator("img.widget-image:visible")
    try:
        return images.first.evaluate(PICTURE_DIGEST) if images.count() == 1 else None
    except Error:  # the image was replaced while it was read
        return None


def wait_for_picture(
    container, accept: Callable[[str], bool] = lambda digest: True, timeout: float = 90.0
) -> str:
    """Poll :func:`shown_picture` until it is accepted; return it."""
    deadline = time.monotonic() + timeout
    while (digest := shown_picture(container)) is None or not accept(digest):
        assert time.monotonic() < deadline, f"the widget's picture did not change (still {digest})"
        time.sleep(0.2)
    return digest


def slider_key(box) -> str:
    """The arrow key that moves a slider: left, unless it is at its minimum."""
    handle = box.locator(".noUi-handle")
    now, low = (float(handle.get_attribute(name)) for name in ("aria-valuenow", "aria-valuemin"))
    return "ArrowLeft" if now > low else "ArrowRight"


def move_slider(box, key: str | None = None) -> tuple[str, str]:
    """Press an arrow key (``key``, else :func:`slider_key`) on a slider's handle; return the readout
    before and after."""
    handle = box.locator(".noUi-handle")
    handle.scroll_into_view_if_needed()
    key = key or slider_key(box)
    before = box.locator(".widget-readout").inner_text().strip()
    handle.focus()
    handle.press(key)
    deadline = time.monotonic() + 30
    while (after := box.locator(".widget-readout").inner_text().strip()) == before:
        assert time.monotonic() < deadline, "the slider did not move"
        time.sleep(0.1)
    return before, after


def change_choice(box) -> Callable[[], object]:
    """Pick another value in a slider, toggle buttons or dropdown; return a function that picks it back."""
    if box.locator(".noUi-handle").count():
        key = slider_key(box)
        move_slider(box, key)
        return lambda: move_slider(box, "ArrowRight" if key == "ArrowLeft" else "ArrowLeft")
    if box.locator("button").count():
        active = box.locator("button.mod-active").inner_text()
        box.locator("button:not(.mod-active)").first.click()
        return lambda: box.locator("button", has_text=active).click()
    select = box.locator("select")
    options = select.locator("option").evaluate_all("els => els.map(e => e.value)")
    current = select.input_value()
    select.select_option(next(o for o in options if o != current))
    return lambda: select.select_option(current)


def screenshot_site(html: Path, out: Path, page: str = "chapters/04_patch_extraction.html") -> None:
    """Save a compact PNG of one page of the built site (for the README); must stay under 300 KB."""
    executable = chromium_path()
    if executable is None:
        raise SystemExit(f"chromium not found: {INSTALL_HINT}")
    log = out.with_suffix(".server.log")
    try:
        with static_server(html, log) as url, chromium(executable, viewport=(1200, 750)) as context:
            tab = context.new_page()
            tab.goto(url + page, wait_until="load")
            tab.evaluate("async () => { if (window.MathJax?.startup) await MathJax.startup.promise; }")
            # show the page's first figure, with the text just above it
            tab.evaluate(
                """() => { const img = document.querySelector('article .cell_output img');
                           if (img) window.scrollTo(0, img.getBoundingClientRect().top + scrollY - 260); }"""
            )
            tab.wait_for_timeout(300)
            tab.screenshot(path=str(out), type="png")
    finally:
        log.unlink(missing_ok=True)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "screenshot":
        screenshot_site(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
