"""The website, checked the way a reader sees it: built from the committed notebooks, opened in chromium.

The site is built once per session into a temporary folder (execution off: the committed .ipynb are the
outputs, which nbval regresses and test_project keeps in sync with their .py), served on 127.0.0.1, and every
page of the table of contents is opened in a real browser. Screenshots go to ``_build/screenshots/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from browser import ROOT, change_choice, chromium, control, require_chromium, static_server, wait_for_picture

SCREENSHOTS = ROOT / "_build" / "screenshots"
BOOK_TITLE = yaml.safe_load((ROOT / "book.yml").read_text())["title"]


def toc_files() -> list[str]:
    """Every page of the book in reading order (the root first), as paths without suffix."""
    toc = yaml.safe_load((ROOT / "toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [entry["file"] for entry in part["chapters"]]
    return files


PAGES = toc_files()
CHAPTERS = [f for f in PAGES if f.startswith("chapters/")]


def notebook(page: str) -> dict:
    return json.loads((ROOT / f"{page}.ipynb").read_text())


def markdown_text(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def chapter_title(nb: dict) -> str:
    """The chapter's H1 (``# 4. Patch extraction``) as plain text, which the page title must carry."""
    match = re.search(r"^# (.+)$", markdown_text(nb), flags=re.MULTILINE)
    assert match, "a chapter must open with an H1 title"
    return re.sub(r"[*_`]", "", match.group(1)).strip()


def test_toc_lists_the_chapters_in_paper_order_then_the_appendix():
    numbers = [int(Path(c).name[:2]) for c in CHAPTERS]
    assert numbers == list(range(1, 10)), CHAPTERS  # §1–§8 of the paper, then appendix chapter 9
    assert PAGES[-1] == "bibliography" and PAGES[0] == "index"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """Build the book once (``-W``: any warning fails) and serve it; yields the base URL."""
    chromium_exe = require_chromium()
    missing = [c for c in CHAPTERS if not (ROOT / f"{c}.ipynb").exists()]
    assert not missing, f"chapters listed in toc.yml but not written yet: {missing}"
    out = tmp_path_factory.mktemp("site")
    start = time.monotonic()
    build = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--config", "book.yml"]
        + ["--toc", "toc.yml"]
        + ["-W", "--keep-going", "--path-output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"book build failed:\n{build.stdout[-6000:]}\n{build.stderr[-6000:]}"
    print(f"site built in {time.monotonic() - start:.1f} s")
    html = out / "_build" / "html"
    assert (html / "index.html").exists()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with static_server(html, out / "server.log") as url:
        yield url, chromium_exe


@pytest.fixture(scope="module")
def context(site):
    url, executable = site
    with chromium(executable) as ctx:
        yield ctx


class Watched:
    """A page with its console errors, uncaught exceptions and failed requests recorded."""

    def __init__(self, context):
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"exception: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.page.on(
            "response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}")
        )

    def open(self, url: str) -> None:
        self.page.goto(url, wait_until="load")
        # MathJax 3 (deferred, loaded only on pages with math) typesets asynchronously; its startup promise
        # resolves once the page is typeset.
        self.page.evaluate(
            """async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
                                 await MathJax.startup.promise; } }"""
        )

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def tab(context):
    watched = Watched(context)
    yield watched
    watched.close()


def page_url(base: str, page: str) -> str:
    return f"{base}{page}.html"


