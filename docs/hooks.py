"""mkdocs hooks (mkdocs.yml): the site's home page is README.md, read as it
is at build time, so that the front door's text has one home. Links are
written to work on GitHub; here the README's links into docs/
(``docs/vector.md``) become links between pages (``vector.md``), and the
pages' links to the README (``../README.md``) links to the home page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri == "index.md":
        return README.read_text(encoding="utf-8").replace("](docs/", "](")
    return markdown.replace("](../README.md", "](index.md")
