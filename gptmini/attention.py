"""Causal self-attention: softmax(QKᵀ/√d_k)V, written out for reading and run fast by PyTorch.

Two paths compute the same thing (they agree to 1e-5 in float32, tested):

- the *explicit* path, :func:`scaled_dot_product_attention`, forms the (T, T) score matrix and can
  return the attention weights (chapter 03 plots them);
- the *fast* path, ``torch.nn.functional.scaled_dot_product_attention``, which on a GPU dispatches
  to fused flash/memory-efficient kernels that never materialise the score matrix.

:class:`KVCache` keeps the keys and values of positions already processed, so that generating one
more token costs one row of attention instead of recomputing the whole prefix. With grouped-query
attention (``n_kv_head`` < ``n_head``, as in Llama and Qwen3) it holds only the ``n_kv_head`` key/value heads, so
its memory shrinks by ``n_head / n_kv_head``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptmini.positional import ROPE_LAYOUTS, apply_rope, apply_rope_interleaved

ATTN_IMPLS = ("sdpa", "explicit")


def causal_mask(t_query: int, t_key: int, offset: int = 0, device=None) -> torch.Tensor:
    """Boolean (t_query, t_key) mask, True where query i (at position offset+i) may see key j: j <= offset+i."""
    query_pos = torch.arange(t_query, device=device)[:, None] + offset  # (Tq, 1)
    key_pos = torch.arange(t_key, device=device)[None, :]  # (1, Tk)
    return key_pos <= query_pos


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √d_k) v, explicitly; returns (output, weights before dropout).

    q (..., Tq, d_k), k (..., Tk, d_k), v (..., Tk, d_v); ``mask`` (Tq, Tk) is True where attending
    is allowed. Dividing by √d_k makes the scores' variance independent of d_k: 1 if the components of
    q and k have unit variance (the argument of Vaswani et al.), so that a wide head does not saturate
    the softmax more than a narrow one.
    """
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk), each row sums to 1
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights  # (..., Tq, d_v), (..., Tq, Tk)


class KVCache:
    """Preallocated keys and values of every layer, for incremental decoding.

    ``k[layer]`` and ``v[layer]`` have shape (B, n_kv_head, max_length, head_dim); the first ``length``
    positions are filled. A forward pass with the cache processes its tokens at positions
    ``length, length+1, ...``, writes their keys/values and advances ``length``.
    Made by ``GPT.new_kv_cache``.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_kv_head: int,
        head_dim: int,
        max_length: int,
        device=None,
        dtype=None,
    ):
        shape = (batch_size, n_kv_head, max_length, head_dim)  # n_kv_head = n_head without GQA
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.batch_size, self.max_length = batch_size, max_length
        self.length = 0

    def check_room(self, batch_size: int, t_new: int) -> None:
        """Raise ValueError unless t_new more positions of a batch of batch_size fit."""
        if batch_size != self.batch_size:
            raise ValueError(f"batch size {batch_size} does not match the KV cache's {self.batch_size}")
        if self.length + t_new > self.max_length:
            raise ValueError(
                f"KV cache overflow: {self.length} cached + {t_new} new = {self.length + t_new} positions "
                f"exceeds the cache's max_length {self.max_length}"
            )

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_head, T_new, hd) at positions length.. of ``layer``; return all keys/values so far."""
        self.check_room(k.shape[0], k.shape[2])
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, n_kv_head, end, hd)

    def advance(self, t_new: int) -> None:
        """Mark t_new more positions as filled (the model calls this after its last layer)."""
        self.length += t_new

    def reset(self) -> None:
        """Forget everything stored (the buffers are kept and overwritten)."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused q/k/v projection (GPT-2 layout: ``c_attn``, ``c_proj``).

    The variants of today's models (Llama, Qwen3): ``n_kv_head`` < ``n_head`` key/value heads, each
    shared by a group of ``n_head / n_kv_head`` query heads (grouped-query attention; multi-query with
    one); ``head_dim`` other than n_embd/n_head (Qwen3); ``qk_norm``, an RMSNorm with a learned gain
    over each head's q and k before the rotation (Qwen3); ``rope_layout``, which dimensions RoPE pairs.
    ``c_attn``'s output is q of all heads, then k, then v: (n_head + 2·n_kv_head)·head_dim features.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        dropout: float = 0.0,
        bias: bool = True,
        attn_impl: str = "sdpa",
        *,
        n_kv_head: int | None = None,
        head_dim: int | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        rope_layout: str = "half",
    ):
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if head_dim is None and n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if n_head % n_kv_head != 0:
            raise ValueError(f"n_kv_head ({n_kv_head}) must divide n_head ({n_head})")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"unknown attn_impl {attn_impl!r}; allowed: {ATTN_IMPLS}")
        if rope_layout not in ROPE_LAYOUTS:
            raise ValueError(f"unknown rope_layout {rope_layout!r}; allowed: {ROPE_LAYOUTS}")
        self.n_embd, self.n_head, self.n_kv_head = n_embd, n_head, n_kv_head
        self.head_dim = n_embd // n_head if head_dim is None else head_dim
        self.dropout, self.attn_impl = dropout, attn_impl
        self.rotate = apply_rope if rope_layout == "half" else apply_rope_interleaved
        hd = self.head_dim
        self.c_attn = nn.Linear(n_embd, (n_head + 2 * n_kv_head) * hd, bias=bias)  # q, k, v at once
        self.c_proj = nn.Linear(n_head * hd, n_embd, bias=bias)
        self.q_norm = nn.RMSNorm(hd, eps=norm_eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(hd, eps=norm_eps) if qk_norm else None
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) -> (y (B, T, C), weights (B, nh, T, T_total) if need_weights else None).

        ``rope`` is (cos, sin) of the rotary angles for these T positions; ``kv_cache`` holds the
        earlier positions, of which this call's tokens come right after.
        """
        B, T, C = x.shape
        nh, nkv, hd = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split((nh * hd, nkv * hd, nkv * hd), dim=-1)
        q, k, v = q.view(B, T, nh, hd), k.view(B, T, nkv, hd), v.view(B, T, nkv, hd)
        if self.q_norm is not None:  # QK-norm: each head's q and k scaled to RMS 1 (times a gain)
            q, k = self.q_norm(q), self.k_norm(k)
        # the heads become a batch dimension: (B, nh, T, hd) for q, (B, nkv, T, hd) for k and v
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if rope is not None:
            q, k = self.rotate(q, *rope), self.rotate(k, *rope)
        offset = 0
        if kv_cache is not None:
            offset = kv_cache.length
            k, v = kv_cache.update(layer, k, v)  # (B, nkv, offset+T, hd): only n_kv_head heads stored
            if k.dtype != q.dtype:  # the cache may hold another dtype than autocast gives
                k, v = k.to(q.dtype), v.to(q.dtype)
        if nkv != nh:  # grouped-query: query head h reads key/value head h // (nh / nkv)
            k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
        t_key = k.shape[2]
        dropout_p = self.dropout if self.training else 0.0

        weights = None
        if need_weights or self.attn_impl == "explicit":
            mask = causal_mask(T, t_key, offset, x.device)
            y, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p)
        elif offset == 0:  # square causal attention: the fused kernels' is_causal
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            # is_causal aligns the mask top-left, but our queries are the *last* T of t_key positions,
            # so pass the mask shifted by offset. One new token may see every cached key: no mask.
            mask = None if T == 1 else causal_mask(T, t_key, offset, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, nh * hd)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y)), weights