@pytest.mark.browser
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: Path(c).name)
def test_chapter_page(site, tab, chapter: str):
    base, _ = site
    nb = notebook(chapter)
    tab.open(page_url(base, chapter))
    page = tab.page
    name = Path(chapter).name
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    title = chapter_title(nb)
    assert page.title() == f"{title} — {BOOK_TITLE}"
    assert page.locator("article h1").first.inner_text().strip().rstrip("#").strip() == title

    # figures: the notebook's PNG outputs are embedded and every image on the page actually loaded
    images = page.eval_on_selector_all(
        "article img", "els => els.map(e => ({src: e.src, complete: e.complete, w: e.naturalWidth}))"
    )
    assert any(i["w"] > 0 for i in images), f"no figure on {name}: every chapter page must show one (issue 5)"
    broken = [i["src"][:100] for i in images if not (i["complete"] and i["w"] > 0)]
    assert not broken, f"images that did not load: {broken}"

    # math: typeset by the offline MathJax, no TeX error, no display math left raw
    source = markdown_text(nb)
    if "$" in source:
        assert page.locator("article mjx-container").count() > 0, "math was not typeset"
    assert page.locator("article mjx-merror").count() == 0, "MathJax reported a TeX error"
    prose = page.evaluate(
        """() => { const a = document.querySelector('article').cloneNode(true);
                   a.querySelectorAll('pre, code, mjx-container, script').forEach(e => e.remove());
                   return a.innerText; }"""
    )
    assert "$$" not in prose, "raw display math ($$) left on the page"

    # widgets: the saved state is drawn statically by the vendored html-manager
    if "widgets" in nb["metadata"]:
        assert page.locator("article .jupyter-widgets").count() > 0, "saved widget state was not rendered"

    # exercises: solutions are folded
    if "<details" in source:
        details = page.locator("article details")
        assert details.count() > 0
        assert page.locator("article details[open]").count() == 0, "a solution is unfolded"

    # the page links its notebook, and the link serves the notebook
    link = page.locator('a[href$=".ipynb"]').first
    href = link.get_attribute("href")
    assert href and href.endswith(f"{name}.ipynb"), href
    served = page.request.get(link.evaluate("a => a.href"))
    assert served.ok and json.loads(served.body())["cells"], "the notebook link is broken"

    # navigation: "next" leads to the next page of the table of contents
    expected_next = PAGES[PAGES.index(chapter) + 1]
    with page.expect_navigation():
        page.locator("a.right-next").click()
    assert page.url.split("#")[0] == page_url(base, expected_next)

    assert not tab.problems, "\n".join(tab.problems)


@pytest.mark.browser
def test_landing_page(site, tab):
    base, _ = site
    tab.open(base + "index.html")
    page = tab.page
    page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)
    assert page.title().startswith(BOOK_TITLE)
    assert "The widgets work on this website too" in page.locator("article").inner_text()
    sidebar = page.locator("nav.bd-docs-nav").inner_text()
    for caption in ("Foundations", "The method", "Evidence"):
        assert caption in sidebar
    with page.expect_navigation():
        page.locator("a.right-next").click()
    assert page.url == page_url(base, CHAPTERS[0])
    assert not tab.problems, "\n".join(tab.problems)


@pytest.mark.browser
def test_bibliography_page(site, tab):
    base, _ = site
    tab.open(base + "bibliography.html")
    entries = tab.page.locator("article .citation, article dl.citation > dt")
    text = tab.page.locator("article").inner_text().lower()
    assert entries.count() >= 40
    for needle in ("multiple instance spatial transformer", "spatial transformer networks", "lf-net"):
        assert needle in text
    assert not tab.problems, "\n".join(tab.problems)


def test_readme_screenshot_is_small():
    """The README's picture of the site (``python tests/browser.py screenshot _build/html docs/site.png``)."""
    png = ROOT / "docs" / "site.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 300 * 1024


MENU_PAGE = "chapters/04_patch_extraction"


@pytest.mark.browser
def test_chapter_menu_opens_and_closes_on_a_phone(site, tab):
    """At 390 px the sidebar is hidden behind ☰, which must open it as a dialog (theme bug #2451, fixed by
    docs/_static/sidebar-toggles.js) with the chapter links, and Escape must close it."""
    base, _ = site
    page = tab.page
    page.set_viewport_size({"width": 390, "height": 844})
    tab.open(page_url(base, MENU_PAGE))
    menu = page.locator("#pst-primary-sidebar-modal")
    assert not page.locator("#pst-primary-sidebar").is_visible(), "at phone width the sidebar starts hidden"
    page.locator(".primary-toggle:visible").first.click()
    page.wait_for_function("document.getElementById('pst-primary-sidebar-modal').open")
    link = menu.locator("a", has_text="Training by lifting")
    assert link.is_visible(), "the open menu shows the chapter links"
    page.keyboard.press("Escape")
    page.wait_for_function("!document.getElementById('pst-primary-sidebar-modal').open")
    page.locator(".primary-toggle:visible").first.click()
    with page.expect_navigation():
        menu.locator("a", has_text="Training by lifting").click()
    assert page.url.split("#")[0] == page_url(base, "chapters/06_training_by_lifting")
    assert not tab.problems, "\n".join(tab.problems)


