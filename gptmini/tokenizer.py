"""Tokenizers: text to integer ids and back, by characters or by byte-level BPE as in GPT-2."""

from __future__ import annotations

import hashlib
import json
import operator
from typing import Any


def _to_id_list(ids: Any, vocab_size: int) -> list[int]:
    """Check ``ids`` (a list of ints, or a 1-D tensor or array) against the vocabulary; return a list."""
    if hasattr(ids, "tolist"):  # torch.Tensor and np.ndarray, without importing either
        ids = ids.tolist()
    if isinstance(ids, int):
        raise ValueError(f"expected a 1-D sequence of token ids, got the single id {ids}; wrap it in a list")
    out = []
    for i in ids:
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise ValueError(
                f"invalid token id {i!r}; allowed: a 1-D sequence of integers in [0, {vocab_size})"
            )
        out.append(operator.index(i))
    bad = sorted({i for i in out if not 0 <= i < vocab_size})
    if bad:
        raise ValueError(f"invalid token ids {bad[:10]}; allowed: integers in [0, {vocab_size})")
    return out


class _Serialisable:
    """JSON save/load and a stable fingerprint, shared by both tokenizers."""

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict):
        raise NotImplementedError

    def save(self, path: str) -> None:
        """Write the tokenizer as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str):
        """Read a tokenizer written by ``save``."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def fingerprint(self) -> str:
        """A short stable hash of the tokenizer's JSON: equal tokenizers, equal fingerprints."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("ascii")).hexdigest()[:16]


class CharTokenizer(_Serialisable):
    """One token per character; the vocabulary is the sorted set of characters seen in the text."""

    def __init__(self, chars: list[str]):
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct single characters")
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from the characters of ``text``."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        """The id of each character of ``s``."""
        try:
            return [self.stoi[c] for c in s]
        except KeyError:
            unknown = sorted(set(s) - set(self.stoi))
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise ValueError(
                f"unknown character(s) {shown}; the vocabulary holds only the {self.vocab_size} characters "
                f"of the training text: {''.join(self.chars)!r}"
            ) from None

    def decode(self, ids: Any) -> str:
        """The characters of ``ids`` (a list, tensor or array of ints), joined."""
        ids = _to_id_list(ids, self.vocab_size)
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        if d.get("type") != "char":
            raise ValueError(f"not a character tokenizer: type {d.get('type')!r}; expected 'char'")
        return cls(list(d["chars"]))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
