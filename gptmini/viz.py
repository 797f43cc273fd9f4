"""What the book shows besides prose: the package's own source code, and explorers that need no kernel.

``show_source`` displays the real source of a package object (or of a function in a script such as a
benchmark) as a highlighted Python block, in Jupyter and in the HTML book alike. Its plain-text form
is the source itself, which ``pytest --nbval`` compares: a change to the package fails validation of
every chapter that shows the changed code until the chapter is re-run, so the book cannot drift.

``explorer`` turns a drawing function and a few selection controls into an interactive figure whose
outputs are computed once, for every combination of the controls' values, when the notebook runs.
The controls switch between them in the browser (``Stack`` widgets driven by ``jsdlink``), so the
explorer responds in a live notebook and in the static HTML book, where no kernel is running.
"""

from __future__ import annotations

import ast
import base64
import inspect
import itertools
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_GRID = 400  # outputs precomputed per explorer: each one travels inside the page


class Source:
    """Code blocks that Jupyter and the HTML book show highlighted (text/markdown) and nbval compares."""

    def __init__(self, blocks: list[tuple[str, str, str]]):
        self.blocks = blocks  # (file shown, qualified name, source)

    def _repr_markdown_(self) -> str:
        return "\n\n".join(f"`{path}` · `{name}`\n\n{_fenced(code)}" for path, name, code in self.blocks)

    def __repr__(self) -> str:
        return "\n\n".join(f"# {path}: {name}\n{code}" for path, name, code in self.blocks)


def _fenced(code: str) -> str:
    """A Markdown code block whose fence is longer than any run of backticks inside the code."""
    fence = "`" * max([3] + [len(run) + 1 for run in re.findall("`+", code)])
    return f"{fence}python\n{code}\n{fence}"


def show_source(*targets: object) -> Source:
    """The source of package objects, or of ``"benchmarks/script.py:Qualified.name"`` strings, for display."""
    if not targets:
        raise ValueError("show_source needs at least one object or 'file.py:name' string")
    return Source([_locate(t) for t in targets])


def _locate(target: object) -> tuple[str, str, str]:
    if isinstance(target, str):
        path_text, sep, name = target.partition(":")
        if not sep or not name:
            raise ValueError(f"expected 'path/to/file.py:Qualified.name', got {target!r}")
        path = _find_file(path_text)
    else:
        target = inspect.unwrap(getattr(target, "fget", target))  # a property shows its getter
        name = getattr(target, "__qualname__", None)
        file = inspect.getsourcefile(target) if name else None
        if file is None:
            raise ValueError(f"cannot show the source of {target!r}: not a function, class or method")
        path = Path(file).resolve()
    return _shown_path(path), name, _pyobject(path, name)


def _find_file(path_text: str) -> Path:
    for base in (REPO, Path.cwd()):
        if (base / path_text).is_file():
            return (base / path_text).resolve()
    raise ValueError(f"no file {path_text!r} in the repository ({REPO}) or the current directory")


def _shown_path(path: Path) -> str:
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:  # an installed copy: show the path from the package down
        parts = path.parts
        return "/".join(parts[parts.index("gptmini") :]) if "gptmini" in parts else path.name


def _pyobject(path: Path, qualname: str) -> str:
    """The lines of the class or function ``qualname`` (decorators included), found with ``ast``."""
    text = path.read_text(encoding="utf-8")
    body = ast.parse(text).body
    node = None
    for part in qualname.split("."):
        node = next(
            (
                n
                for n in body
                if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and n.name == part
            ),
            None,
        )
        if node is None:
            raise ValueError(f"{qualname!r} is not defined in {_shown_path(path)}")
        body = node.body
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = text.splitlines()[start - 1 : node.end_lineno]
    return textwrap.dedent("\n".join(lines))


def explorer(render: Callable[..., object], controls: dict, *, layout: list[list[str]] | None = None):
    """Controls over ``render(**values)``, precomputed for every combination, that switch in the browser.

    ``controls`` maps each keyword of ``render`` to a selection widget (``Dropdown``,
    ``SelectionSlider``, ``ToggleButtons``, ...) whose options are the values to precompute.
    ``layout`` groups the controls into rows (default: one row). ``render`` draws with matplotlib
    (``plt.show()``), prints, or displays, as in a notebook cell.
    """
    import ipywidgets as widgets

    for name, control in controls.items():
        if not isinstance(control, widgets.widget_selection._Selection):
            raise ValueError(
                f"control {name!r} is a {type(control).__name__}; an explorer precomputes its outputs, so "
                "every control must offer a fixed list of options (Dropdown, SelectionSlider, ToggleButtons)"
            )
    names = list(controls)
    grid = [list(controls[n].options) for n in names]
    values = [[v[1] if isinstance(v, tuple) else v for v in options] for options in grid]
    size = 1
    for options in values:
        size *= len(options)
    if not 0 < size <= MAX_GRID:
        raise ValueError(f"the controls span {size} combinations; an explorer allows 1 to {MAX_GRID}")

    outputs = {
        combo: _captured(render, dict(zip(names, combo, strict=True))) for combo in itertools.product(*values)
    }

    def stack(depth: int, prefix: tuple) -> widgets.Widget:
        if depth == len(names):
            return outputs[prefix]
        control = controls[names[depth]]
        box = widgets.Stack([stack(depth + 1, prefix + (v,)) for v in values[depth]])
        box.selected_index = control.index
        links.append(widgets.jsdlink((control, "index"), (box, "selected_index")))
        return box

    links = []  # kept on the returned box, so that they live as long as it does
    rows = layout or [names]
    box = widgets.VBox([widgets.HBox([controls[n] for n in row]) for row in rows] + [stack(0, ())])
    box.links = links
    return box


def _captured(render: Callable[..., object], kwargs: dict):
    """An Output widget holding what ``render(**kwargs)`` displays and prints."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.utils.capture import capture_output

    before = set(plt.get_fignums())
    with capture_output() as captured:
        render(**kwargs)
    for number in set(plt.get_fignums()) - before:  # figures drawn but not shown are not left behind
        plt.close(number)
    shown = [
        {"output_type": "display_data", "data": _jsonable(o.data), "metadata": o.metadata or {}}
        for o in captured.outputs
    ]
    if captured.stdout:
        shown.append({"output_type": "stream", "name": "stdout", "text": captured.stdout})
    out = widgets.Output()
    out.outputs = tuple(shown)
    return out


def _jsonable(data: dict) -> dict:
    return {k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for k, v in data.items()}
