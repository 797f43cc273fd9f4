"""Tests of gptmini.generate: logit processors, greedy and sampled decoding, the KV cache, parity with transformers."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptmini.decode_step import OneTokenStep
from gptmini.generate import (
    _next_logits,
    apply_repetition_penalty,
    generate,
    process_logits,
    stream,
    top_k_filter,
    top_p_filter,
)
from gptmini.model import GPT, GPTConfig

POS_ENCODINGS = ("learned", "sinusoidal", "rope", "none")
V = 61


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(pos_encoding="learned", block_size=16, vocab_size=V, seed=0, scale=4.0, **kw) -> GPT:
    """A small random GPT whose weights are scaled up so that greedy outputs vary from step to step."""
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                    pos_encoding=pos_encoding, **kw)  # fmt: skip
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model.eval()


def greedy_reference(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    """The textbook loop: run the whole (cropped) sequence, take the argmax, append."""
    for _ in range(n):
        context = idx if model.config.pos_encoding != "learned" else idx[:, -model.config.block_size :]
        with torch.no_grad():
            logits, _ = model(context)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


# ----- logit processors: properties on random logits ----------------------------------------------

logit_rows = st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=2, max_size=40)
tied_rows = st.lists(st.integers(-3, 3).map(float), min_size=2, max_size=40)  # many ties


@settings(max_examples=50, deadline=None)
@given(row=st.one_of(logit_rows, tied_rows), k=st.integers(1, 45))
def test_top_k_keeps_the_k_largest_and_their_ties(row, k):
    logits = torch.tensor([row])
    kept = torch.isfinite(top_k_filter(logits, k))[0]
    values = logits[0]
    kth = values.sort(descending=True).values[min(k, len(row)) - 1]
    assert torch.equal(kept, values >= kth)  # exactly the values at or above the k-th largest
    assert kept.sum() >= min(k, len(row))
    if len(set(row)) == len(row):  # no ties: exactly k
        assert kept.sum() == min(k, len(row))
    assert torch.equal(top_k_filter(logits, k)[0][kept], values[kept])  # kept logits unchanged


@settings(max_examples=50, deadline=None)
@given(row=logit_rows, p=st.floats(0.01, 1.0), temperature=st.floats(0.2, 3.0))
def test_top_p_keeps_the_smallest_set_reaching_p(row, p, temperature):
    logits = torch.tensor([row], dtype=torch.float64)
    scaled = logits / temperature
    filtered = process_logits(logits, temperature=temperature, top_p=p)
    kept = torch.isfinite(filtered)[0]
    probs = scaled.softmax(-1)[0]
    assert kept[probs == probs.max()].any()  # the most likely token (one of them, if tied) survives
    if not kept.all():  # a top set: no kept token is less likely than a dropped one
        assert probs[kept].min() >= probs[~kept].max()
    tol = 1e-9
    assert probs[kept].sum() >= p - tol or kept.all()  # reaches p
    assert probs[kept].sum() - probs[kept].min() < p + tol  # and is the smallest such set
    assert torch.allclose(filtered[0][kept], scaled[0][kept])  # applied after temperature


def test_top_p_one_and_top_k_vocab_keep_everything():
    logits = torch.randn(3, 50) * 10
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    assert torch.equal(top_k_filter(logits, 50), logits)
    assert torch.equal(top_k_filter(logits, 500), logits)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_once():
    logits = torch.tensor([[2.0, -2.0, 0.5, 3.0, -1.0]])
    idx = torch.tensor([[0, 1, 1, 4]])  # token 1 twice: penalised once
    out = apply_repetition_penalty(logits, idx, 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 0.5, 3.0, -2.0]]))


# ----- parity with transformers' logits processors ------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_processors_match_transformers(seed):
    lp = pytest.importorskip("transformers.generation.logits_process")
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 97, generator=g) * 3
    ids = torch.randint(0, 97, (4, 12), generator=g)
    temperature, top_k, top_p, penalty = [(0.7, 20, 0.9, 1.3), (1.5, 5, 0.5, 0.8), (1.0, 1, 0.99, 2.0)][
        seed % 3
    ]
    ours = process_logits(logits, ids, temperature=temperature, top_k=top_k, top_p=top_p,
                          repetition_penalty=penalty)  # fmt: skip
    theirs = logits.clone()
    for proc in (
        lp.RepetitionPenaltyLogitsProcessor(penalty),
        lp.TemperatureLogitsWarper(temperature),
        lp.TopKLogitsWarper(top_k),
        lp.TopPLogitsWarper(top_p),
    ):
        theirs = proc(ids, theirs)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs))  # the same tokens survive
    assert torch.allclose(ours.softmax(-1), theirs.softmax(-1), atol=1e-6)  # the same distribution


# ----- greedy decoding ----------------------------------------------------------------------------


def test_greedy_variants_agree_with_the_textbook_loop():
    model = make_model()
    idx = torch.randint(0, V, (2, 4), generator=torch.Generator().manual_seed(1))
    expected = greedy_reference(model, idx, 10)
    assert len(set(expected[0, 4:].tolist())) > 2  # not a degenerate repeat of one token
    assert torch.equal(generate(model, idx, 10, do_sample=False), expected)
    assert torch.equal(generate(model, idx, 10, do_sample=True, temperature=0, seed=3), expected)
    assert torch.equal(generate(model, idx, 10, do_sample=True, top_k=1, seed=3), expected)
    assert torch.equal(generate(model, idx, 10, do_sample=False, use_cache=False), expected)
    assert torch.equal(model.generate(idx, max_length=14, do_sample=False), expected)


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_cached_and_uncached_agree_past_block_size(pos_encoding):
    model = make_model(pos_encoding, block_size=8)
    idx = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(2))
    cached = generate(model, idx, 14, do_sample=False)
    uncached = generate(model, idx, 14, do_sample=False, use_cache=False)
    assert cached.shape == (3, 19)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, greedy_reference(model, idx, 14))  # the window is the last block_size tokens
    # logits of every step, fed the same sequence, with and without the cache
    window = 8 if pos_encoding == "learned" else None
    cache = model.new_kv_cache(3, max_length=8 if window else 18)
    for t in range(5, 19):
        with_cache = _next_logits(model, cached, t, cache, window)
        without = _next_logits(model, cached, t, None, window)
        assert torch.allclose(with_cache, without, atol=1e-5, rtol=0), (pos_encoding, t)


def test_learned_prompt_longer_than_block_size_is_cropped():
    model = make_model("learned", block_size=8)
    idx = torch.randint(0, V, (1, 13), generator=torch.Generator().manual_seed(4))
    out = generate(model, idx, 5, do_sample=False)
    assert torch.equal(out[:, :13], idx)
    assert torch.equal(out, greedy_reference(model, idx, 5))


def test_one_dimensional_prompt_and_zero_new_tokens():
    model = make_model()
    out = generate(model, torch.tensor([1, 2, 3]), 4, do_sample=False)
    assert out.shape == (1, 7) and out.dtype == torch.long
    assert torch.equal(generate(model, torch.tensor([[1, 2, 3]]), 0, num_return_sequences=2),
                       torch.tensor([[1, 2, 3], [1, 2, 3]]))  # fmt: skip
    assert torch.equal(generate(model, torch.tensor([1, 2, 3]), max_length=3), torch.tensor([[1, 2, 3]]))


def test_stream_yields_the_same_columns_as_generate():
    model = make_model()
    idx = torch.tensor([[5, 6, 7], [8, 9, 10]])
    full = generate(model, idx, 6, do_sample=True, seed=11, top_p=0.9, num_return_sequences=2)
    cols = list(stream(model, idx, 6, do_sample=True, seed=11, top_p=0.9, num_return_sequences=2))
    assert len(cols) == 6 and all(c.shape == (4, 1) for c in cols)
    assert torch.equal(torch.cat(cols, dim=1), full[:, 3:])


def test_eval_mode_and_grad_mode_restored():
    model = make_model(dropout=0.5).train()
    idx = torch.tensor([[1, 2, 3]])
    a = generate(model, idx, 8, do_sample=False)
    assert model.training
    assert torch.equal(a, generate(model, idx, 8, do_sample=False, use_cache=False))  # dropout was off
    it = stream(model, idx, 3, do_sample=False)
    next(it)
    assert torch.is_grad_enabled()  # a paused stream leaves autograd as it was
    it.close()
    assert model.training


# ----- the flat one-token step ---------------------------------------------------------------------


def step_both_ways(model: GPT, idx: torch.Tensor, prefill: int, exact: bool = True) -> tuple[list, list]:
    """Logits of every one-token step after a prefill, from the forward pass and from OneTokenStep;
    checks that both wrote the same keys and values (bit for bit if exact, else to 1e-5)."""
    B, T = idx.shape
    caches = [model.new_kv_cache(B, max_length=T), model.new_kv_cache(B, max_length=T)]
    forward, flat = [], []
    with torch.inference_mode():
        for cache in caches:
            model(idx[:, :prefill], kv_cache=cache)
        step = OneTokenStep(model, caches[1])
        for t in range(prefill, T):
            forward.append(model(idx[:, t : t + 1], kv_cache=caches[0])[0][:, -1])
            flat.append(step(idx[:, t]))
    for k0, k1 in zip(caches[0].k + caches[0].v, caches[1].k + caches[1].v, strict=True):
        assert torch.equal(k0, k1) if exact else torch.allclose(k0, k1, atol=1e-5, rtol=0)
    assert caches[0].length == caches[1].length == T
    return forward, flat


@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_one_token_step_equals_the_forward_pass_bit_for_bit(pos_encoding, attn_impl):
    model = make_model(pos_encoding, block_size=16, attn_impl=attn_impl)
    idx = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(5))
    forward, flat = step_both_ways(model, idx, prefill=4)
    for t, (a, b) in enumerate(zip(forward, flat, strict=True)):
        assert a.shape == b.shape == (3, V)
        assert torch.equal(a, b), (pos_encoding, attn_impl, t, (a - b).abs().max())


@pytest.mark.parametrize(
    "kw",
    [
        dict(bias=False),
        dict(tie_weights=False),
        dict(pos_encoding="rope", n_head=4),
        dict(n_embd=48, n_head=3),
    ],
)
def test_one_token_step_equals_the_forward_pass_for_other_shapes(kw):
    kw = {"pos_encoding": "learned", **kw}
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=V, block_size=12, n_layer=3, **{"n_head": 2, "n_embd": 32, **kw})
    model = GPT(cfg).eval()
    idx = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(6))
    forward, flat = step_both_ways(model, idx, prefill=1)
    assert all(torch.equal(a, b) for a, b in zip(forward, flat, strict=True))


def test_one_token_step_under_autocast_and_in_float64():
    model = make_model("rope")
    idx = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bfloat16 products, float32 cache
        forward, flat = step_both_ways(model, idx, prefill=3)
    assert forward[0].dtype == flat[0].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(forward, flat, strict=True))
    forward, flat = step_both_ways(model.double(), idx, prefill=3)
    assert flat[0].dtype == torch.float64 and all(
        torch.equal(a, b) for a, b in zip(forward, flat, strict=True)
    )


def test_one_token_step_sees_in_place_weight_updates():
    model = make_model()
    idx = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(8))
    cache = model.new_kv_cache(1, max_length=8)
    with torch.inference_mode():
        model(idx[:, :5], kv_cache=cache)
        step = OneTokenStep(model, cache)
        before = model(idx, kv_cache=model.new_kv_cache(1, max_length=8))[0][:, -1]
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(0.5)  # in place, as an optimizer step (the cache stays valid)
    with torch.inference_mode():
        after = model(idx, kv_cache=model.new_kv_cache(1, max_length=8))[0][:, -1]
        logits = step(idx[:, 5])
    assert not torch.allclose(before, after)
    assert torch.allclose(logits, after, atol=1e-5, rtol=0)


def test_generate_uses_the_flat_step_only_where_it_stands_in_for_the_model(monkeypatch):
    calls = []
    original = OneTokenStep.__call__
    monkeypatch.setattr(
        OneTokenStep, "__call__", lambda self, tokens: calls.append(1) or original(self, tokens)
    )
    model = make_model()
    idx = torch.tensor([[1, 2, 3]])
    out = generate(model, idx, 6, do_sample=False)
    assert len(calls) == 5  # the prefill is a forward pass; then one flat step per token but the last
    calls.clear()
    assert torch.equal(generate(model, idx, 6, do_sample=False, use_cache=False), out)
    assert not calls
    seen = []
    handle = model.transformer.h[0].mlp.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    assert "has a forward hook" in OneTokenStep.unsupported(model)
    assert torch.equal(generate(model, idx, 6, do_sample=False), out)
    assert not calls and seen == [3, 1, 1, 1, 1, 1]  # the hook saw the prefill and every step
    handle.remove()
    assert OneTokenStep.unsupported(model) is None


def test_one_token_step_says_why_it_cannot_stand_in():
    from gptmini.finetune import apply_lora

    model = make_model()
    assert OneTokenStep.unsupported(model) is None
    assert "training mode" in OneTokenStep.unsupported(make_model().train())

    class Shifted(GPT):
        pass

    assert "not a GPT" in OneTokenStep.unsupported(Shifted(model.config).eval())
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        assert "global forward hooks" in OneTokenStep.unsupported(model)
    finally:
        handle.remove()
    model.transformer.h[1].mlp.gelu = torch.nn.GELU()
    assert "approximate='none'" in OneTokenStep.unsupported(model)
    with pytest.raises(ValueError, match="cannot stand in .* GELU"):
        OneTokenStep(model, model.new_kv_cache(1))
    lora = apply_lora(make_model(), r=2).eval()
    assert "LoRALinear" in OneTokenStep.unsupported(lora)
    idx = torch.tensor([[4, 5, 6]])
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a LoRA update that changes the outputs
    assert torch.equal(generate(lora, idx, 8, do_sample=False), greedy_reference(lora, idx, 8))


# ----- sampling -----------------------------------------------------------------------------------


def fixed_distribution_model(probs: list[float]) -> GPT:
    """A GPT whose next-token distribution is `probs` whatever the context: all weights zero except
    the final LayerNorm bias (a constant hidden state e_0) and column 0 of the LM head (log probs)."""
    model = GPT(
        GPTConfig(vocab_size=len(probs), block_size=8, n_layer=1, n_head=1, n_embd=4, tie_weights=False)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[:, 0] = torch.tensor(probs).log()
    return model.eval()


def chi_square(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# upper 0.1% points of the chi-square distribution, by degrees of freedom
CHI2_CRITICAL_0_001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, [0.1, 0.2, 0.3, 0.4, 0.0]),
        ({"temperature": 0.5}, [1 / 30, 4 / 30, 9 / 30, 16 / 30, 0.0]),  # p^2, renormalised
        ({"top_k": 2}, [0.0, 0.0, 3 / 7, 4 / 7, 0.0]),
        ({"top_p": 0.65}, [0.0, 0.0, 3 / 7, 4 / 7, 0.0]),  # 0.4 < 0.65 <= 0.4 + 0.3
    ],
)
def test_seeded_sampling_matches_the_distribution(kwargs, expected):
    model = fixed_distribution_model([0.1, 0.2, 0.3, 0.4, 1e-30])
    out = generate(model, torch.zeros(1000, 1, dtype=torch.long), 8, do_sample=True, seed=1234, **kwargs)[
        :, 1:
    ]
    counts = torch.bincount(out.flatten(), minlength=5).double()
    expected = torch.tensor(expected, dtype=torch.float64)
    assert torch.all(counts[expected == 0] == 0)  # filtered tokens are never drawn
    support = expected > 0
    stat = chi_square(counts[support], expected[support])
    assert stat < CHI2_CRITICAL_0_001[int(support.sum()) - 1], (stat, counts.tolist())


def test_chi_square_rejects_a_wrong_distribution():
    model = fixed_distribution_model([0.1, 0.2, 0.3, 0.4])
    out = generate(model, torch.zeros(1000, 1, dtype=torch.long), 8, do_sample=True, seed=1234)[:, 1:]
    counts = torch.bincount(out.flatten(), minlength=4).double()
    assert (
        chi_square(counts, torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64))
        > CHI2_CRITICAL_0_001[3]
    )


def test_seed_is_reproducible_and_leaves_global_rng_alone():
    model = make_model()
    idx = torch.tensor([[3, 1, 4]])
    state = torch.get_rng_state()
    a = generate(model, idx, 12, do_sample=True, seed=7, num_return_sequences=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    assert torch.equal(generate(model, idx, 12, do_sample=True, seed=7, num_return_sequences=3), a)
    assert not torch.equal(a[0], a[1]) or not torch.equal(a[1], a[2])  # the rows are separate draws
    g = torch.Generator().manual_seed(7)
    assert torch.equal(generate(model, idx, 12, do_sample=True, generator=g, num_return_sequences=3), a)
    assert torch.equal(
        generate(model, idx, 12, do_sample=True, seed=7, num_return_sequences=3, use_cache=False), a
    )


def test_num_return_sequences_repeats_rows_prompt_by_prompt():
    model = make_model()
    idx = torch.tensor([[1, 2], [3, 4]])
    out = generate(model, idx, 3, do_sample=True, seed=0, num_return_sequences=3)
    assert out.shape == (6, 5)
    assert out[:, :2].tolist() == [[1, 2]] * 3 + [[3, 4]] * 3


# ----- end of sequence ----------------------------------------------------------------------------


def test_eos_finishes_a_row_and_pads_it():
    model = make_model()
    idx = torch.randint(0, V, (3, 4), generator=torch.Generator().manual_seed(5))
    free = generate(model, idx, 10, do_sample=False)
    eos = int(free[0, 6])  # row 0 produces it at its third new token
    out = generate(model, idx, 10, do_sample=False, eos_token_id=eos, pad_token_id=0)
    for row in range(3):
        new = free[row, 4:].tolist()
        stop = new.index(eos) + 1 if eos in new else len(new)
        assert out[row, 4 : 4 + stop].tolist() == new[:stop]
        assert (out[row, 4 + stop :] == 0).all()
    assert out.shape[1] <= free.shape[1]


def test_generation_stops_when_every_row_is_finished():
    model = make_model()
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = generate(
        model, idx, 10, do_sample=True, seed=0, eos_token_id=list(range(V))
    )  # any token ends a row
    assert out.shape == (2, 4)
    assert len(list(stream(model, idx, 10, do_sample=True, seed=0, eos_token_id=list(range(V))))) == 1


# ----- parity with transformers' generate ---------------------------------------------------------


@pytest.fixture(scope="module")
def hf_pair():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=97, n_positions=32,
                                  bos_token_id=0, eos_token_id=None, tie_word_embeddings=False)  # fmt: skip
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(2.0)  # with an untied head, enough that the greedy path does not repeat one token
    return hf, GPT.from_hf(hf).eval()


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.5])
def test_greedy_matches_transformers_generate(hf_pair, repetition_penalty):
    hf, ours = hf_pair
    idx = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(6))
    theirs = hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=20,
                         pad_token_id=0, repetition_penalty=repetition_penalty)  # fmt: skip
    assert min(len(set(row[6:].tolist())) for row in theirs) > 5
    for use_cache in (True, False):
        out = generate(
            ours, idx, 20, do_sample=False, repetition_penalty=repetition_penalty, use_cache=use_cache
        )
        assert torch.equal(out, theirs)


# ----- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": None}, "max_new_tokens"),  # neither length
        ({"max_new_tokens": 3, "max_length": 9}, "max_length"),  # both
        ({"max_new_tokens": None, "max_length": 2}, "max_length"),  # shorter than the prompt
        ({"num_return_sequences": 0}, "num_return_sequences"),
        ({"seed": 1, "generator": torch.Generator()}, "seed"),
        ({"eos_token_id": []}, "eos_token_id"),
        ({"eos_token_id": 1, "pad_token_id": V}, "pad_token_id"),
        ({"eos_token_id": V}, r"eos_token_id must be a token id in 0\.\.60"),  # past the vocabulary
        ({"eos_token_id": [1, V + 5]}, "eos_token_id"),
        ({"input_ids": torch.tensor([[1, 2]])}, "input_ids"),  # a prompt given twice
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    model = make_model()
    kwargs = {"max_new_tokens": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([[1, 2, 3]]), **kwargs)
    with pytest.raises(ValueError, match=message):
        stream(model, torch.tensor([[1, 2, 3]]), **kwargs)  # checked at the call, not at the first token


@pytest.mark.parametrize(
    ("idx", "message"),
    [
        (torch.zeros(1, 0, dtype=torch.long), "empty"),
        ([], "empty"),  # torch.as_tensor([]) is float32: the emptiness is what to report
        ([[]], "empty"),
        (torch.zeros(0, dtype=torch.long), "empty"),
        (torch.tensor([[1, V]]), "vocabulary"),
        (torch.tensor([[-1, 2]]), "vocabulary"),
        (torch.tensor([[1.0, 2.0]]), "integer"),
        (torch.zeros(1, 1, 2, dtype=torch.long), "shape"),
    ],
)
def test_bad_prompts_raise_value_error(idx, message):
    with pytest.raises(ValueError, match=message):
        generate(make_model(), idx, 3)


def test_error_messages_name_the_allowed_range():
    model = make_model()
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generate(model, torch.tensor([1]), 2, top_p=2.0)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0"):
        generate(model, torch.tensor([1]), 2, temperature=-1)


def test_gptmini_generate_stays_callable_after_importing_the_submodule():
    import subprocess
    import sys

    code = (
        "import torch, gptmini\n"
        "from gptmini.generate import stream\n"  # binds the package attribute to the submodule
        "from gptmini import GPT, GPTConfig\n"
        "m = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))\n"
        "out = gptmini.generate(m, torch.zeros(1, 2, dtype=torch.long), max_new_tokens=3, do_sample=False)\n"
        "assert out.shape == (1, 5), out.shape\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("pos_encoding", ["rope", "sinusoidal", "learned"])
def test_a_model_and_its_output_still_train_after_generating(pos_encoding):
    """Decoding runs under inference_mode; neither the sequences nor tables grown meanwhile may leak it."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding=pos_encoding)
    model = GPT(cfg)
    out = generate(model, torch.zeros(2, 3, dtype=torch.long), max_new_tokens=20, do_sample=False)  # past 8
    assert not out.is_inference()
    x = out[:, -9:-1] if pos_encoding == "learned" else out[:, :-1]
    _, loss = model.train()(x, out[:, -x.shape[1] :])
    loss.backward()  # fails with "Inference tensors cannot be saved for backward" if anything leaked
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_one_token_step_on_cuda(pos_encoding):
    model = make_model(pos_encoding).cuda()
    idx = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(9)).cuda()
    forward, flat = step_both_ways(model, idx, prefill=4, exact=False)  # GPU kernels may round otherwise
    assert all(torch.allclose(a, b, atol=1e-5, rtol=0) for a, b in zip(forward, flat, strict=True))
    out = generate(model, idx[:, :4], 12, do_sample=False)
    assert torch.equal(out, generate(model, idx[:, :4], 12, do_sample=False, use_cache=False))


