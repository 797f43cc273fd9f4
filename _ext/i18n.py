"""The Chinese edition (中文版): the same notebooks, their prose translated through gettext catalogues.

The English text is the source. Sphinx's gettext builder extracts every paragraph, heading, caption and
list item of the book into message templates (``_build/i18n/gettext/**/*.pot``); the translations live
in ``locales/zh_CN/LC_MESSAGES/**/*.po``, one catalogue per page; a build with ``language = "zh_CN"``
renders the book with each message replaced by its translation. Code, code comments and outputs are
not messages: they stay as they are. When an English paragraph changes, ``update`` marks its old
translation *fuzzy*, and ``check`` (run by ``make test``) fails until it is translated again.

    python _ext/i18n.py update   # extract the messages and merge them into the catalogues
    python _ext/i18n.py check    # every message translated, none fuzzy, markup kept (exit 1 if not)
    python _ext/i18n.py build    # the Chinese edition into _build/html/zh (strict: warnings fail)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"
LANGUAGE = "zh_CN"
BUILD = ROOT / "_build"
BIN = Path(sys.executable).parent

# What the Chinese edition changes in _config.yml; everything else is the English edition's.
ZH_CONFIG = {
    "title": "GPT 是如何工作的",
    "sphinx": {
        "config": {
            "language": LANGUAGE,
            "locale_dirs": ["locales/"],
            "gettext_compact": False,
            "math_eqref_format": "式 {number}",
            "edition": "zh",
        }
    },
}
GETTEXT_CONFIG = {"sphinx": {"config": {"gettext_compact": False, "gettext_uuid": False}}}


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _config_file(extra: dict, where: Path) -> Path:
    config = _merged(yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")), extra)
    local = config["sphinx"].get("local_extensions") or {}  # paths relative to the book, not to `where`
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in local.items()}
    where.mkdir(parents=True, exist_ok=True)
    path = where / "_config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _jupyter_book(config: Path, out: Path, *args: str) -> None:
    cmd = [str(BIN / "jupyter-book"), "build", str(ROOT), "--config", str(config), "--path-output", str(out)]
    subprocess.run(cmd + list(args), check=True, cwd=ROOT)


def extract(out: Path) -> Path:
    """Write the message templates of the English book under ``out``; returns their directory."""
    _jupyter_book(
        _config_file(GETTEXT_CONFIG, out), out, "--builder", "custom", "--custom-builder", "gettext", "-q"
    )
    return out / "_build" / "gettext"


def catalogues() -> dict[str, Path]:
    base = LOCALES / LANGUAGE / "LC_MESSAGES"
    return {str(p.relative_to(base).with_suffix("")): p for p in sorted(base.rglob("*.po"))}


def update() -> None:
    pot = extract(BUILD / "i18n")
    subprocess.run(
        [str(BIN / "sphinx-intl"), "update", "-p", str(pot), "-d", str(LOCALES), "-l", LANGUAGE, "-w", "0"],
        check=True,
        cwd=ROOT,
    )
    for name, path in catalogues().items():  # kept: the page may come back (delete it by hand if not)
        if not (pot / f"{name}.pot").exists():
            print(f"note: {path.relative_to(ROOT)} belongs to no page of the book")


# Markup that a translation must carry over unchanged, found in this order (each is removed before the
# next is looked for): roles with their targets, inline code, math.
MARKUP = [
    re.compile(
        r"(?<!\\[pP])\{[\w:-]+\}`[^`]*`"
    ),  # {eq}`eq-gpt`, {cite}`...`, {doc}`...` (not the \p{L} of a regex)
    re.compile(r"``[^`]+``|`[^`]+`"),  # `code`
    re.compile(r"\$\$.+?\$\$|\$[^$]+\$", re.DOTALL),  # $math$, $$math$$
]


def markup(text: str) -> list[str]:
    """The roles, code spans and math of a message, sorted."""
    found = []
    for pattern in MARKUP:
        found += pattern.findall(text)
        text = pattern.sub(" ", text)
    return sorted(found)


def problems(template_dir: Path) -> list[str]:
    """Every way the catalogues fall short of the templates: missing, untranslated, fuzzy, markup lost."""
    import polib

    found, pos = [], catalogues()
    for pot_path in sorted(template_dir.rglob("*.pot")):
        name = str(pot_path.relative_to(template_dir).with_suffix(""))
        if name not in pos:
            found.append(
                f"{name}: no catalogue locales/{LANGUAGE}/LC_MESSAGES/{name}.po (run: python _ext/i18n.py update)"
            )
            continue
        po = {e.msgid: e for e in polib.pofile(str(pos[name])) if not e.obsolete}
        for entry in polib.pofile(str(pot_path)):
            where = f"{name}.po: {entry.msgid[:70]!r}"
            t = po.get(entry.msgid)
            if t is None:
                found.append(f"{where}: missing (run: python _ext/i18n.py update)")
            elif not t.msgstr.strip():
                found.append(f"{where}: not translated")
            elif "fuzzy" in t.flags:
                found.append(f"{where}: fuzzy (the English changed; translate it again and drop the flag)")
            else:
                want, got = markup(entry.msgid), markup(t.msgstr)
                if want != got:
                    lost = sorted(set(want) - set(got)) or sorted(set(got) - set(want)) or want
                    found.append(f"{where}: markup differs from the English: {lost[:3]}")
    return found


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        found = problems(extract(Path(tmp)))
    for line in found:
        print(line)
    print(
        f"{len(found)} problem(s) in the {LANGUAGE} catalogues"
        if found
        else f"{LANGUAGE}: every message translated"
    )
    return 1 if found else 0


def build() -> None:
    out = BUILD / "zh"
    _jupyter_book(_config_file(ZH_CONFIG, out), out, "--builder", "html", "--warningiserror", "--keep-going")
    target = BUILD / "html" / "zh"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out / "_build" / "html", target)
    print(f"the Chinese edition is in {target.relative_to(ROOT)}/")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("update", "check", "build"))
    command = parser.parse_args().command
    if command == "update":
        update()
    elif command == "build":
        build()
    else:
        return check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
