"""Checkpoints: load a model with its tokenizer in one call, and keep training checkpoints whole.

``load_checkpoint("shakespeare-char")`` reads ``checkpoints/shakespeare-char`` of this repository (the
character model that ``python -m gptmini train --config configs/shakespeare_char_cpu.toml`` trains);
any other argument is taken as a directory written by ``python -m gptmini train`` or ``GPT.save`` plus
a ``tokenizer.json``.

``Trainer.save_checkpoint`` writes a new directory beside the old one and swaps it in by renaming
(``replacing_directory``), so that a checkpoint is always complete; ``Trainer.resume`` checks its
files against the SHA-256 hashes in trainer.json (``verified_checkpoint``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from gptmini.checks import read_json, sha256_of

#: Where the committed checkpoints live: ``checkpoints/`` next to the package in the repository.
CHECKPOINTS_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
TOKENIZER_NAME = "tokenizer.json"
#: The files a checkpoint directory may hold: saving replaces them all, except README.md, which it keeps.
CHECKPOINT_FILES = (
    "config.json", "model.safetensors", "trainer.json", "trainer.safetensors", TOKENIZER_NAME, "metrics.json",
)  # fmt: skip
KEPT_FILES = ("README.md",)


def checkpoint_dir(name_or_path: str | Path) -> Path:
    """The directory of a committed checkpoint by name, or ``name_or_path`` itself if it is a directory."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    named = CHECKPOINTS_DIR / str(name_or_path)
    if named.is_dir():
        return named
    known = (
        sorted(p.name for p in CHECKPOINTS_DIR.iterdir() if p.is_dir()) if CHECKPOINTS_DIR.is_dir() else []
    )
    raise FileNotFoundError(
        f"no checkpoint {str(name_or_path)!r}: not a directory, and not one of the committed checkpoints "
        f"({', '.join(known) or f'none found under {CHECKPOINTS_DIR}'})"
    )


def load_tokenizer(path: str | Path):
    """Read a tokenizer JSON of either kind (``CharTokenizer`` or ``BPETokenizer``); errors name the file."""
    from gptmini.tokenizer import BPETokenizer, CharTokenizer

    path = Path(path)
    d = read_json(path, "a tokenizer JSON written by .save()")
    kinds = {"char": CharTokenizer, "bpe": BPETokenizer}
    if d.get("type") not in kinds:
        raise ValueError(f"{path}: unknown tokenizer type {d.get('type')!r}; allowed: {', '.join(kinds)}")
    try:
        return kinds[d["type"]].from_dict(d)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a valid {d['type']} tokenizer ({type(err).__name__}: {err})") from None


def load_checkpoint(name_or_path: str | Path = "shakespeare-char", map_location=None):
    """``(model, tokenizer)`` of a checkpoint; the model is in eval mode on ``map_location`` (CPU default).

    The tokenizer and the model must have the same vocabulary size (a ValueError otherwise).
    """
    from gptmini.model import GPT

    directory = checkpoint_dir(name_or_path)
    model = GPT.load(directory, map_location=map_location).eval()
    tokenizer = load_tokenizer(directory / TOKENIZER_NAME)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"{directory}: tokenizer.json has {tokenizer.vocab_size} tokens but the model's vocabulary has "
            f"{model.config.vocab_size}: the files belong to different runs"
        )
    return model, tokenizer


# ----- training checkpoints: replaced whole by renaming, verified by their hashes -------------------


def check_out_dir(out_dir: str | Path) -> None:
    """out_dir can take checkpoints: not a file, nothing in it but checkpoint files, its parent writable."""
    path = Path(out_dir).resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"out_dir {out_dir} is a file, not a directory")
    if path == Path.cwd().resolve() or path in Path.cwd().resolve().parents:
        raise ValueError(
            f"out_dir {out_dir} is the current directory or above it; name a directory for the run"
        )
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in CHECKPOINT_FILES + KEPT_FILES)
        if foreign:
            raise ValueError(
                f"out_dir {out_dir} holds {', '.join(foreign[:5])}, which are not checkpoint files; saving "
                "replaces the whole directory, so choose an empty or new one"
            )
    try:  # saving writes a new directory beside out_dir, then renames it
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=path.parent).cleanup()
    except OSError as err:
        raise ValueError(f"out_dir {out_dir}: cannot write checkpoints there ({err})") from None


def _siblings(directory: Path) -> tuple[Path, Path]:
    """Where a save writes its new files, and where the replaced checkpoint waits to be deleted."""
    directory = directory.resolve()
    return directory.with_name(f".{directory.name}.saving"), directory.with_name(f".{directory.name}.old")


def recover_interrupted_save(directory: Path) -> Path:
    """If a save stopped between its two renames, put the previous complete checkpoint back in place."""
    new, old = _siblings(directory)
    if not directory.exists() and old.is_dir():
        old.rename(directory)
    shutil.rmtree(new, ignore_errors=True)
    return directory


@contextlib.contextmanager
def replacing_directory(directory: Path):
    """Yields an empty new directory; when the block succeeds, it replaces ``directory`` (two renames).

    If the block fails or is interrupted, the new directory is removed and ``directory`` is untouched.
    """
    check_out_dir(directory)
    recover_interrupted_save(directory)
    new, old = _siblings(directory)
    shutil.rmtree(old, ignore_errors=True)
    new.mkdir(parents=True)
    try:
        yield new
        for name in KEPT_FILES:
            if (directory / name).is_file():
                shutil.copy2(directory / name, new / name)
        _fsync(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    if directory.exists():
        directory.rename(old)
    new.rename(directory)  # a stop between these two renames is undone by recover_interrupted_save
    _fsync(directory.resolve().parent, files=False)
    shutil.rmtree(old, ignore_errors=True)


def _fsync(directory: Path, files: bool = True) -> None:
    """Flush a directory (and the files in it) to disk, so that a rename never exposes unwritten data."""
    for path in sorted(directory.iterdir()) if files else []:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verified_checkpoint(directory: Path) -> dict:
    """The trainer.json of a checkpoint, after checking every file it lists against its SHA-256."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint at {directory}: not a directory")
    meta = read_json(directory / "trainer.json", "the trainer state written by Trainer.save_checkpoint")
    required = ("step", "train_config", "param_groups", "history", "files")
    missing = [key for key in required if key not in meta]
    if missing:
        raise ValueError(
            f"{directory / 'trainer.json'} lacks {missing}: not a complete checkpoint of this version of "
            "gptmini (one without 'files' cannot be verified), so it cannot be resumed"
        )
    for name in ("config.json", "model.safetensors", "trainer.safetensors"):
        if name not in meta["files"]:
            raise ValueError(f"{directory / 'trainer.json'} does not list {name}: not a complete checkpoint")
    for name, digest in meta["files"].items():
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{path} is missing; refusing to resume an incomplete checkpoint")
        if sha256_of(path) != digest:
            raise ValueError(
                f"{path} differs from the file saved with step {meta['step']} (SHA-256 mismatch): the "
                "checkpoint's files come from different saves or were changed; refusing to resume"
            )
    return meta
