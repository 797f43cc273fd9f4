"""The book's structure: every chapter is in the table of contents, executed in order, and complete."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("*.ipynb"))
# Chapters that build a gptmini module must show its code by inclusion (chapters 10, 11, A use the above).
BUILDS_A_MODULE = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "12")


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part["chapters"]]
    return files


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _markdown(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")


def test_every_chapter_is_in_the_toc_and_every_toc_entry_exists():
    files = _toc_files()
    for nb in NOTEBOOKS:
        assert f"chapters/{nb.stem}" in files, f"{nb.name} is not listed in _toc.yml"
    for f in files:
        assert any((ROOT / f).with_suffix(s).is_file() for s in (".md", ".ipynb")), (
            f"_toc.yml lists missing {f}"
        )


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_was_run_top_to_bottom_and_is_clean(nb):
    last = 0
    for i, cell in enumerate(_cells(nb)):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        n = cell["execution_count"]
        assert n is not None and n > last, f"cell {i} not executed in order: run Restart & Run All"
        last = n
        ignored = "NBVAL_IGNORE_OUTPUT" in "".join(cell["source"])
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            assert out.get("output_type") != "error", f"cell {i} stored an error"
            assert ignored or out.get("name") != "stderr", f"cell {i} stored stderr: {text[:120]!r}"
            assert not re.search(r" at 0x[0-9a-f]{6,}", text), f"cell {i} shows a memory address"
            assert ignored or not re.search(r"(/root/|/home/\w+/|/tmp/|/work/)", text), (
                f"cell {i} shows a local path"
            )


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_every_part_of_a_chapter(nb):
    text = _markdown(nb)
    first = "".join(_cells(nb)[0]["source"])
    assert first.startswith("# "), "a chapter opens with its title"
    assert "What you will learn" in first
    assert ":class: dropdown" in text and re.search(r"^#+ Exercises", text, re.M), (
        "exercises with hidden solutions"
    )
    assert re.search(r"^#+ Summary", text, re.M)
    assert "{cite}" in text, "cite the literature from references.bib"
    if nb.stem[:2] in BUILDS_A_MODULE:
        shown = [
            "".join(c["source"])
            for c in _cells(nb)
            if c["cell_type"] == "code" and "show_source(" in "".join(c["source"])
        ]
        assert any('"gptmini/' in s for s in shown), (
            "show the package's code with show_source, never paste it"
        )
    code = json.dumps(_cells(nb))
    assert "ipywidgets" in code, "an interactive explorer"
