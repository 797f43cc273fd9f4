"""Sphinx extension: serve MathJax and the ipywidgets embedder from the built book itself.

Readers open the book locally, often where public CDNs are slow or blocked, so no page may load a
script from the network. MathJax 3 comes from the PyPI package ``django-static-mathjax`` (installed by
requirements.txt); the widget embedder from the npm package ``@jupyter-widgets/html-manager``, fetched
with ``npm pack`` at build time and cached in ``.cache/npm``. Neither lives in ``html_static_path``,
because Jupyter Book adds every script found there to every page: MathJax is added by Sphinx's mathjax
extension, the widget script by MyST-NB, and only to pages with widgets.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tarfile
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"
MATHJAX_SCRIPT = "mathjax/tex-chtml.js"
WIDGETS_SCRIPTS = ("widgets/mathjax-bridge.js", "widgets/embed.js")  # in this order
HERE = Path(__file__).parent
# MathJax's speech-rule engine (sre) is only loaded on request from the menu; it is most of the size.
MATHJAX_SKIP = ("sre", "*.map")


def _mathjax_es5() -> Path:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "MathJax is missing: install the PyPI package django-static-mathjax (requirements.txt)"
        )
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError(f"no MathJax 3 es5/tex-chtml.js under {es5}")
    return es5


def _html_manager_dist(cache: Path) -> Path | None:
    dist = cache / "package" / "dist"
    if (dist / "embed.js").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        logger.info("offline_assets: npm not found; widgets will show their static figures only")
        return None
    cache.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [npm, "pack", HTML_MANAGER, "--pack-destination", str(cache), "--silent"],
        capture_output=True,
        text=True,
        check=True,
    )
    tarball = cache / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as tar:
        tar.extractall(cache, filter="data")
    return dist


def _config_inited(app: Sphinx, config) -> None:
    config.mathjax_path = MATHJAX_SCRIPT
    app._offline_widgets = _html_manager_dist(Path(app.srcdir) / ".cache" / "npm")
    config.nb_ipywidgets_js = {script: {} for script in WIDGETS_SCRIPTS} if app._offline_widgets else {}


def _build_finished(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    shutil.copytree(
        _mathjax_es5(), static / "mathjax", dirs_exist_ok=True, ignore=shutil.ignore_patterns(*MATHJAX_SKIP)
    )
    if app._offline_widgets:
        shutil.copytree(
            app._offline_widgets,
            static / "widgets",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("*.map", "libembed-amd.js", "embed-amd.js"),
        )
        shutil.copy(HERE / "static" / "mathjax-bridge.js", static / "widgets" / "mathjax-bridge.js")


def _drop_thebe(app: Sphinx) -> None:
    # Readers run the notebooks themselves; the book offers no live code through Binder, so
    # sphinx-thebe (enabled by Jupyter Book) would only add scripts that point at a CDN.
    for event in ("env-before-read-docs", "doctree-resolved"):
        for listener in list(app.events.listeners.get(event, [])):
            if getattr(listener.handler, "__module__", "").startswith("sphinx_thebe"):
                app.disconnect(listener.id)


def setup(app: Sphinx) -> dict:
    _drop_thebe(app)
    app.connect("config-inited", _config_inited, priority=900)
    app.connect("build-finished", _build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
