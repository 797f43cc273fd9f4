"""Sphinx extension: a link from every page to the same page in the other edition of the book.

The English edition is built at the root of ``_build/html`` and the Chinese edition (``_ext/i18n.py
build``, ``edition = "zh"``) under ``_build/html/zh``, with the same page names, so the link is a
relative path that works from a web server and from files opened directly.
"""

from __future__ import annotations

from sphinx.application import Sphinx

EDITIONS = {  # this edition: (the other edition's label, its language, the path prefix to it from the root)
    "en": ("中文版", "zh-CN", "zh/"),
    "zh": ("English edition", "en", "../"),
}


def other_edition_href(edition: str, pagename: str) -> str:
    """The relative address, from page ``pagename`` of ``edition``, of the same page in the other."""
    prefix = EDITIONS[edition][2]
    return "../" * pagename.count("/") + prefix + pagename + ".html"


def _add_link(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if doctree is None or "body" not in context:  # the index, search and other generated pages
        return
    label, lang, _ = EDITIONS[app.config.edition]
    href = other_edition_href(app.config.edition, pagename)
    link = f'<p class="edition-switch"><a href="{href}" hreflang="{lang}" lang="{lang}">{label}</a></p>\n'
    context["body"] = link + context["body"]


def setup(app: Sphinx) -> dict:
    app.add_config_value("edition", "en", "html", types=[str])
    app.connect("html-page-context", _add_link)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