@pytest.mark.browser
def test_sidebar_button_collapses_the_sidebar_on_a_desktop(site, tab):
    base, _ = site
    tab.open(page_url(base, MENU_PAGE))
    page = tab.page
    sidebar = page.locator("#pst-primary-sidebar")
    assert sidebar.is_visible()
    page.locator(".primary-toggle:visible").first.click()
    hidden = "getComputedStyle(document.getElementById('pst-primary-sidebar')).visibility === 'hidden'"
    page.wait_for_function(hidden)
    page.locator(".primary-toggle:visible").first.click()
    page.wait_for_function(f"!({hidden})")
    assert not tab.problems, "\n".join(tab.problems)


# The controls of each scrubbing widget whose pictures were saved for every position (chapter 4's scale
# range, softmax window and strength are continuous: they redraw only with a kernel).
SCRUBBED = {
    "chapters/04_patch_extraction": ["K", "scales"],
    "chapters/05_task_networks": ["placed"],
    "chapters/06_training_by_lifting": ["step", "stage", "image"],
    "chapters/07_results": ["test image", "method"],
}


@pytest.mark.browser
@pytest.mark.parametrize("chapter", list(SCRUBBED), ids=lambda c: Path(c).name)
def test_scrubbing_widgets_switch_their_picture_without_a_kernel(site, tab, chapter: str):
    """Moving a control shows another saved frame (the picture's bytes change), and moving it back shows
    the first one again: the frames are switched in the browser by the widgets' links, with no kernel."""
    base, _ = site
    tab.open(page_url(base, chapter))
    page = tab.page
    for label in SCRUBBED[chapter]:
        labelled = page.locator(".widget-label").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
        widget = page.locator("article .cell_output").filter(has=labelled)
        assert widget.count() == 1, f"expected one widget with a '{label}' control, found {widget.count()}"
        box = control(widget, label)
        try:
            first = wait_for_picture(widget, timeout=30)
            undo = change_choice(box)
            wait_for_picture(widget, lambda now, first=first: now != first, timeout=10)
            undo()
            wait_for_picture(widget, lambda now, first=first: now == first, timeout=10)
        except AssertionError:
            page.screenshot(path=str(SCREENSHOTS / f"scrub-{Path(chapter).name}-{label}.png"), full_page=True)
            raise
    assert not tab.problems, "\n".join(tab.problems)


def _luminance(rgb: str) -> float:
    """Relative luminance (WCAG 2) of a CSS ``rgb(r, g, b)`` colour."""
    channels = [int(v) / 255 for v in re.findall(r"\d+", rgb)[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


@pytest.mark.browser
def test_saved_widgets_are_readable_in_dark_mode(site, tab):
    """In dark mode a widget's labels must contrast with what is behind them (WCAG ratio ≥ 4.5), and the
    widget must not sit in a light box (the theme's default for widget areas)."""
    base, _ = site
    tab.open(page_url(base, MENU_PAGE))
    page = tab.page
    switch = page.locator(".theme-switch-button:visible").first
    for _ in range(3):  # the switch cycles light → dark → auto
        if page.evaluate("document.documentElement.dataset.theme") == "dark":
            break
        switch.click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    colours = page.evaluate(
        """() => { const w = document.querySelector('article .jupyter-widgets');
                   const behind = e => { for (; e; e = e.parentElement) {
                       const c = getComputedStyle(e).backgroundColor;
                       if (c !== 'rgba(0, 0, 0, 0)') return c; }
                     return 'rgb(255, 255, 255)'; };
                   const label = w.querySelector('.widget-label, .widget-readout');
                   return {text: getComputedStyle(label).color, back: behind(label)}; }"""
    )
    text, back = _luminance(colours["text"]), _luminance(colours["back"])
    contrast = (max(text, back) + 0.05) / (min(text, back) + 0.05)
    assert back < 0.1, f"the widget sits on a light background in dark mode: {colours}"
    assert contrast >= 4.5, f"widget labels unreadable in dark mode: {colours}, contrast {contrast:.1f}"
    assert not tab.problems, "\n".join(tab.problems)
