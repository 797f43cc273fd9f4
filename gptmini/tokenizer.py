"""Tokenizers: text to integer ids and back, by characters or by byte-level BPE as in GPT-2."""

from __future__ import annotations

import hashlib
import heapq
import json
import operator
from collections.abc import Iterable, Iterator
from typing import Any

import regex

from gptmini.gpt2_tokenizer import GPT2_SPLIT_PATTERN, _bytes_to_unicode, _pieces_to_hold


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


Pair = tuple[int, int]


def _merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids``, left to right, by ``new_id``."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_with_heap(ids: list[int], ranks: dict[Pair, int]) -> list[int]:
    """The same merges as repeated ``_merge_pair`` with the earliest-learned pair, in O(n log n).

    A heap holds ``(rank, position)`` of every adjacent pair that has a merge, so the earliest-learned
    pair, leftmost first, comes out first; tokens form a linked list (``after``), so a merge is O(1).
    An entry whose pair has changed since it was pushed is stale and skipped.
    """
    n = len(ids)
    ids = list(ids)
    after = list(range(1, n + 1))  # index of the next live token; n past the end
    before = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(ranks[p], i) for i, p in enumerate(zip(ids, ids[1:], strict=False)) if p in ranks]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = after[i]
        if not alive[i] or j == n or ranks.get((ids[i], ids[j])) != rank:
            continue  # stale
        ids[i], alive[j] = rank, False  # a pair's rank is the id of the token it merges into
        after[i] = after[j]
        if after[i] < n:
            before[after[i]] = i
        for left, right in ((before[i], i), (i, after[i])):  # the two pairs the new token is part of
            if left >= 0 and right < n and (ids[left], ids[right]) in ranks:
                heapq.heappush(heap, (ranks[ids[left], ids[right]], left))
    return [t for t, live in zip(ids, alive, strict=True) if live]