def test_prompt_as_input_ids_and_greedy_by_default():
    model = make_model()
    idx = torch.tensor([[3, 1, 4], [1, 5, 9]])
    expected = greedy_reference(model, idx, 6)
    assert torch.equal(generate(model, idx, 6), expected)  # do_sample defaults to False
    assert torch.equal(generate(model, input_ids=idx, max_new_tokens=6), expected)
    assert torch.equal(model.generate(input_ids=idx, max_length=9), expected)
    assert torch.equal(torch.cat(list(stream(model, input_ids=idx, max_new_tokens=6)), 1), expected[:, 3:])
    with pytest.raises(ValueError, match="input_ids"):
        generate(model, max_new_tokens=6)  # no prompt at all


@pytest.mark.parametrize("temperature", [1e-30, 1e-38, 1e-39, 5e-324])
def test_a_vanishing_temperature_is_greedy(temperature):
    """Below GREEDY_BELOW the scaled logits would overflow float32 (inf, then NaN probabilities)."""
    model = make_model()
    idx = torch.tensor([[3, 1, 4]])
    out = generate(model, idx, 8, do_sample=True, temperature=temperature, seed=0)
    assert torch.equal(out, greedy_reference(model, idx, 8))
    sampled = generate(model, idx, 8, do_sample=True, temperature=1e-3, seed=0)  # still sampling
    assert sampled.shape == out.shape
