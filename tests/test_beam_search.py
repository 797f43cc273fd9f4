"""Beam search (gptmini.beam): token-for-token and score parity with transformers' beam search."""

import math

import pytest
import torch

from gptmini.beam import beam_search
from gptmini.generate import generate
from gptmini.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")

V = 97

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(gpt2_pair):
    return gpt2_pair(V, n_positions=40)


def prompts(batch: int, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def theirs(hf, idx, **kw):
    """transformers' beam search: (sequences, sequences_scores)."""
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, output_scores=True,
                      return_dict_in_generate=True, **kw)  # fmt: skip
    return out.sequences, out.sequences_scores


def an_eos_token(model, idx, num_beams, n_new) -> int:
    """A token that the beams produce part-way through, so that some, not all, hypotheses end early."""
    seqs = generate(model, idx, n_new, num_beams=num_beams, num_return_sequences=num_beams)
    new = seqs[:, idx.shape[1] :]
    return int(new[0, n_new // 3])


SETTINGS = [  # (num_beams, batch, kwargs), with the eos token chosen from the output when "eos" is set
    (2, 1, {}),
    (4, 1, {}),
    (4, 3, {"num_return_sequences": 4}),
    (2, 2, {"eos": True}),
    (4, 3, {"eos": True, "num_return_sequences": 3}),
    (4, 2, {"eos": True, "length_penalty": 2.0}),
    (4, 2, {"eos": True, "length_penalty": -0.5, "num_return_sequences": 2}),
    (3, 2, {"eos": True, "early_stopping": True}),
    (3, 2, {"eos": True, "early_stopping": "never", "length_penalty": 1.5}),
    (4, 2, {"eos": True, "early_stopping": True, "length_penalty": 0.0, "num_return_sequences": 4}),
    (3, 2, {"repetition_penalty": 1.3, "num_return_sequences": 2}),
    (2, 2, {"eos": "two", "num_return_sequences": 2}),  # a list of two eos ids
]


@pytest.mark.parametrize(("num_beams", "batch", "kw"), SETTINGS)
def test_beam_search_matches_transformers(pair, num_beams, batch, kw):
    hf, model = pair
    kw = dict(kw)
    idx = prompts(batch, seed=num_beams + batch)
    n_new = 18
    eos = kw.pop("eos", None)
    if eos:
        first = an_eos_token(model, idx, num_beams, n_new)
        kw["eos_token_id"] = [first, (first + 1) % V] if eos == "two" else first
        kw["pad_token_id"] = V - 1  # transformers pads beam outputs with the eos id when pad_token_id is 0
    expected, expected_scores = theirs(hf, idx, num_beams=num_beams, max_new_tokens=n_new, **kw)
    if eos:  # the setting exercises early ends: some hypotheses shorter than others, or all ended early
        ends = (expected[:, idx.shape[1] :] == kw["pad_token_id"]).any(1)
        assert ends.any() or expected.shape[1] < idx.shape[1] + n_new
    for use_cache in (True, False):
        out = generate(model, idx, n_new, num_beams=num_beams, use_cache=use_cache, **kw)
        assert torch.equal(out, expected), (use_cache, out, expected)
    kw.pop("pad_token_id", None)
    eos_ids = kw.pop("eos_token_id", None)
    eos_ids = None if eos_ids is None else [eos_ids] if isinstance(eos_ids, int) else eos_ids
    _, scores = beam_search(model, idx, n_new, num_beams, eos=eos_ids, pad=V - 1, **kw)
    assert torch.allclose(scores, expected_scores, atol=1e-4, rtol=0)


def test_beam_search_over_the_context_window_matches_transformers(pair):
    """Past n_positions both models see the last 40 tokens: a sliding window, the cache re-prefilled."""
    hf, model = pair
    idx = prompts(2, length=30, seed=3)
    with torch.no_grad():  # transformers' GPT-2 cannot run past n_positions: compare with the uncached loop
        ours = generate(model, idx, 20, num_beams=3, num_return_sequences=2)
        assert torch.equal(
            ours, generate(model, idx, 20, num_beams=3, num_return_sequences=2, use_cache=False)
        )
    expected, _ = theirs(hf, idx, num_beams=3, max_new_tokens=10, num_return_sequences=2)
    assert torch.equal(generate(model, idx, 10, num_beams=3, num_return_sequences=2), expected)


def test_beams_score_better_than_greedy_on_average_but_not_always(pair):
    """Beam search is no exact search: here it beats greedy on three prompts of four and loses on one
    (its beams dropped the prefix that greedy followed), and beats it on the total."""
    _, model = pair
    idx = prompts(4, seed=11)

    def log_likelihood(seqs):
        with torch.no_grad():
            logp = model(seqs[:, :-1])[0].log_softmax(-1)
        return logp.gather(2, seqs[:, 1:, None])[:, idx.shape[1] - 1 :, 0].sum(1)

    greedy = log_likelihood(generate(model, idx, 16))
    beam = log_likelihood(generate(model, idx, 16, num_beams=4))
    assert (beam > greedy + 1e-3).sum() == 3 and (beam < greedy - 1e-3).sum() == 1
    assert beam.sum() > greedy.sum() + 1


def test_one_beam_is_greedy(pair):
    _, model = pair
    idx = prompts(2)
    seqs, scores = beam_search(model, idx, 12, 1)
    assert torch.equal(seqs, generate(model, idx, 12))
    assert scores.shape == (2,) and torch.all(scores < 0)


def test_scores_are_the_length_normalised_log_likelihood(pair):
    _, model = pair
    idx = prompts(2, seed=5)
    for length_penalty in (1.0, 0.0, 2.0):
        seqs, scores = beam_search(model, idx, 10, 3, num_return_sequences=3, length_penalty=length_penalty)
        with torch.no_grad():
            logp = model(seqs[:, :-1])[0].log_softmax(-1)
        total = logp.gather(2, seqs[:, 1:, None])[:, idx.shape[1] - 1 :, 0].sum(1)
        assert torch.allclose(scores, total / 10**length_penalty, atol=1e-4)
        assert torch.all(scores[:3].diff() <= 0) and torch.all(scores[3:].diff() <= 0)  # best first


def test_training_mode_is_restored_and_zero_new_tokens(pair):
    _, model = pair
    model.train()
    try:
        generate(model, prompts(1), 3, num_beams=2)
        assert model.training
    finally:
        model.eval()
    idx = prompts(2)
    out = generate(model, idx, 0, num_beams=3, num_return_sequences=2)
    assert torch.equal(out, idx.repeat_interleave(2, dim=0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 2.0}, "num_beams"),
        ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
        ({"num_beams": 2, "do_sample": True}, "beam sampling"),
        ({"num_beams": 2, "length_penalty": math.inf}, "length_penalty"),
        ({"num_beams": 2, "early_stopping": "always"}, "early_stopping"),
        ({"num_beams": 2, "early_stopping": 1}, "early_stopping"),
    ],
)
def test_bad_beam_arguments_raise_value_error(pair, kwargs, message):
    _, model = pair
    with pytest.raises(ValueError, match=message):
        generate(model, prompts(1), 3, **kwargs)


