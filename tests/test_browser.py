"""Open every page of the built book in headless Chromium, with the network cut off."""

from __future__ import annotations

import functools
import http.server
import os
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


def test_every_page_renders_offline(server, browser):
    pages = _pages()
    assert "index.html" in pages and any(p.startswith("chapters/") for p in pages), pages
    problems: list[str] = []
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
    for rel in pages:
        redirect = REDIRECT.search((HTML / rel).read_text(encoding="utf-8"))
        if redirect:  # index.html only forwards to the first page, which is checked in its own right
            target = (HTML / rel).parent / redirect.group(1)
            if not target.is_file():
                problems.append(f"{rel}: redirects to {redirect.group(1)}, which does not exist")
            continue
        page = context.new_page()
        errors: list[str] = []
        page.on(
            "console",
            lambda m, e=errors: e.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda exc, e=errors: e.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r, e=errors: e.append(f"failed request: {r.url} ({r.failure})"))
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
        if page.locator("script[type='application/vnd.jupyter.widget-view+json']").count():
            page.wait_for_selector(".widget-container, .jupyter-widgets", timeout=20000)
        problems += [f"{rel}: {e}" for e in errors]
        page.close()
    context.close()
    assert not problems, "\n".join(problems)
