"""The committed checkpoints: find them and load a model with its tokenizer in one call.

``load_checkpoint("shakespeare-char")`` reads ``checkpoints/shakespeare-char`` of this repository (the
character model that ``python -m gptmini train --config configs/shakespeare_char_cpu.toml`` trains);
any other argument is taken as a directory written by ``python -m gptmini train`` or ``GPT.save`` plus
a ``tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path

from gptmini.checks import read_json

#: Where the committed checkpoints live: ``checkpoints/`` next to the package in the repository.
CHECKPOINTS_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


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
    tokenizer = load_tokenizer(directory / "tokenizer.json")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"{directory}: tokenizer.json has {tokenizer.vocab_size} tokens but the model's vocabulary has "
            f"{model.config.vocab_size}: the files belong to different runs"
        )
    return model, tokenizer
