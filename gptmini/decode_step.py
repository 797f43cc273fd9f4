"""The cached forward pass of one new token, written out flat: what makes decoding with a KV cache fast.

With a KV cache, each decoding step feeds the model one token per sequence. On a small model such a
step is a few dozen tiny tensor operations, and their fixed costs (Python, one call through
``nn.Module.__call__`` per module, dispatching each operation) take longer than the arithmetic.
:class:`OneTokenStep` runs the same operations as ``GPT.forward`` for that case, in one function,
and leaves out what only a general forward pass needs. ``generate`` uses it wherever it can stand in
for the model (see :meth:`OneTokenStep.unsupported`) and calls the model otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from gptmini.attention import CausalSelfAttention, KVCache, scaled_dot_product_attention
from gptmini.model import GPT, MLP, Block, ReLUSquaredMLP, SwiGLU, softcap
from gptmini.positional import RotaryEmbedding, SinusoidalPositionalEncoding

# the modules OneTokenStep knows how to run (exact types: a subclass may compute something else)
_PLAIN_MODULES = (GPT, Block, CausalSelfAttention, MLP, SwiGLU, ReLUSquaredMLP, nn.Linear, nn.LayerNorm,
                  nn.RMSNorm, nn.GELU, nn.Embedding, nn.Dropout, nn.ModuleList, nn.ModuleDict,
                  SinusoidalPositionalEncoding, RotaryEmbedding)  # fmt: skip


class OneTokenStep:
    """The cached forward pass of one new token per row: ``step(tokens)``, tokens (B,) -> logits (B, V).

    It computes what ``model(tokens[:, None], kv_cache=cache)[0][:, -1]`` computes, with the same
    torch operations on the same numbers, so the logits are equal bit for bit (tested for every
    position encoding, both attention paths, under autocast, and for the chapter-12 variants: RMSNorm,
    SwiGLU and ReLU², grouped-query attention, QK-norm, both RoPE layouts, logit soft-capping). What it leaves out is what a general
    forward pass needs and a one-token step does not: a call through ``nn.Module.__call__`` for every
    module (twelve per block), dropout layers that do nothing in eval mode, a check of token ids that
    the decoding loop produced itself, and a time dimension of size 1. On a small model a step costs
    more in such fixed costs than in arithmetic: on the 1.4M-parameter model of
    ``benchmarks/bench_generate.py`` the flat step takes about 40% less time than the forward pass.

    It holds the model's weight tensors themselves: in-place updates (an optimizer step) are seen, a
    parameter replaced by a new tensor after the step was made is not. It can only stand in for a
    plain :class:`~gptmini.model.GPT` in eval mode made of the library's own layers without hooks;
    :meth:`unsupported` says why not otherwise (a LoRA layer, a forward hook, a subclass), and
    ``generate`` then calls the model as usual.
    """

    def __init__(self, model: GPT, cache: KVCache):
        reason = self.unsupported(model)
        if reason is not None:
            raise ValueError(f"OneTokenStep cannot stand in for this model's forward pass: {reason}")
        tr = model.transformer
        self.cache, self.pos_encoding = cache, model.config.pos_encoding
        self.logit_softcap = model.config.logit_softcap
        self.wte = tr.wte.weight
        self.wpe = tr.wpe.weight if self.pos_encoding == "learned" else None
        self.sinusoidal, self.rotary = getattr(model, "sinusoidal", None), getattr(model, "rotary", None)
        # the tensors themselves, grouped as the layers' arguments: reading them through the modules at
        # every step would cost time (nn.Module attribute lookups)
        self.blocks = [
            (_norm(b.ln_1), _affine(b.attn.c_attn), _affine(b.attn.c_proj), _heads(b.attn), _qk_norms(b.attn),
             b.attn.rotate, b.attn.attn_impl == "explicit", _norm(b.ln_2), _mlp(b.mlp))
            for b in tr.h
        ]  # fmt: skip
        self.ln_f, self.lm_head = _norm(tr.ln_f), _affine(model.lm_head)

    @staticmethod
    def unsupported(model) -> str | None:
        """Why the flat step cannot stand in for ``model``'s forward pass, or None when it can."""
        if type(model) is not GPT:
            return f"the model is a {type(model).__qualname__}, not a GPT (a subclass may change forward)"
        if model.training:
            return "the model is in training mode (dropout)"
        if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
            return "global forward hooks are registered"
        for name, module in model.named_modules():
            if type(module) not in _PLAIN_MODULES:  # LoRA, parametrized weights, a subclass
                return f"module {name} is a {type(module).__qualname__}, which the flat step does not know"
            if module._forward_hooks or module._forward_pre_hooks:
                return f"module {name or 'model'} has a forward hook"
            if isinstance(module, nn.GELU) and module.approximate != "tanh":
                return f"module {name} is GELU(approximate={module.approximate!r}), not the tanh form"
        return None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B,), the newest token of each row, at position cache.length -> next-token logits (B, V)."""
        cache, B = self.cache, tokens.shape[0]
        pos = cache.length
        end = pos + 1
        cache.check_room(B, 1)
        x = F.embedding(tokens, self.wte)  # (B, C): a row per sequence, no time dimension
        rope = None
        if self.pos_encoding == "learned":
            x = x + self.wpe[pos]
        elif self.pos_encoding == "sinusoidal":
            x = x + self.sinusoidal(pos, 1)[0].to(x.dtype)
        elif self.pos_encoding == "rope":
            rope = self.rotary(pos, 1)  # (cos, sin), each (1, hd/2)
        for i, (ln_1, c_attn, c_proj, heads, qk_norms, rotate, explicit, ln_2, mlp) in enumerate(self.blocks):
            nh, nkv, hd = heads
            h = ln_1(x)
            q, k, v = F.linear(h, *c_attn).split((nh * hd, nkv * hd, nkv * hd), dim=-1)
            # (B, heads, 1, hd): with one position, the forward pass's transpose is only a view
            q, k, v = q.view(B, nh, 1, hd), k.view(B, nkv, 1, hd), v.view(B, nkv, 1, hd)
            if qk_norms is not None:
                q_norm, k_norm = qk_norms
                q, k = q_norm(q), k_norm(k)
            if rope is not None:
                q, k = rotate(q, *rope), rotate(k, *rope)
            keys, values = cache.k[i], cache.v[i]
            keys[:, :, pos:end] = k
            values[:, :, pos:end] = v
            keys, values = keys[:, :, :end], values[:, :, :end]  # (B, nkv, end, hd)
            if keys.dtype != q.dtype:  # autocast: as in CausalSelfAttention
                keys, values = keys.to(q.dtype), values.to(q.dtype)
            if nkv != nh:  # grouped-query attention: as in CausalSelfAttention
                group = nh // nkv
                keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
            if explicit:
                y = scaled_dot_product_attention(q, keys, values)[0]
            else:  # the one query may see every key: no mask
                y = F.scaled_dot_product_attention(q, keys, values)
            x = x + F.linear(y.view(B, -1), *c_proj)
            h = ln_2(x)
            c_gate, c_fc, mlp_proj, kind = mlp
            u = F.linear(h, *c_fc)
            if kind == "swiglu":
                u = F.silu(F.linear(h, *c_gate)) * u
            elif kind == "relu2":
                u = F.relu(u).square()
            else:
                u = F.gelu(u, approximate="tanh")
            x = x + F.linear(u, *mlp_proj)
        cache.advance(1)
        logits = F.linear(self.ln_f(x), *self.lm_head)  # (B, V)
        return logits if self.logit_softcap is None else softcap(logits, self.logit_softcap)


def _norm(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The call that the LayerNorm or RMSNorm module makes, with its arguments bound: x -> norm(x)."""
    if isinstance(norm, nn.RMSNorm):
        return partial(F.rms_norm, normalized_shape=norm.normalized_shape, weight=norm.weight, eps=norm.eps)
    return partial(F.layer_norm, normalized_shape=norm.normalized_shape, weight=norm.weight, bias=norm.bias,
                   eps=norm.eps)  # fmt: skip


def _heads(attn: CausalSelfAttention) -> tuple[int, int, int]:
    """(query heads, key/value heads, head size)."""
    return attn.n_head, attn.n_kv_head, attn.head_dim


def _qk_norms(attn: CausalSelfAttention) -> tuple | None:
    """The QK-norm layers as _norm calls, or None without QK-norm."""
    return None if attn.q_norm is None else (_norm(attn.q_norm), _norm(attn.k_norm))


def _mlp(mlp: nn.Module) -> tuple:
    """(gate or None, up, down, kind): the MLP's weights as F.linear arguments, and its activation."""
    if isinstance(mlp, SwiGLU):
        return _affine(mlp.c_gate), _affine(mlp.c_fc), _affine(mlp.c_proj), "swiglu"
    kind = "relu2" if isinstance(mlp, ReLUSquaredMLP) else "gelu"
    return None, _affine(mlp.c_fc), _affine(mlp.c_proj), kind


def _affine(linear: nn.Linear) -> tuple:
    """The arguments of F.linear after the input: weight and bias (None without one)."""
    return linear.weight, linear.bias
