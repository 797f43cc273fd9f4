"""Positional encodings: the sinusoidal formula, RoPE's relative-position property, growing tables."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptmini.model import GPT, GPTConfig
from gptmini.positional import (
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    apply_rope,
    rope_angles,
    sinusoidal_table,
)


@pytest.mark.parametrize("dim", [2, 7, 16, 33])
def test_sinusoidal_table_matches_vaswani_formula(dim):
    table = sinusoidal_table(50, dim)
    assert table.shape == (50, dim) and table.dtype == torch.float32
    for pos in (0, 1, 7, 49):
        for j in range(dim):
            i = j // 2
            angle = pos / 10000 ** (2 * i / dim)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[pos, j].item() == pytest.approx(expected, abs=1e-6)


def test_sinusoidal_position_zero_is_sin0_cos0():
    row = sinusoidal_table(1, 8)[0]
    assert torch.equal(row, torch.tensor([0.0, 1.0] * 4))


def _rotate(vec: torch.Tensor, pos: int) -> torch.Tensor:
    hd = vec.shape[-1]
    angle = rope_angles(pos + 1, hd)[pos]  # (hd/2,), float64
    return apply_rope(vec[None, None, None, :], angle.cos(), angle.sin())[0, 0, 0]


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(0, 500),
    n=st.integers(0, 500),
    shift=st.integers(0, 500),
    half=st.integers(1, 16),
    seed=st.integers(0, 2**16),
)
def test_rope_dot_product_depends_only_on_offset(m, n, shift, half, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 2 * half, generator=g, dtype=torch.float64)
    before = _rotate(q, m) @ _rotate(k, n)
    after = _rotate(q, m + shift) @ _rotate(k, n + shift)
    assert after.item() == pytest.approx(before.item(), abs=1e-9, rel=1e-9)


@given(pos=st.integers(0, 1000), seed=st.integers(0, 2**16))
@settings(max_examples=20, deadline=None)
def test_rope_is_a_rotation_and_identity_at_zero(pos, seed):
    x = torch.randn(12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.linalg.norm(_rotate(x, pos)).item() == pytest.approx(torch.linalg.norm(x).item(), rel=1e-12)
    assert torch.allclose(_rotate(x, 0), x)


def test_half_split_rope_equals_interleaved_rope_up_to_a_permutation():
    """The paper rotates neighbouring pairs (2i, 2i+1); gptmini pairs i with i + hd/2."""
    hd, T = 8, 5
    x = torch.randn(1, 1, T, hd, dtype=torch.float64)
    angle = rope_angles(T, hd)  # (T, hd/2)
    cos, sin = angle.cos(), angle.sin()
    # Interleaved, as in Su et al. (2021), eq. 34.
    even, odd = x[..., 0::2], x[..., 1::2]
    interleaved = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    # The same with the pairs moved to halves: dims (0,2,4,6 | 1,3,5,7).
    perm = torch.cat((torch.arange(0, hd, 2), torch.arange(1, hd, 2)))
    half_split = apply_rope(x[..., perm], cos, sin)
    assert torch.allclose(half_split, interleaved[..., perm])


def test_tables_grow_beyond_their_initial_length():
    sin = SinusoidalPositionalEncoding(10, initial_length=4)
    assert torch.equal(sin(0, 4), sinusoidal_table(4, 10))
    assert torch.equal(sin(30, 5), sinusoidal_table(35, 10)[30:])
    assert sin.table.shape[0] == 64  # grown to the next power of two
    rope = RotaryEmbedding(6, initial_length=4)
    cos, s = rope(100, 3)
    angle = rope_angles(103, 6)[100:].float()
    assert torch.allclose(cos, angle.cos()) and torch.allclose(s, angle.sin())


def test_tables_are_not_saved_in_the_state_dict():
    for pe in ("sinusoidal", "rope"):
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding=pe))
        assert not any("table" in name for name in model.state_dict())


@pytest.mark.parametrize("pe", ["sinusoidal", "rope", "none"])
def test_non_learned_positions_run_beyond_block_size(pe):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding=pe)).eval()
    idx = torch.randint(0, 11, (2, 40))
    logits, _ = model(idx)
    assert logits.shape == (2, 40, 11) and torch.isfinite(logits).all()
    # The first block_size positions do not depend on what follows (causality), table growth included.
    assert torch.allclose(model(idx[:, :8])[0], logits[:, :8], atol=1e-5)


def test_learned_positions_refuse_beyond_block_size():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=r"sequence length 9 exceeds block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_sinusoidal_model_adds_the_table_to_the_token_embedding():
    model = GPT(
        GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, pos_encoding="sinusoidal")
    )
    idx = torch.tensor([[3, 3, 3]])
    seen = {}
    model.transformer.drop.register_forward_hook(lambda mod, args, out: seen.setdefault("x", out))
    model(idx)
    expected = model.transformer.wte.weight[3] + sinusoidal_table(3, 8)
    assert torch.allclose(seen["x"][0], expected)
