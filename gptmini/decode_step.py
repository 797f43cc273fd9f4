"""The cached forward pass of one new token, written out flat: what makes decoding with a KV cache fast.

With a KV cache, each decoding step feeds the model one token per sequence. On a small model such a
step is a few dozen tiny tensor operations, and their fixed costs (Python, one call through
``nn.Module.__call__`` per module, dispatching each operation) take longer than the arithmetic.
:class:`OneTokenStep` runs the same operations as ``GPT.forward`` for that case, in one function,
and leaves out what only a general forward pass needs. ``generate`` uses it wherever it can stand in
for the model (see :meth:`OneTokenStep.unsupported`) and calls the model otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptmini.attention import CausalSelfAttention, KVCache, scaled_dot_product_attention
from gptmini.model import GPT, MLP, Block
from gptmini.positional import RotaryEmbedding, SinusoidalPositionalEncoding, apply_rope

# the modules OneTokenStep knows how to run (exact types: a subclass may compute something else)
_PLAIN_MODULES = (GPT, Block, CausalSelfAttention, MLP, nn.Linear, nn.LayerNorm, nn.GELU, nn.Embedding,
                  nn.Dropout, nn.ModuleList, nn.ModuleDict,
                  SinusoidalPositionalEncoding, RotaryEmbedding)  # fmt: skip


class OneTokenStep:
    """The cached forward pass of one new token per row: ``step(tokens)``, tokens (B,) -> logits (B, V).

    It computes what ``model(tokens[:, None], kv_cache=cache)[0][:, -1]`` computes, with the same
    torch operations on the same numbers, so the logits are equal bit for bit (tested for every
    position encoding, both attention paths and under autocast). What it leaves out is what a general
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
        self.wte = tr.wte.weight
        self.wpe = tr.wpe.weight if self.pos_encoding == "learned" else None
        self.sinusoidal, self.rotary = getattr(model, "sinusoidal", None), getattr(model, "rotary", None)
        # the tensors themselves, grouped as the layers' arguments: reading them through the modules at
        # every step would cost time (nn.Module attribute lookups)
        self.blocks = [
            (_norm(b.ln_1), _affine(b.attn.c_attn), _affine(b.attn.c_proj), _norm(b.ln_2),
             _affine(b.mlp.c_fc), _affine(b.mlp.c_proj), b.attn.n_head, b.attn.attn_impl == "explicit")
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
        for i, (ln_1, c_attn, c_proj, ln_2, c_fc, mlp_proj, n_head, explicit) in enumerate(self.blocks):
            h = F.layer_norm(x, *ln_1)
            q, k, v = F.linear(h, *c_attn).view(B, 3, n_head, 1, -1).unbind(1)  # (B, nh, 1, hd) each
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            keys, values = cache.k[i], cache.v[i]
            keys[:, :, pos:end] = k
            values[:, :, pos:end] = v
            keys, values = keys[:, :, :end], values[:, :, :end]  # (B, nh, end, hd)
            if keys.dtype != q.dtype:  # autocast: as in CausalSelfAttention
                keys, values = keys.to(q.dtype), values.to(q.dtype)
            if explicit:
                y = scaled_dot_product_attention(q, keys, values)[0]
            else:  # the one query may see every key: no mask
                y = F.scaled_dot_product_attention(q, keys, values)
            x = x + F.linear(y.view(B, -1), *c_proj)
            h = F.layer_norm(x, *ln_2)
            x = x + F.linear(F.gelu(F.linear(h, *c_fc), approximate="tanh"), *mlp_proj)
        cache.advance(1)
        return F.linear(F.layer_norm(x, *self.ln_f), *self.lm_head)  # (B, V)


def _norm(ln: nn.LayerNorm) -> tuple:
    """The arguments of F.layer_norm after the input, as the module passes them."""
    return ln.normalized_shape, ln.weight, ln.bias, ln.eps


def _affine(linear: nn.Linear) -> tuple:
    """The arguments of F.linear after the input: weight and bias (None without one)."""
    return linear.weight, linear.bias
