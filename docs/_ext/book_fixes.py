"""Sphinx fixes for this book's HTML pages, loaded from book.yml (``sphinx.local_extensions``).

Jupyter Book 1 registers sphinx-thebe's inline configuration script twice, so every page threw
"Identifier 'THEBE_JS_URL' has already been declared" in the browser console. The book does not use thebe
(``launch_buttons.thebe: false``): drop its scripts, and any other script listed twice, from each page.
"""

from __future__ import annotations


def _script_key(script) -> tuple:
    attributes = tuple(sorted(getattr(script, "attributes", {}).items()))
    return (str(getattr(script, "filename", script)), attributes)


def _is_thebe(script) -> bool:
    filename = str(getattr(script, "filename", script) or "")
    body = getattr(script, "attributes", {}).get("body", "")
    return "sphinx-thebe" in filename or "THEBE_JS_URL" in body


def clean_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep each script once, and none of thebe's (``html-page-context`` handler)."""
    seen: set[tuple] = set()
    kept = []
    for script in context.get("script_files", []):
        key = _script_key(script)
        if key in seen or _is_thebe(script):
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", clean_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
