"""Character and byte-level BPE tokenizers: round trips, errors, training, serialisation, tokenizers parity."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptmini.data import corpus_text
from gptmini.tokenizer import BPETokenizer, CharTokenizer

EOT = "<|endoftext|>"

# Text that is hard for byte-level code: emoji (with joiners and modifiers), CJK, combining marks,
# right-to-left scripts, control characters, zero-width characters, a lone BOM.
AWKWARD = [
    "",
    " ",
    "\n\n\n",
    "é",
    "e\u0301",
    "👩\u200d👩\u200d👧 👍🏽",
    "日本語のテキスト、中文。",
    "مرحبا بالعالم",
    "\x00\x01\x07\x1b\x7f\r\n\t",
    "\u200b\ufeff\U0010ffff",
    "  leading and trailing  ",
    "it's what we'll do, they've said; I'M here 123 4567",
    "Zürich—naïve café",
]
awkward_chars = st.sampled_from(list("".join(AWKWARD)) + ["\u0301", "\u0308", "😀", "字", "\t", "\x85", " "])
unicode_text = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cs",))),  # any code point but lone surrogates
    st.text(alphabet=awkward_chars),
)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    # Small enough to train in about a second, large enough to have merges of several bytes.
    return BPETokenizer.train(corpus_text("val")[:200_000], vocab_size=600)


# --- characters ---------------------------------------------------------------------------------------


def test_char_vocabulary_is_sorted_characters_and_round_trips():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"


def test_char_decode_accepts_lists_tensors_and_arrays():
    tok = CharTokenizer.from_text("abc")
    assert tok.decode([0, 2]) == tok.decode(torch.tensor([0, 2])) == tok.decode(np.array([0, 2])) == "ac"


def test_char_unknown_character_names_it_and_the_vocabulary():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'€'") as err:
        tok.encode("a€b")
    assert "abc" in str(err.value) and "3 characters" in str(err.value)


@pytest.mark.parametrize("bad", [[3], [-1], [0.5], [True], torch.tensor(1)])
def test_char_invalid_ids_raise(bad):
    with pytest.raises(ValueError, match="token id"):
        CharTokenizer.from_text("abc").decode(bad)


def test_char_save_load_and_fingerprint(tmp_path):
    tok = CharTokenizer.from_text("to be or not to be")
    tok.save(tmp_path / "tok.json")
    back = CharTokenizer.load(tmp_path / "tok.json")
    assert back.to_dict() == tok.to_dict()
    assert back.fingerprint() == tok.fingerprint()
    assert CharTokenizer.from_dict(tok.to_dict()).encode("be") == tok.encode("be")
    assert CharTokenizer.from_text("to be or not to bee!").fingerprint() != tok.fingerprint()
    with pytest.raises(ValueError, match="expected 'char'"):
        CharTokenizer.from_dict({"type": "bpe"})


def test_char_on_the_corpus_round_trips():
    text = corpus_text("val")
    tok = CharTokenizer.from_text(corpus_text("all"))
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size < 100  # letters, digits, punctuation, a few accented letters


# --- BPE: training ------------------------------------------------------------------------------------


def test_bpe_first_merges_and_tie_break():
    # "aaabdaaabac": (a, a) occurs 4 times and is merged first; then (aa, a) and (a, b) both occur twice,
    # and the tie goes to the smaller pair, (97, 98).
    bpe = BPETokenizer.train("aaabdaaabac", vocab_size=256 + 2, special_tokens=())
    assert bpe.merges == [((97, 97), 256), ((97, 98), 257)]
    assert bpe.vocab[256] == b"aa" and bpe.vocab[257] == b"ab"
    assert bpe.encode("aaabdaaabac") == [256, 257, 100, 256, 257, 97, 99]


def test_bpe_vocab_size_counts_bytes_merges_and_special_tokens(bpe):
    assert bpe.vocab_size == 600
    assert len(bpe.merges) == 600 - 256 - 1
    assert [new for _, new in bpe.merges] == list(range(256, 599))
    assert bpe.special_tokens == {EOT: 599}
    assert bpe.vocab[599] == EOT.encode()


def _reference_merges(text: str, n_merges: int) -> list[tuple[int, int]]:
    """Textbook BPE: recount every pair of every word before each merge (slow, obviously right)."""
    import regex

    from gptmini.tokenizer import GPT2_SPLIT_PATTERN

    words = [list(w.encode("utf-8")) for w in regex.findall(GPT2_SPLIT_PATTERN, text)]
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts: dict = {}
        for w in words:
            for pair in zip(w, w[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        merges.append(best)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == best:
                    w[i : i + 2] = [new_id]
                i += 1
    return merges


def test_incremental_training_matches_the_textbook_algorithm():
    text = corpus_text("val")[:30_000] + " aaaaaaa bbbbbb abababab"  # runs exercise overlapping pairs
    bpe = BPETokenizer.train(text, vocab_size=256 + 150, special_tokens=())
    assert [pair for pair, _ in bpe.merges] == _reference_merges(text, 150)


def test_training_stops_when_no_pairs_are_left():
    bpe = BPETokenizer.train("ab ab", vocab_size=1000, special_tokens=(EOT,))
    assert [pair for pair, _ in bpe.merges] == [(97, 98), (32, 256)]  # "ab", then " ab"
    assert bpe.vocab_size == 256 + 2 + 1


def test_special_tokens_in_training_text_are_not_learned():
    bpe = BPETokenizer.train(f"one{EOT}two{EOT}" * 50, vocab_size=300)
    assert not any(b"|>" in bpe.vocab[new] or b"<|" in bpe.vocab[new] for _, new in bpe.merges)


@pytest.mark.parametrize("special", ["<eos>", ["<eos>"], ("<eos>",)])
def test_one_string_is_one_special_token(special):
    # A plain string is one token, not five one-character tokens '<', 'e', 'o', 's', '>'.
    bpe = BPETokenizer.train("to be or not to be<eos>", vocab_size=260, special_tokens=special)
    assert bpe.special_tokens == {"<eos>": 259}
    assert bpe.encode("be<eos>", allowed_special="all")[-1] == 259
    assert BPETokenizer([], special_tokens="<eos>").special_tokens == {"<eos>": 256}


@pytest.mark.parametrize("special", [[""], ["<a>", "<a>"], [None], ("<eos>", 3)])
def test_bad_special_tokens_raise(special):
    with pytest.raises(ValueError, match="special tokens must be"):
        BPETokenizer.train("abc", vocab_size=300, special_tokens=special)


def test_vocab_size_too_small_raises():
    with pytest.raises(ValueError, match="at least 256 bytes .* = 257"):
        BPETokenizer.train("abc", vocab_size=200)


# --- BPE: encoding and decoding -----------------------------------------------------------------------


@pytest.mark.parametrize("s", AWKWARD)
def test_bpe_round_trips_awkward_text(bpe, s):
    assert bpe.decode(bpe.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(s=unicode_text)
def test_bpe_round_trips_any_text(bpe, s):
    ids = bpe.encode(s)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == s


def test_bpe_compresses_and_round_trips_the_corpus(bpe):
    text = corpus_text("val")[200_000:260_000]  # text the tokenizer was not trained on
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert len(text) / len(ids) > 2.0  # bytes-only would be 1.0


def test_special_tokens_are_encoded_only_when_allowed(bpe):
    s = f"Exit.{EOT}Enter"
    assert bpe.encode(s, allowed_special="all").count(599) == 1
    assert bpe.encode(s, allowed_special={EOT}) == bpe.encode(s, allowed_special="all")
    plain = bpe.encode(s)  # default "none": the marker is ordinary text
    assert 599 not in plain and bpe.decode(plain) == s
    assert bpe.decode(bpe.encode(s, allowed_special="all")) == s
    with pytest.raises(ValueError, match="allowed_special"):
        bpe.encode(s, allowed_special="some")
    with pytest.raises(ValueError, match="unknown special tokens"):
        bpe.encode(s, allowed_special={"<|pad|>"})


def test_decoding_half_a_character_gives_the_replacement_character(bpe):
    ids = bpe.encode("€")  # three bytes: e2 82 ac
    assert bpe.decode(ids) == "€"
    assert bpe.decode([0xE2]) == "\ufffd"
    assert bpe.decode([0xE2, 0x82]) + bpe.decode([0xAC]) == "\ufffd\ufffd"


def test_bpe_invalid_ids_raise(bpe):
    with pytest.raises(ValueError, match=r"\[600\]"):
        bpe.decode([1, 600])
    assert bpe.decode(torch.tensor(bpe.encode("to be"))) == "to be"


def test_bpe_save_load_round_trip(bpe, tmp_path):
    bpe.save(tmp_path / "bpe.json")
    back = BPETokenizer.load(tmp_path / "bpe.json")
    assert back.merges == bpe.merges and back.vocab == bpe.vocab
    assert back.fingerprint() == bpe.fingerprint()
    s = "Is this a dagger which I see before me?"
    assert back.encode(s) == bpe.encode(s)
    assert BPETokenizer.train("other text entirely", vocab_size=300).fingerprint() != bpe.fingerprint()
    with pytest.raises(ValueError, match="expected 'bpe'"):
        BPETokenizer.from_dict(CharTokenizer.from_text("ab").to_dict())
    with pytest.raises(ValueError, match="merge 256"):
        BPETokenizer([(256, 97)])


# --- parity with Hugging Face tokenizers --------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(bpe):
    return bpe.to_hf()


def test_hf_export_gives_the_same_ids_on_the_corpus(bpe, hf):
    assert hf.get_vocab_size() == bpe.vocab_size
    lines = corpus_text("val").splitlines()[::50]
    for line in [*lines, *AWKWARD, f"Exeunt.{EOT}ACT II", "\n".join(lines[:40])]:
        ids = bpe.encode(line, allowed_special="all")
        assert hf.encode(line).ids == ids, line
        assert hf.decode(ids, skip_special_tokens=False) == line


@settings(max_examples=100, deadline=None)
@given(s=unicode_text)
def test_hf_export_gives_the_same_ids_on_any_text(bpe, hf, s):
    assert hf.encode(s).ids == bpe.encode(s)


def _merge_with_loop(ids, ranks):
    """The textbook order: merge every occurrence of the earliest-learned pair present, repeat."""
    from gptmini.tokenizer import _merge_pair

    while True:
        present = [p for p in zip(ids, ids[1:], strict=False) if p in ranks]
        if not present:
            return ids
        pair = min(present, key=ranks.get)
        ids = _merge_pair(ids, pair, ranks[pair])


@settings(max_examples=200, deadline=None)
@given(s=st.text(alphabet="aeht rsoinl", min_size=0, max_size=300))
def test_heap_merging_equals_the_loop(bpe, s):
    from gptmini.tokenizer import _merge_with_heap

    ids = list(s.encode())
    assert _merge_with_heap(ids, bpe.ranks) == _merge_with_loop(ids, bpe.ranks)


def test_long_pieces_take_linear_time_and_match_the_loop(bpe):
    long_word = "".join(chr(97 + (i * i) % 26) for i in range(20_000))  # one piece of 20,000 letters
    ids = bpe.encode(long_word)  # quadratic merging would take minutes here
    assert bpe.decode(ids) == long_word
    short = long_word[:1000]
    assert bpe.encode(short) == _merge_with_loop(list(short.encode()), bpe.ranks)


# --- streaming --------------------------------------------------------------------------------------


def test_encode_iterable_equals_encode_on_the_corpus(bpe):
    text = corpus_text("val")[200_000:260_000] + EOT + "\n  Exeunt  \n\n"
    lines = text.splitlines(keepends=True)
    for allowed in ("none", "all"):
        assert list(bpe.encode_iterable(lines, allowed)) == bpe.encode(text, allowed)


@settings(max_examples=100, deadline=None)
@given(s=unicode_text, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_encode_iterable_equals_encode_for_any_chunking(bpe, s, cuts):
    bounds = [0, *sorted(c % (len(s) + 1) for c in cuts), len(s)]
    chunks = [s[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert list(bpe.encode_iterable(chunks)) == bpe.encode(s)


def test_encode_iterable_needs_gpt2s_split_pattern():
    words = BPETokenizer([], pattern=r"\S+|\s+")
    assert words.encode("a b") == [97, 32, 98]
    with pytest.raises(ValueError, match="split pattern"):
        list(words.encode_iterable(["a b"]))


def test_byte_ids_must_number_each_byte_once():
    with pytest.raises(ValueError, match="byte_ids"):
        BPETokenizer([], byte_ids=[0] * 256)
    reversed_bytes = BPETokenizer([(255, 254)], byte_ids=list(range(255, -1, -1)))
    assert reversed_bytes.encode("\x00\x01") == [256]
    assert reversed_bytes.decode([256]) == "\x00\x01"
