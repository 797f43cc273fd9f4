"""The book's display helpers: package source shown from the file, explorers precomputed over a grid."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from pathlib import Path

import pytest

from gptmini import GPT
from gptmini.generate import generate
from gptmini.model import GPTConfig
from gptmini.viz import MAX_GRID, show_source

ROOT = Path(__file__).resolve().parents[1]


def test_show_source_of_an_object_is_its_source_dedented():
    src = show_source(GPT.forward)
    ((path, name, code),) = src.blocks
    assert (path, name) == ("gptmini/model.py", "GPT.forward")
    assert code == textwrap.dedent(inspect.getsource(GPT.forward)).rstrip("\n")
    assert code.startswith("def forward(")


def test_show_source_text_forms_compare_the_code_and_highlight_it():
    src = show_source(GPTConfig, generate)
    plain, markdown = repr(src), src._repr_markdown_()
    assert plain.startswith("# gptmini/model.py: GPTConfig\n@dataclass\nclass GPTConfig:")
    assert "\n# gptmini/generate.py: generate\n" in plain
    assert markdown.count("```python\n") == 2 and len(re.findall("^```$", markdown, re.M)) == 2
    assert inspect.getsource(generate).strip() in markdown


def test_a_fence_is_longer_than_any_backticks_in_the_code():
    from gptmini.viz import _fenced

    assert _fenced("x = 1") == "```python\nx = 1\n```"
    assert _fenced('s = "````"').startswith("`````python\n")


def test_show_source_of_a_script_function_by_path_and_qualified_name():
    ((path, name, code),) = show_source("benchmarks/ch10_tasks.py:make_batch").blocks
    assert (path, name) == ("benchmarks/ch10_tasks.py", "make_batch")
    assert code.startswith("def make_batch(") and code.rstrip().endswith("return x, y") is not None
    ((_, _, method),) = show_source("gptmini/model.py:GPT.forward").blocks
    assert method == show_source(GPT.forward).blocks[0][2]


def test_show_source_includes_decorators_and_stops_at_the_object():
    code = show_source("gptmini/model.py:GPTConfig").blocks[0][2]
    assert code.startswith("@dataclass\nclass GPTConfig:")
    assert code.count("\nclass ") == 1  # the next class is not included


@pytest.mark.parametrize(
    "target, message",
    [
        ("benchmarks/ch10_tasks.py", "expected 'path/to/file.py:Qualified.name'"),
        ("benchmarks/ch10_tasks.py:", "expected 'path/to/file.py:Qualified.name'"),
        ("benchmarks/nope.py:f", "no file 'benchmarks/nope.py'"),
        ("gptmini/model.py:GPT.no_such_method", "'GPT.no_such_method' is not defined in gptmini/model.py"),
        ("gptmini/model.py:NoSuchClass", "'NoSuchClass' is not defined"),
        (42, "cannot show the source of 42"),
    ],
)
def test_show_source_says_what_is_wrong(target, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        show_source(target)
    with pytest.raises(ValueError, match="at least one"):
        show_source()


def test_no_chapter_uses_literalinclude_and_every_shown_source_still_resolves():
    calls = 0
    for nb in sorted((ROOT / "chapters").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells)
        assert "{literalinclude}" not in text, f"{nb.name}: a literalinclude shows as raw text in Jupyter"
        for target in re.findall(r'"((?:gptmini|benchmarks)/[\w/]+\.py:[\w.]+)"', text):
            show_source(target)  # raises if the object moved or was renamed
            calls += 1
    assert calls >= 50


def _shell():
    pytest.importorskip("ipywidgets")
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def test_explorer_precomputes_every_combination_and_links_controls_to_stacks():
    _shell()
    import ipywidgets as widgets

    from gptmini.viz import explorer

    seen = []

    def render(a, b):
        seen.append((a, b))
        print(f"a={a} b={b}")

    a = widgets.Dropdown(options=[1, 2, 3], value=2)
    b = widgets.ToggleButtons(options=[("x", "X"), ("y", "Y")], value="Y")
    box = explorer(render, {"a": a, "b": b})
    assert sorted(seen) == [(i, j) for i in (1, 2, 3) for j in ("X", "Y")]
    outer = box.children[-1]
    assert isinstance(outer, widgets.Stack) and len(outer.children) == 3
    assert outer.selected_index == 1  # the controls' initial values are shown first
    inner = outer.children[2]
    assert isinstance(inner, widgets.Stack) and inner.selected_index == 1
    shown = inner.children[0].outputs
    assert shown == ({"output_type": "stream", "name": "stdout", "text": "a=3 b=X\n"},)
    links = box.links
    assert any(link.source == (a, "index") and link.target == (outer, "selected_index") for link in links)
    assert sum(link.source == (b, "index") for link in links) == 3  # one per stack of the second level
    assert len(links) == 4


def test_explorer_captures_figures_as_png():
    _shell()
    import ipywidgets as widgets
    import matplotlib

    matplotlib.use("module://matplotlib_inline.backend_inline")
    import matplotlib.pyplot as plt

    from gptmini.viz import explorer

    def render(n):
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot(range(n))
        plt.show()

    before = plt.get_fignums()
    box = explorer(render, {"n": widgets.SelectionSlider(options=[2, 3])})
    pngs = [out.outputs[0]["data"]["image/png"] for out in box.children[-1].children]
    assert len(pngs) == 2 and pngs[0] != pngs[1] and all(p.startswith("iVBOR") for p in pngs)
    assert plt.get_fignums() == before  # no figure left open


def test_explorer_refuses_free_controls_and_huge_grids():
    _shell()
    import ipywidgets as widgets

    from gptmini.viz import explorer

    with pytest.raises(ValueError, match="'text' is a Text; .* fixed list of options"):
        explorer(print, {"text": widgets.Text()})
    big = widgets.Dropdown(options=list(range(MAX_GRID + 1)))
    with pytest.raises(ValueError, match=f"{MAX_GRID + 1} combinations"):
        explorer(print, {"n": big})
