"""Open every page of the built book in headless Chromium, with the network cut off."""

from __future__ import annotations

import functools
import http.server
import os
import posixpath
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
REQUIRED = os.environ.get("GPTMINI_REQUIRE_BROWSER") == "1"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser
CJK = re.compile(r"[\u4e00-\u9fff]")
REDIRECT = re.compile(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', re.IGNORECASE)


def _skip_or_fail(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (GPTMINI_REQUIRE_BROWSER=1, so the browser test may not skip)")
    pytest.skip(reason)


def _pages() -> list[str]:
    skip = {"genindex.html", "search.html"}
    return sorted(
        str(p.relative_to(HTML))
        for p in HTML.rglob("*.html")
        if p.name not in skip and "_static" not in p.parts
    )


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").is_file():
        _skip_or_fail("the book is not built: run `make book` first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _skip_or_fail("no Chromium found (Debian: apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _offline_context(browser):
    context = browser.new_context()
    # Cut the network: anything that is not the local server fails, and is reported.
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if urlparse(route.request.url).hostname == "127.0.0.1"
            else route.abort("internetdisconnected")
        ),
    )
    return context


def _watch(page) -> list[str]:
    errors: list[str] = []
    page.on(
        "console",
        lambda m, e=errors: e.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda exc, e=errors: e.append(f"page error: {exc}"))
    page.on("requestfailed", lambda r, e=errors: e.append(f"failed request: {r.url} ({r.failure})"))
    return errors


def test_every_page_renders_offline(server, browser):
    pages = _pages()
    assert "index.html" in pages and any(p.startswith("chapters/") for p in pages), pages
    english = [p for p in pages if not p.startswith("zh/")]
    missing = [p for p in english if f"zh/{p}" not in pages]
    assert not missing, f"pages without a Chinese edition (make book builds it): {missing}"
    problems: list[str] = []
    context = _offline_context(browser)
    for rel in pages:
        redirect = REDIRECT.search((HTML / rel).read_text(encoding="utf-8"))
        if redirect:  # index.html only forwards to the first page, which is checked in its own right
            target = (HTML / rel).parent / redirect.group(1)
            if not target.is_file():
                problems.append(f"{rel}: redirects to {redirect.group(1)}, which does not exist")
            continue
        page = context.new_page()
        errors = _watch(page)
        response = page.goto(f"{server}/{rel}", wait_until="load")
        if response is None or response.status != 200:
            errors.append(f"HTTP {response.status if response else 'no response'}")
        n_math = page.locator(".math").count()
        if n_math:
            # MathJax 3 signals the end of its first typesetting pass with startup.promise.
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000
            )
            page.evaluate("() => MathJax.startup.promise")
            typeset = page.locator("mjx-container").count()
            if typeset < n_math:
                errors.append(f"math not typeset: {typeset} MathJax containers for {n_math} math elements")
            raw = page.evaluate(
                "() => [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container'))"
                ".map(e => e.textContent.slice(0, 40))"
            )
            if raw:
                errors.append(f"raw TeX left on the page: {raw[:3]}")
        broken = page.evaluate(
            "() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        if broken:
            errors.append(f"images that did not load: {broken[:3]}")
        body = page.inner_text("body")
        if "$$" in body:
            errors.append("a raw '$$' is left in the text")
        link = page.locator(".edition-switch a")
        if link.count() != 1:
            errors.append("no link to the other edition of this page")
        else:
            href = link.get_attribute("href")
            other = posixpath.normpath(posixpath.join(posixpath.dirname(rel), href))
            if not (HTML / other).is_file():
                errors.append(f"the link to the other edition, {href}, leads nowhere")
        if rel.startswith("zh/") and not CJK.search(page.inner_text("article")):
            errors.append("a page of the Chinese edition with no Chinese text")
        if page.locator("script[type='application/vnd.jupyter.widget-view+json']").count():
            page.wait_for_selector(".widget-container, .jupyter-widgets", timeout=20000)
        problems += [f"{rel}: {e}" for e in errors]
        page.close()
    context.close()
    assert not problems, "\n".join(problems)


# What the reader sees of the explorers: the visible outputs of every widget output area.
SHOWN = """() => [...document.querySelectorAll('.widget-output, .jupyter-widgets-output-area')]
    .filter(e => e.checkVisibility()).map(e => e.innerHTML).join('|')"""
# The controls an explorer offers: dropdowns, toggle buttons and selection sliders with two options or more.
CONTROLS = "select, .widget-toggle-buttons, .widget-hslider .noUi-handle"
MAX_PAGE_BYTES = 5_000_000


def _operate(control) -> str:
    """Change one control to another of its values, as a reader would; returns what was done."""
    tag = control.evaluate("e => e.tagName.toLowerCase()")
    if tag == "select":
        n = control.evaluate("e => e.options.length")
        if n < 2:
            return ""
        index = (control.evaluate("e => e.selectedIndex") + 1) % n
        control.select_option(index=index)
        return f"dropdown option {index}"
    if "noUi-handle" in (control.get_attribute("class") or ""):
        now, top = control.get_attribute("aria-valuenow"), control.get_attribute("aria-valuemax")
        control.focus()
        key = "ArrowLeft" if now == top else "ArrowRight"
        control.press(key)
        return f"slider {key}"
    buttons = control.locator("button")
    idle = [
        i for i in range(buttons.count()) if "mod-active" not in (buttons.nth(i).get_attribute("class") or "")
    ]
    if not idle:
        return ""
    buttons.nth(idle[0]).click()
    return f"toggle button {idle[0]}"


def test_every_explorer_responds_offline(server, browser):
    pages = [p for p in _pages() if "widget-state+json" in (HTML / p).read_text(encoding="utf-8")]
    chapters = sorted(HTML.glob("chapters/*.html")) + sorted(HTML.glob("zh/chapters/*.html"))
    assert len(pages) >= 24, (
        f"every chapter of both editions has an explorer with its state embedded; found {pages}"
    )
    problems: list[str] = []
    for html in chapters:
        size = html.stat().st_size
        if size > MAX_PAGE_BYTES:
            problems.append(f"{html.name}: {size / 1e6:.1f} MB, more than {MAX_PAGE_BYTES / 1e6:.0f} MB")
    context = _offline_context(browser)
    for rel in pages:
        page = context.new_page()
        errors = _watch(page)
        page.goto(f"{server}/{rel}", wait_until="load")
        page.wait_for_selector(".widget-output, .jupyter-widgets-output-area", timeout=30000)
        page.wait_for_timeout(500)
        before = page.evaluate(SHOWN)
        if not before.strip() or ("<img" not in before and "<pre" not in before and "<span" not in before):
            errors.append("the explorer shows nothing before it is touched")
        controls = page.locator(CONTROLS)
        operated = 0
        for i in range(controls.count()):
            shown = page.evaluate(SHOWN)
            done = _operate(controls.nth(i))
            if not done:
                continue
            operated += 1
            page.wait_for_timeout(300)
            if page.evaluate(SHOWN) == shown:
                errors.append(f"control {i} ({done}) did not change what the explorer shows")
        if operated == 0:
            errors.append("no control found to operate")
        problems += [f"{rel}: {e}" for e in errors]
        page.close()
    context.close()
    assert not problems, "\n".join(problems)