@pytest.mark.parametrize(
    ("early_stopping", "length_penalty", "seed", "model_calls"),
    [  # the number of forward passes (prefill included) transformers' search makes too; 18 = no early stop
        (False, 1.0, 0, 3),  # every finished hypothesis beats the running beams after 2 tokens
        (False, 0.0, 2, 15),
        ("never", -1.0, 2, 15),
        ("never", 1.0, 2, 18),  # with length_penalty > 0 "never" waits for the maximum length
        (True, 1.0, 2, 14),  # stops as soon as 3 hypotheses are finished
    ],
)
def test_early_stopping_ends_the_search_where_transformers_does(
    pair, monkeypatch, early_stopping, length_penalty, seed, model_calls
):
    import gptmini.beam

    hf, model = pair
    idx = prompts(1, seed=seed)
    eos = int(generate(model, idx, 18, num_beams=3)[0, 7])  # the beams' third token
    kw = dict(num_beams=3, early_stopping=early_stopping, length_penalty=length_penalty, eos_token_id=eos,
              pad_token_id=V - 1)  # fmt: skip
    calls, next_logits = [], gptmini.beam._next_logits

    def counting(*args):
        calls.append(args)
        return next_logits(*args)

    monkeypatch.setattr(gptmini.beam, "_next_logits", counting)
    out = generate(model, idx, 18, **kw)
    assert len(calls) == model_calls
    assert torch.equal(out, theirs(hf, idx, max_new_tokens=18, **kw)[0])


@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal", "rope", "none"])
def test_cached_beams_equal_uncached_for_every_position_encoding(pos_encoding):
    """The cache reordered with the beams gives what recomputing every beam from scratch gives,
    past block_size too (learned positions: the sliding window)."""
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(vocab_size=V, block_size=12, n_layer=2, n_head=2, n_embd=32, pos_encoding=pos_encoding)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    model.eval()
    idx = prompts(2, seed=4)
    kw = dict(num_beams=3, num_return_sequences=2, eos_token_id=[5, 6], length_penalty=0.5)
    cached = generate(model, idx, 16, **kw)
    assert torch.equal(cached, generate(model, idx, 16, use_cache=False, **kw))


def test_a_vocabulary_smaller_than_the_candidates():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=2, block_size=16, n_layer=1, n_head=1, n_embd=8)).eval()
    out = generate(model, torch.tensor([[0, 1]]), 6, num_beams=3, num_return_sequences=3)
    assert out.shape == (3, 8) and len({tuple(row) for row in out.tolist()}) == 3
