"""An mkdocs hook: links from the docs to the repository's own files point at the site.

The Markdown in ``docs/`` is also read where the repository is browsed, so its pages link
to ``../examples/pool_basics.py``, ``../README.md#quickstart`` or ``../CHANGELOG.md``. The
site has pages for those (the examples page shows every example's source), so those links
are rewritten to them while the site is built. A link to any other file outside ``docs/``
is left alone, and ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import re
from typing import Any

_LINK = re.compile(r"\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")

_PAGES = {
    "README.md": "index.md",
    "CHANGELOG.md": "changelog.md",
}
_ANCHORS: dict[tuple[str, str | None], str] = {
    ("README.md", "#quickstart"): "quickstart.md",
}


def _target(path: str, anchor: str | None, pages: set[str]) -> str | None:
    if (path, anchor) in _ANCHORS:
        return _ANCHORS[(path, anchor)]
    if path in _PAGES:
        return _PAGES[path] + (anchor or "")
    if path == "benchmarks/README.md" and "performance.md" in pages:
        return "performance.md"
    match = re.fullmatch(r"examples/(\w+)\.py", path)
    if match:
        return f"examples.md#{match.group(1)}"
    return None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    pages = {file.src_uri for file in files}
    prefix = "../" * page.file.src_uri.count("/")  # for pages in sub-folders

    def replace(match: re.Match[str]) -> str:
        target = _target(match.group(1), match.group(2), pages)
        return match.group(0) if target is None else f"]({prefix}{target})"

    return _LINK.sub(replace, markdown)