def _learn_merges(word_counts: dict[bytes, int], n_merges: int, verbose: bool = False) -> list[Pair]:
    """Learn up to ``n_merges`` merges from words (byte strings) and their frequencies.

    Each step merges the most frequent adjacent pair; ties go to the smallest ``(a, b)``. The pair
    counts are built once and then updated only for the words that contain the merged pair; a heap of
    ``(-count, a, b)`` finds the best pair. A pair gets a new heap entry whenever its count rises,
    so every pair has an entry at least as high as its count; an entry popped at a count its pair no
    longer has is stale, and is pushed back at the current count (or dropped when that is zero).
    """
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}  # pair -> indices of the words that contain it
    for w, (ids, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in zip(ids, ids[1:], strict=False):
            counts[pair] = counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(w)
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    while len(merges) < n_merges and heap:
        neg, a, b = heapq.heappop(heap)
        pair = (a, b)
        current = counts.get(pair, 0)
        if current != -neg:  # stale entry: the count changed since it was pushed
            if current > 0:
                heapq.heappush(heap, (-current, a, b))
            continue
        new_id = 256 + len(merges)
        merges.append(pair)
        delta: dict[Pair, int] = {}
        for w in where.pop(pair):
            old, f = words[w], freqs[w]
            new = _merge_pair(old, pair, new_id)
            words[w] = new
            old_pairs = list(zip(old, old[1:], strict=False))
            new_pairs = list(zip(new, new[1:], strict=False))
            for p in old_pairs:
                delta[p] = delta.get(p, 0) - f
            for p in new_pairs:
                delta[p] = delta.get(p, 0) + f
            for p in set(old_pairs) - set(new_pairs):
                if p != pair:
                    where[p].discard(w)
            for p in new_pairs:
                where.setdefault(p, set()).add(w)
        for p, d in delta.items():
            if d == 0 or p == pair:
                continue
            c = counts.get(p, 0) + d
            if c > 0:
                counts[p] = c
                if d > 0:
                    heapq.heappush(heap, (-c, *p))
            else:
                counts.pop(p, None)
                where.pop(p, None)
        del counts[pair]
        if verbose and (len(merges) % 500 == 0 or len(merges) == n_merges):
            print(f"merge {len(merges)}/{n_merges}: {pair} -> {new_id} (count {-neg})")
    return merges


class BPETokenizer(_Serialisable):
    """Byte-level byte-pair encoding as in GPT-2: 256 byte tokens, learned merges, then special tokens.

    Learn one from text with ``train``, or load GPT-2's own with ``from_pretrained("gpt2")``.
    Every string round-trips: ``decode(encode(s)) == s``. Decoding ids whose bytes are not valid
    UTF-8 on their own (half of a multi-byte character, say) puts U+FFFD in their place, as GPT-2 does.
    """

    def __init__(
        self,
        merges: list[Pair],
        special_tokens: str | Iterable[str] = (),
        pattern: str = GPT2_SPLIT_PATTERN,
        byte_ids: list[int] | None = None,
    ):
        self.pattern = pattern
        self._pre_split = regex.compile(pattern)
        # byte_ids[b] is the id of the one-byte token b: b itself in trained tokenizers, while GPT-2
        # numbers its 256 byte tokens in its own order (printable characters first).
        self.byte_ids = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        if sorted(self.byte_ids) != list(range(256)):
            raise ValueError("byte_ids must give each of the 256 bytes a distinct id in [0, 256)")
        self.merges: list[tuple[Pair, int]] = [((int(a), int(b)), 256 + i) for i, (a, b) in enumerate(merges)]
        self.ranks: dict[Pair, int] = dict(self.merges)  # pair -> new id; a smaller id was learned earlier
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}
        for (a, b), new_id in self.merges:
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merge {new_id} joins ({a}, {b}), but only ids below {new_id} exist yet")
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        special_tokens = _as_special_tokens(special_tokens)
        first = 256 + len(self.merges)
        self.special_tokens: dict[str, int] = {s: first + i for i, s in enumerate(special_tokens)}
        for s, i in self.special_tokens.items():
            self.vocab[i] = s.encode("utf-8")
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_pretrained(cls, name: str = "gpt2") -> BPETokenizer:
        """A published tokenizer, read offline: ``"gpt2"`` is GPT-2's 50,257-token byte-level BPE."""
        from gptmini.gpt2_tokenizer import PRETRAINED, load_gpt2

        if name not in PRETRAINED:
            raise ValueError(f"unknown pretrained tokenizer {name!r}; allowed: {', '.join(PRETRAINED)}")
        return load_gpt2()

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int = 512,
        special_tokens: str | Iterable[str] = ("<|endoftext|>",),
        verbose: bool = False,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text`` (fewer if it runs out of pairs).

        Each merge joins the most frequent adjacent pair of tokens within the pre-split pieces; among
        pairs of equal count, the smallest ``(a, b)`` by id wins, so training is deterministic.
        ``special_tokens`` is a list of strings, or one string for a single special token.
        """
        special_tokens = _as_special_tokens(special_tokens)
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small; it must be at least 256 bytes + "
                f"{len(special_tokens)} special tokens = {256 + len(special_tokens)}"
            )
        # Special tokens written in the text are not learned from: split them out first.
        chunks = (
            regex.split("|".join(regex.escape(t) for t in special_tokens), text) if special_tokens else [text]
        )
        word_counts: dict[str, int] = {}
        for chunk in chunks:
            for piece in regex.findall(GPT2_SPLIT_PATTERN, chunk):
                word_counts[piece] = word_counts.get(piece, 0) + 1
        word_counts = {w.encode("utf-8"): f for w, f in word_counts.items()}
        merges = _learn_merges(word_counts, n_merges, verbose=verbose)
        return cls(merges, special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_piece(self, piece: str) -> list[int]:
        """BPE on one pre-split piece: apply the earliest-learned merge present until none applies."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        ids = [self.byte_ids[b] for b in piece.encode("utf-8")]
        if len(ids) > _LONG_PIECE:  # the loop below takes time quadratic in the length; a heap does not
            ids = _merge_with_heap(ids, self.ranks)
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:], strict=False), key=lambda p: self.ranks.get(p, _NEVER))
            if pair not in self.ranks:
                break
            ids = _merge_pair(ids, pair, self.ranks[pair])
        if len(self._cache) < _CACHE_SIZE:
            self._cache[piece] = ids
        return ids

    def _allowed(self, allowed_special: str | set[str]) -> set[str]:
        """The special tokens that ``allowed_special`` (``"all"``, ``"none"`` or a set) lets through."""
        if allowed_special == "all":
            return set(self.special_tokens)
        if allowed_special == "none":
            return set()
        if isinstance(allowed_special, (set, frozenset)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(
                    f"unknown special tokens {sorted(unknown)}; this tokenizer has {list(self.special_tokens)}"
                )
            return set(allowed_special)
        raise ValueError(
            f"allowed_special={allowed_special!r}; allowed: 'all', 'none' or a set of special tokens"
        )

    def pre_tokenize(self, s: str, allowed_special: str | set[str] = "none") -> list[str]:
        """The pieces BPE works on: allowed special tokens whole, the text between split by the pattern."""
        allowed = self._allowed(allowed_special)
        if not allowed:
            return self._pre_split.findall(s)
        # Longest first, so that a special token containing another one wins.
        splitter = "(" + "|".join(regex.escape(t) for t in sorted(allowed, key=len, reverse=True)) + ")"
        pieces: list[str] = []
        for i, part in enumerate(regex.split(splitter, s)):
            if i % 2:  # the splitter's capture group: a special token
                pieces.append(part)
            else:
                pieces.extend(self._pre_split.findall(part))
        return pieces

    def _encode_pieces(self, pieces: list[str], allowed: set[str]) -> list[int]:
        out: list[int] = []
        for piece in pieces:
            if piece in allowed:  # text between special tokens holds none, so no ordinary piece is one
                out.append(self.special_tokens[piece])
            else:
                out.extend(self._encode_piece(piece))
        return out

    def encode(self, s: str, allowed_special: str | set[str] = "none") -> list[int]:
        """Token ids of ``s``.

        ``allowed_special`` says which special tokens written in ``s`` become their own id: ``"all"``,
        ``"none"`` (the default: they are encoded as ordinary text), or a set of them.
        """
        allowed = self._allowed(allowed_special)
        return self._encode_pieces(self.pre_tokenize(s, allowed), allowed)

    def encode_iterable(
        self, lines: Iterable[str], allowed_special: str | set[str] = "none"
    ) -> Iterator[int]:
        """Token ids of the text that ``lines`` make up (an open file, say), yielded as it streams in.

        The ids equal ``encode("".join(lines))``, yet only the current line and the few pieces before
        it that may still change are held in memory (a single piece, a run of blank lines say, whole).
        """
        if self.pattern != GPT2_SPLIT_PATTERN:
            raise ValueError("encode_iterable knows which pieces are final only for GPT-2's split pattern")
        allowed = self._allowed(allowed_special)
        pending = ""
        for line in lines:
            pieces = self.pre_tokenize(pending + line, allowed)
            final = len(pieces) - _pieces_to_hold(pieces, allowed)
            yield from self._encode_pieces(pieces[:final], allowed)
            pending = "".join(pieces[final:])
        yield from self._encode_pieces(self.pre_tokenize(pending, allowed), allowed)

    def decode(self, ids: Any) -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 decode to U+FFFD (errors="replace")."""
        ids = _to_id_list(ids, self.vocab_size)
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        d = {
            "type": "bpe",
            "pattern": self.pattern,
            "merges": [list(pair) for pair, _ in self.merges],
            "special_tokens": list(self.special_tokens),
        }
        if self.byte_ids != list(range(256)):  # only GPT-2's own numbering; keeps old fingerprints
            d["byte_ids"] = self.byte_ids
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        if d.get("type") != "bpe":
            raise ValueError(f"not a BPE tokenizer: type {d.get('type')!r}; expected 'bpe'")
        return cls(
            [tuple(m) for m in d["merges"]], tuple(d["special_tokens"]), d["pattern"], d.get("byte_ids")
        )

    def to_hf(self):
        """The same tokenizer as a ``tokenizers.Tokenizer`` (byte-level BPE), giving the same ids."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        if self.pattern != GPT2_SPLIT_PATTERN:
            raise ValueError(
                "only the GPT-2 split pattern has a tokenizers equivalent (pre_tokenizers.ByteLevel)"
            )
        show = _bytes_to_unicode()
        as_str = {i: "".join(show[b] for b in self.vocab[i]) for i in range(256 + len(self.merges))}
        vocab = {s: i for i, s in as_str.items()}
        if len(vocab) != len(as_str):
            raise ValueError("two merges produce the same bytes; the tokenizers format cannot hold both ids")
        merges = [(as_str[a], as_str[b]) for (a, b), _ in self.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(s, special=True) for s in self.special_tokens])
        return tok

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={list(self.special_tokens)})"


def _as_special_tokens(special_tokens: str | Iterable[str]) -> tuple[str, ...]:
    """Special tokens as a tuple; a single string is one token, not one token per character."""
    tokens = (special_tokens,) if isinstance(special_tokens, str) else tuple(special_tokens)
    if not all(isinstance(t, str) and t for t in tokens) or len(set(tokens)) != len(tokens):
        raise ValueError(f"special tokens must be distinct non-empty strings, got {special_tokens!r}")
    return tokens


_NEVER = float("inf")  # the rank of a pair that was never merged
_CACHE_SIZE = 100_000  # pieces whose encoding is remembered
_LONG_PIECE = 64  # bytes; longer pieces are merged with a heap
