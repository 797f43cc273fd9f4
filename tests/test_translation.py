"""The Chinese edition: every message of the English book translated, none fuzzy, markup carried over."""

from __future__ import annotations

import posixpath
import sys
from pathlib import Path

import polib
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_ext"))

import editions  # noqa: E402
import i18n  # noqa: E402


def test_every_message_of_the_book_is_translated(tmp_path):
    """Fails when an English paragraph was added or changed without its translation (`make po`, then translate)."""
    templates = i18n.extract(tmp_path)
    pages = {str(p.relative_to(templates).with_suffix("")) for p in templates.rglob("*.pot")}
    assert "intro" in pages and any(p.startswith("chapters/") for p in pages), pages
    found = i18n.problems(templates)
    assert not found, f"{len(found)} problem(s):\n" + "\n".join(found[:40])


def _catalogues(tmp_path, english: list[str], chinese: dict[str, tuple[str, list[str]]]):
    """A one-page template and catalogue in tmp_path; chinese: msgid -> (msgstr, flags)."""
    pot = polib.POFile()
    for msgid in english:
        pot.append(polib.POEntry(msgid=msgid))
    (tmp_path / "pot").mkdir()
    pot.save(str(tmp_path / "pot" / "page.pot"))
    po = polib.POFile()
    for msgid, (msgstr, flags) in chinese.items():
        po.append(polib.POEntry(msgid=msgid, msgstr=msgstr, flags=flags))
    base = tmp_path / "locales" / i18n.LANGUAGE / "LC_MESSAGES"
    base.mkdir(parents=True)
    po.save(str(base / "page.po"))
    return tmp_path / "pot"


@pytest.mark.parametrize(
    "msgstr, flags, problem",
    [
        ("见 {eq}`eq-gpt` 和 `n_embd`，$d$ 维。", [], None),
        ("", [], "not translated"),
        ("见 {eq}`eq-gpt` 和 `n_embd`，$d$ 维。", ["fuzzy"], "fuzzy"),
        ("见 {eq}`eq-bce` 和 `n_embd`，$d$ 维。", [], "markup differs"),  # another equation
        ("见 {eq}`eq-gpt` 和 n_embd，$d$ 维。", [], "markup differs"),  # the code span lost
        ("见 {eq}`eq-gpt` 和 `n_embd`，$D$ 维。", [], "markup differs"),  # the math changed
        (None, [], "missing"),
    ],
)
def test_the_check_finds_each_kind_of_problem(tmp_path, monkeypatch, msgstr, flags, problem):
    english = "See {eq}`eq-gpt` and `n_embd`, $d$ dimensions."
    chinese = {} if msgstr is None else {english: (msgstr, flags)}
    templates = _catalogues(tmp_path, [english], chinese)
    monkeypatch.setattr(i18n, "LOCALES", tmp_path / "locales")
    found = i18n.problems(templates)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0], found


@pytest.mark.parametrize(
    "edition, page, href",
    [
        ("en", "intro", "zh/intro.html"),
        ("en", "chapters/05_gpt_model", "../zh/chapters/05_gpt_model.html"),
        ("zh", "intro", "../intro.html"),
        ("zh", "chapters/05_gpt_model", "../../chapters/05_gpt_model.html"),
    ],
)
def test_each_page_links_to_the_same_page_of_the_other_edition(edition, page, href):
    assert editions.other_edition_href(edition, page) == href
    # from the page's own folder the address reaches the same page name in the other edition
    here = posixpath.dirname(posixpath.join("/book/zh" if edition == "zh" else "/book", page))
    there = posixpath.join("/book" if edition == "zh" else "/book/zh", page) + ".html"
    assert posixpath.normpath(posixpath.join(here, href)) == there


def test_markup_is_found_in_order_roles_code_math():
    text = r"GPT-2 {cite}`radford2019language` splits `\p{L}+` and `n_embd` at $d$, in{doc}`x`, $$a$$"
    assert i18n.markup(text) == sorted(
        ["{cite}`radford2019language`", r"`\p{L}+`", "`n_embd`", "$d$", "{doc}`x`", "$$a$$"]
    )
