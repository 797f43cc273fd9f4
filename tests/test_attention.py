"""Attention: the explicit formula against PyTorch's fused kernel, the causal mask, the KV cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptmini.attention import CausalSelfAttention, KVCache, causal_mask, scaled_dot_product_attention
from gptmini.model import GPT, GPTConfig

POS_ENCODINGS = ["learned", "sinusoidal", "rope", "none"]


def test_causal_mask_with_offset():
    assert torch.equal(causal_mask(3, 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # Two new queries at positions 3 and 4 after three cached keys: bottom-right aligned.
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 5, offset=3), expected)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 4),
    t=st.integers(1, 17),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_explicit_attention_equals_torch_sdpa(b, h, t, d, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, b, h, t, d, generator=g)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(t, t))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(b, h, t), atol=1e-6)
    assert (weights.triu(diagonal=1) == 0).all()  # no weight on the future


def test_scores_are_scaled_by_sqrt_dk():
    q = torch.ones(1, 2, 4)
    k = torch.tensor([[[1.0, 1, 1, 1], [0, 0, 0, 0]]])
    _, w = scaled_dot_product_attention(q, k, torch.zeros(1, 2, 4))
    # scores: 4/√4 = 2 and 0 -> softmax weights e²/(e²+1), 1/(e²+1)
    assert w[0, 0, 0].item() == pytest.approx(
        torch.tensor(2.0).exp().item() / (torch.tensor(2.0).exp().item() + 1)
    )


@settings(max_examples=25, deadline=None)
@given(
    n_head=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    t=st.integers(1, 12),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_attention_module_paths_agree(n_head, head_dim, t, bias, seed):
    torch.manual_seed(seed)
    n_embd = n_head * head_dim
    fast = CausalSelfAttention(n_embd, n_head, bias=bias, attn_impl="sdpa")
    explicit = CausalSelfAttention(n_embd, n_head, bias=bias, attn_impl="explicit")
    explicit.load_state_dict(fast.state_dict())
    x = torch.randn(2, t, n_embd)
    y_fast, none = fast(x)
    y_explicit, weights = explicit(x)
    assert none is None and weights.shape == (2, n_head, t, t)
    assert torch.allclose(y_fast, y_explicit, atol=1e-5)
    y_requested, weights_requested = fast(x, need_weights=True)  # weights force the explicit path
    assert torch.allclose(y_requested, y_explicit, atol=1e-6) and torch.equal(weights_requested, weights)


def test_attention_module_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"n_embd \(10\) must be divisible by n_head \(3\)"):
        CausalSelfAttention(10, 3)
    with pytest.raises(ValueError, match="unknown attn_impl 'flash'"):
        CausalSelfAttention(8, 2, attn_impl="flash")


# ----- KV cache ------------------------------------------------------------------------------------


def _model(pe: str, impl: str = "sdpa", **kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=37, block_size=16, n_layer=2, n_head=3, n_embd=24, pos_encoding=pe, attn_impl=impl)
    return GPT(GPTConfig(**(cfg | kw))).eval()


def test_new_cache_is_empty_and_preallocated():
    model = _model("learned")
    cache = model.new_kv_cache(5)
    assert isinstance(cache, KVCache) and cache.length == 0 and cache.max_length == 16
    assert len(cache.k) == len(cache.v) == 2
    assert cache.k[0].shape == (5, 3, 16, 8) and cache.k[0].dtype == torch.float32
    assert model.new_kv_cache(1, max_length=7, dtype=torch.float64).v[1].shape == (1, 3, 7, 8)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("pe", POS_ENCODINGS)
def test_prefill_then_one_token_per_step_equals_full_forward(pe, impl):
    model = _model(pe, impl)
    T = 16 if pe == "learned" else 45  # beyond block_size where the positions allow it
    idx = torch.randint(0, 37, (3, T))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(3, max_length=T)
        steps = [model(idx[:, :6], kv_cache=cache)[0]]  # prefill
        assert cache.length == 6
        steps += [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(6, T)]
    assert cache.length == T
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("pe", POS_ENCODINGS)
def test_chunks_after_a_prefill_use_the_offset_causal_mask(pe):
    model = _model(pe)
    idx = torch.randint(0, 37, (2, 16))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(2)
        chunks = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 5), (5, 9), (9, 10), (10, 16)]]
    assert torch.allclose(torch.cat(chunks, dim=1), full, atol=1e-5)


def test_reset_starts_again():
    model = _model("rope")
    idx = torch.randint(0, 37, (1, 8))
    cache = model.new_kv_cache(1)
    with torch.no_grad():
        first, _ = model(idx, kv_cache=cache)
        cache.reset()
        assert cache.length == 0
        again, _ = model(idx, kv_cache=cache)
    assert torch.equal(first, again)


def test_cache_overflow_raises_and_leaves_the_cache_unchanged():
    model = _model("rope")
    cache = model.new_kv_cache(1, max_length=10)
    model(torch.zeros(1, 8, dtype=torch.long), kv_cache=cache)
    with pytest.raises(
        ValueError, match=r"8 cached \+ 3 new = 11 positions exceeds the cache's max_length 10"
    ):
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)
    assert cache.length == 8


def test_learned_positions_limit_the_cache_to_block_size():
    model = _model("learned")
    with pytest.raises(ValueError, match=r"max_length 17 exceeds block_size 16"):
        model.new_kv_cache(1, max_length=17)
    cache = model.new_kv_cache(1)
    model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match=r"17 exceeds block_size 16"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


def test_cache_batch_size_must_match():
    model = _model("none")
    with pytest.raises(ValueError, match=r"batch size 2 does not match the KV cache's 3"):
        model(torch.zeros(2, 1, dtype=torch.long), kv_cache=model.new_kv_cache(3))


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_cache_max_length_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        _model("none").new_kv_cache(1, max_length=bad)
