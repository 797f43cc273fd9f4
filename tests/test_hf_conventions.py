"""transformers' calling conventions on gptmini: labels=, input_ids=, greedy by default, max_length=,
and the common sampling snippet, each compared with GPT2LMHeadModel on the same weights."""

import pytest
import torch

from gptmini.generate import generate, process_logits

transformers = pytest.importorskip("transformers")

V = 89

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(gpt2_pair):
    return gpt2_pair(V, n_positions=128)


def prompts(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----- the loss: labels= (unshifted) and targets (shifted) ----------------------------------------


def test_labels_loss_equals_transformers(pair):
    hf, model = pair
    idx = prompts(3, 20)
    labels = idx.clone()
    labels[0, :7] = -100  # a prompt not to be scored
    labels[2, 15:] = -100  # padding
    with torch.no_grad():
        for lab in (idx, labels):
            expected = hf(idx, labels=lab).loss
            _, loss = model(idx, labels=lab)
            assert torch.allclose(loss, expected, atol=1e-5, rtol=0), (loss, expected)


def test_labels_are_targets_shifted_by_one(pair):
    _, model = pair
    idx = prompts(2, 12, seed=1)
    with torch.no_grad():
        logits, with_labels = model(idx, labels=idx)
        _, with_targets = model(idx[:, :-1], idx[:, 1:])  # nanoGPT's way: inputs and targets shifted
        _, own_token = model(idx, idx)  # positional targets: each position scored on the token it sees
    next_token = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
    same_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten())
    assert torch.allclose(with_labels, next_token, atol=1e-6, rtol=0)
    assert torch.allclose(with_targets, next_token, atol=1e-6, rtol=0)
    assert torch.allclose(own_token, same_token, atol=1e-6, rtol=0)


def test_labels_and_targets_together_or_misshaped_raise(pair):
    _, model = pair
    idx = prompts(1, 5)
    with pytest.raises(ValueError, match="not both"):
        model(idx, idx, labels=idx)
    with pytest.raises(ValueError, match="labels"):
        model(idx, labels=idx[:, :-1])
    with pytest.raises(ValueError, match="labels"):
        model(idx, labels=idx[0].tolist())


# ----- generate: input_ids=, greedy by default, max_length= ----------------------------------------


def test_generate_defaults_and_keywords_as_transformers(pair):
    hf, model = pair
    idx = prompts(2, 6, seed=2)
    mask = torch.ones_like(idx)
    expected = hf.generate(input_ids=idx, attention_mask=mask, max_new_tokens=15)  # greedy by default
    assert torch.equal(expected, hf.generate(idx, attention_mask=mask, max_new_tokens=15, do_sample=False))
    assert torch.equal(generate(model, input_ids=idx, max_new_tokens=15), expected)
    assert torch.equal(model.generate(input_ids=idx, max_new_tokens=15), expected)
    expected = hf.generate(idx, attention_mask=mask, max_length=30)  # the total length, prompt included
    assert expected.shape == (2, 30)
    assert torch.equal(model.generate(idx, max_length=30), expected)


def test_prompt_given_twice_is_an_error(pair):
    _, model = pair
    idx = prompts(1, 4)
    with pytest.raises(ValueError, match="input_ids"):
        generate(model, idx, 5, input_ids=idx)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, idx, 5, max_length=20)  # transformers lets max_new_tokens win; here it is an error


# ----- the common snippet --------------------------------------------------------------------------

SNIPPET = dict(max_length=100, do_sample=True, top_k=50, temperature=0.7, num_return_sequences=5)


def test_common_sampling_snippet_samples_from_the_same_distributions(pair):
    """``generate(input_ids, max_length=100, do_sample=True, top_k=50, temperature=0.7,
    num_return_sequences=5)`` on both libraries.

    Both draw every token with one ``torch.multinomial(probs, 1)`` over all rows, so with the same seed
    they consume the random numbers alike; but the two models' logits differ in the last bits, which
    could move a draw that falls right at a boundary between two tokens, so equal tokens are not
    guaranteed by construction. Compared: the shapes and the rows' order, at every step of
    transformers' samples the distribution each library samples the next token from given the same
    prefix (to 1e-5), and the samples themselves.
    """
    hf, model = pair
    idx = prompts(2, 8, seed=3)
    ours = generate(model, idx, seed=0, **SNIPPET)
    torch.manual_seed(0)
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), output_scores=True,
                      return_dict_in_generate=True, **SNIPPET)  # fmt: skip
    theirs = out.sequences
    assert ours.shape == theirs.shape == (10, 100)
    assert torch.equal(ours[:, :8], theirs[:, :8]) and torch.equal(ours[:, :8], idx.repeat_interleave(5, 0))
    # the same distributions, step by step along transformers' samples
    with torch.no_grad():
        logits = model(theirs[:, :-1])[0][:, 7:].float()  # (10, 92, V) next-token logits after each prefix
    for step, their_scores in enumerate(out.scores):
        mine = process_logits(logits[:, step], temperature=0.7, top_k=50).softmax(-1)
        assert torch.allclose(mine, their_scores.softmax(-1), atol=1e-5, rtol=0), step
    # and with the same seed the samples themselves are equal: the same random numbers, consumed alike,
    # and no draw moved by the last-bit differences (920 draws; a move is possible, not expected)
    assert torch.equal(ours, theirs)
