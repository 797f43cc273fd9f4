"""The GPT model: token (+ position) embeddings, a stack of pre-LayerNorm blocks, an LM head.

Parameter names follow GPT-2 (and nanoGPT): ``transformer.wte``, ``transformer.wpe``,
``transformer.h.{i}.{ln_1,attn,ln_2,mlp}``, ``transformer.ln_f``, ``lm_head``, so that GPT-2 weights
map onto it one to one (see ``hf.py``).

The same classes express today's Llama/Qwen3-shaped models through a few config fields:
``norm`` (RMSNorm for LayerNorm), ``mlp`` (SwiGLU or ReLU² for GELU), ``n_kv_head`` (grouped-query
attention), ``qk_norm``, ``rope_layout`` and ``logit_softcap``. Each variant is a small class or
function beside its GPT-2 counterpart, chosen in one place: :func:`make_norm` and :func:`make_mlp`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gptmini.attention import ATTN_IMPLS, CausalSelfAttention, KVCache
from gptmini.checks import check_field_types, read_json
from gptmini.positional import POS_ENCODINGS, ROPE_LAYOUTS, RotaryEmbedding, SinusoidalPositionalEncoding

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "relu2")
#: Fields every config.json holds; fields added since may be missing from older files and then take
#: their defaults, which reproduce the older models.
CONFIG_FILE_FIELDS = (
    "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias", "pos_encoding",
    "tie_weights", "rope_base", "layer_norm_eps", "attn_impl",
)  # fmt: skip


@dataclass
class GPTConfig:
    """Hyperparameters of a GPT; checked when constructed. The defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    block_size: int = 1024  # the context length trained on (the limit of "learned" positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers (GPT-2 has them)
    pos_encoding: str = "learned"  # "learned" | "sinusoidal" | "rope" | "none"
    tie_weights: bool = True  # the LM head shares its weight with the token embedding
    rope_base: float = 10000.0
    layer_norm_eps: float = 1e-5
    attn_impl: str = "sdpa"  # "sdpa" (fused kernels) | "explicit" (softmax(QKᵀ/√d)V written out)
    # today's models (Llama, Qwen3); the defaults are GPT-2's choices
    norm: str = "layernorm"  # "layernorm" | "rmsnorm" (no mean subtracted, no bias; eps: layer_norm_eps)
    mlp: str = "gelu"  # "gelu" | "swiglu" (Llama, Qwen) | "relu2" (ReLU squared, nanochat)
    d_ff: int | None = None  # MLP hidden width; None: see ffn_dim
    n_kv_head: int | None = None  # key/value heads, dividing n_head (grouped-query attention); None: n_head
    d_head: int | None = None  # size of one head; None: n_embd // n_head (Qwen3 sets it explicitly)
    qk_norm: bool = False  # RMSNorm with a learned gain over each head's q and k, before RoPE (Qwen3)
    rope_layout: str = "half"  # "half" (transformers: i pairs with i + hd/2) | "interleaved" (Meta: 2i, 2i+1)
    logit_softcap: float | None = None  # logits -> cap·tanh(logits/cap) (Gemma 2); None: no cap

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_field_types(self)  # bool is bool, int is int, floats finite: for every field
        if self.d_head is None and self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) so the heads split it evenly"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"unknown pos_encoding {self.pos_encoding!r}; allowed: {POS_ENCODINGS}")
        if self.pos_encoding == "rope" and self.head_dim % 2 != 0:
            size = "n_embd/n_head" if self.d_head is None else "d_head"
            raise ValueError(f"pos_encoding 'rope' needs an even head size, got {size} = {self.head_dim}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"unknown attn_impl {self.attn_impl!r}; allowed: {ATTN_IMPLS}")
        for name in ("rope_base", "layer_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        self._check_modern_variants()

    def _check_modern_variants(self) -> None:
        """The checks of the chapter-12 fields: known names, sizes that fit, no field without effect."""
        for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("rope_layout", ROPE_LAYOUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; allowed: {allowed}")
        for name in ("d_ff", "n_kv_head", "d_head"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.n_head % self.kv_heads != 0:
            raise ValueError(
                f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): each key/value head "
                "serves an equal group of query heads"
            )
        if self.rope_layout != "half" and self.pos_encoding != "rope":
            raise ValueError(
                f"rope_layout {self.rope_layout!r} needs pos_encoding 'rope', got {self.pos_encoding!r}"
            )
        cap = self.logit_softcap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float) or not cap > 0):
            raise ValueError(f"logit_softcap must be a positive number or None, got {cap!r}")

    @property
    def head_dim(self) -> int:
        """The size of one attention head: d_head, or n_embd // n_head when that is None."""
        return self.n_embd // self.n_head if self.d_head is None else self.d_head

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads: n_kv_head, or n_head (plain multi-head attention)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def ffn_dim(self) -> int:
        """The MLP's hidden width: d_ff, else 4·n_embd, or for SwiGLU ⅔ of that rounded up to a multiple of 64.

        SwiGLU has three matrices instead of two; ⅔·4·n_embd keeps its parameters (and FLOPs) those of a
        4·n_embd GELU MLP. Llama computes it the same way, ``int(2 * 4 * d / 3)`` rounded up to a
        multiple of ``multiple_of``, which is 256 in Meta's code (11008 for Llama 7B; 64 gives 10944).
        Published models set their width explicitly, so pass ``d_ff`` to reproduce one.
        """
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "swiglu":
            hidden = int(2 * 4 * self.n_embd / 3)
            return 64 * math.ceil(hidden / 64)
        return 4 * self.n_embd

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a GPTConfig is read from a dict of its fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def param_count_formula(self, non_embedding: bool = False) -> int:
        """The number of parameters in closed form (equal to ``GPT(cfg).num_params``, tested).

        GPT-2, per block: attention 4d² (+4d biases), MLP 8d² (+5d), two LayerNorms 2d (+2d):
        12d² + 2d (+11d with biases). Plus the token table V·d, the learned position table T·d,
        the final LayerNorm d (+d), and V·d for an untied LM head. ``non_embedding`` leaves out the
        lookup tables (position table; token table unless it doubles as the LM head).
        In general, with q of n_head·head_dim and k, v of n_kv_head·head_dim features, an MLP of
        width f with two matrices (three for SwiGLU), and RMSNorms (a gain, no bias), per block:
        d·(n_head + 2·n_kv_head)·head_dim + n_head·head_dim·d for attention (+2·head_dim for QK-norm),
        2·d·f or 3·d·f for the MLP, and 2d or 4d for the two norms; biases one per output feature.
        """
        d, V, b, f = self.n_embd, self.vocab_size, int(self.bias), self.ffn_dim
        q, kv = self.n_head * self.head_dim, self.kv_heads * self.head_dim  # features of q; of k and of v
        attn = d * (q + 2 * kv) + q * d + b * (q + 2 * kv + d) + (2 * self.head_dim if self.qk_norm else 0)
        n_matrices = 3 if self.mlp == "swiglu" else 2
        mlp = n_matrices * d * f + b * ((n_matrices - 1) * f + d)
        norm = d if self.norm == "rmsnorm" else d + d * b  # one norm: gain (and bias)
        blocks = self.n_layer * (attn + mlp + 2 * norm)
        head = V * d  # tied: the token table *is* the head; untied: a separate V×d matrix
        token_table = 0 if self.tie_weights else V * d
        pos_table = self.block_size * d if self.pos_encoding == "learned" else 0
        total = blocks + norm + head
        return total if non_embedding else total + token_table + pos_table

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6N + 12·L·T·d (N non-embedding parameters, T = seq_len or block_size).

        6N: each weight does a multiply-add (2 FLOPs) per token forward, twice that backward.
        12·L·T·d: the attention scores QKᵀ and the weighted sum of V, 2·2·T·d per token and layer
        forward, times three for forward plus backward (Kaplan et al. 2020; PaLM appendix B).
        Here d is the width of the queries, n_head·head_dim (n_embd unless d_head is set); grouped
        query heads still each score every key, so n_kv_head does not change this term.
        From the shape alone, so it works for models too large to build (GPT-3).
        """
        T, d_attn = seq_len or self.block_size, self.n_head * self.head_dim
        return 6 * self.param_count_formula(non_embedding=True) + 12 * self.n_layer * T * d_attn


def make_norm(config: GPTConfig) -> nn.Module:
    """The normalisation layer over n_embd features that ``config.norm`` names.

    LayerNorm (GPT-2): (x - mean) / √(var + eps) · gain + bias. RMSNorm (Llama, Qwen): x / √(mean(x²) + eps)
    · gain, no mean subtracted and no bias: cheaper, and as good in practice (Zhang & Sennrich 2019).
    """
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)


class MLP(nn.Module):
    """Position-wise feed-forward: expand to 4·n_embd (or d_ff), GELU (tanh approximation, as GPT-2), project back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(config.ffn_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020; Llama, Qwen): c_proj(silu(c_gate(x)) · c_fc(x)), three matrices.

    ``c_gate`` and ``c_fc`` are transformers' ``gate_proj`` and ``up_proj``, ``c_proj`` its ``down_proj``.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_gate = nn.Linear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.c_fc = nn.Linear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x)))  # (B, T, C)


class ReLUSquaredMLP(nn.Module):
    """Feed-forward with relu(x)² in place of GELU (So et al. 2021, "Primer"; nanochat), two matrices."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.relu(self.c_fc(x)).square()))  # (B, T, C)


def make_mlp(config: GPTConfig) -> nn.Module:
    """The feed-forward layer that ``config.mlp`` names."""
    return {"gelu": MLP, "swiglu": SwiGLU, "relu2": ReLUSquaredMLP}[config.mlp](config)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        c = config
        self.ln_1 = make_norm(c)
        self.attn = CausalSelfAttention(
            c.n_embd, c.n_head, c.dropout, c.bias, c.attn_impl, n_kv_head=c.kv_heads, head_dim=c.head_dim,
            qk_norm=c.qk_norm, norm_eps=c.layer_norm_eps, rope_layout=c.rope_layout,
        )  # fmt: skip
        self.ln_2 = make_norm(c)
        self.mlp = make_mlp(c)

    def forward(self, x, rope=None, kv_cache=None, layer=0, need_weights=False):
        a, weights = self.attn(self.ln_1(x), rope, kv_cache, layer, need_weights)
        x = x + a
        return x + self.mlp(self.ln_2(x)), weights


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap·tanh(logits/cap): about the identity for |logits| ≪ cap, never beyond ±cap."""
    return cap * torch.tanh(logits / cap)


class GPT(nn.Module):
    """A decoder-only transformer language model: GPT-2's architecture, or with today's variants (Llama, Qwen3)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(c.vocab_size, c.n_embd),
                drop=nn.Dropout(c.dropout),
                h=nn.ModuleList(Block(c) for _ in range(c.n_layer)),
                ln_f=make_norm(c),
            )
        )
        if c.pos_encoding == "learned":
            self.transformer["wpe"] = nn.Embedding(c.block_size, c.n_embd)
        elif c.pos_encoding == "sinusoidal":
            self.sinusoidal = SinusoidalPositionalEncoding(c.n_embd, c.block_size)
        elif c.pos_encoding == "rope":
            self.rotary = RotaryEmbedding(c.head_dim, c.block_size, c.rope_base)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the projections into the residual stream by 1/√(2·n_layer), one per sublayer,
        # so that the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ----- forward -------------------------------------------------------------------------------

    def _check_idx(self, idx: torch.Tensor, start: int) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long:
            got = idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a torch.int64 (long) tensor of token ids, got {got}")
        if idx.ndim != 2:
            raise ValueError(
                f"idx must have shape (batch, time), got {idx.ndim} dimension(s): {tuple(idx.shape)}"
            )
        T, c = idx.shape[1], self.config
        if c.pos_encoding == "learned" and start + T > c.block_size:
            raise ValueError(
                f"sequence length {start + T} exceeds block_size {c.block_size}: learned positions "
                f"only exist for 0..{c.block_size - 1} (crop the prompt to the last {c.block_size} tokens)"
            )
        if idx.numel() and not torch.compiler.is_compiling():  # data-dependent: skipped when compiled
            lo, hi = int(idx.min()), int(idx.max())
            bad = lo if lo < 0 else hi
            if lo < 0 or hi >= c.vocab_size:
                raise ValueError(f"token id {bad} is outside the vocabulary 0..{c.vocab_size - 1}")

    def _trunk(self, idx, kv_cache=None, need_weights=False):
        """Embeddings and blocks: idx (B, T) -> (hidden (B, T, C) after ln_f, per-layer weights)."""
        start = 0 if kv_cache is None else kv_cache.length
        self._check_idx(idx, start)
        B, T = idx.shape
        if kv_cache is not None:
            kv_cache.check_room(B, T)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos_encoding == "learned":
            pos = torch.arange(start, start + T, device=idx.device)  # (T,)
            x = x + self.transformer.wpe(pos)  # broadcast (T, C) over the batch
        elif self.config.pos_encoding == "sinusoidal":
            x = x + self.sinusoidal(start, T).to(x.dtype)
        elif self.config.pos_encoding == "rope":
            rope = self.rotary(start, T)  # (cos, sin), each (T, hd/2)
        x = self.transformer.drop(x)
        all_weights = []
        for i, block in enumerate(self.transformer.h):
            x, weights = block(x, rope, kv_cache, i, need_weights)
            all_weights.append(weights)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.transformer.ln_f(x), all_weights

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        *,
        labels: torch.Tensor | None = None,
    ):
        """idx (B, T) int64 -> (logits (B, T, vocab), mean cross-entropy or None).

        The loss compares the prediction at each position with the token that should come next, given
        in one of two ways (-100 marks a position to ignore; giving both is an error). At least one
        position must be scored: the mean over none is undefined, so that is a ValueError.

        - ``targets`` (B, T), nanoGPT's convention, already shifted: targets[:, t] is the token that
          follows idx[:, t], usually ``idx`` moved one place left (``x[:, :-1], x[:, 1:]``). So
          ``model(idx, idx)`` asks each position to predict the token it already sees.
        - ``labels`` (B, T), ``transformers``' convention, unshifted: usually ``labels=idx``; the shift
          happens here (position t is scored on labels[:, t + 1], the last position on nothing), so
          ``model(idx, labels=idx)`` is the language-modelling loss of idx, as ``GPT2LMHeadModel``'s.

        With ``kv_cache``, idx are the tokens at positions kv_cache.length.. that follow the cached ones.
        """
        if labels is not None and targets is not None:
            raise ValueError("give targets (already shifted) or labels (shifted here), not both")
        x, _ = self._trunk(idx, kv_cache)
        logits = self.lm_head(x)  # (B, T, vocab)
        if self.config.logit_softcap is not None:  # squash smoothly into (-cap, cap) (Gemma 2)
            logits = softcap(logits, self.config.logit_softcap)
        loss = None
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.shape != idx.shape:
                got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
                raise ValueError(f"labels must be a tensor of idx's shape {tuple(idx.shape)}, got {got}")
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T): the next label, none after the last
        if targets is not None:
            _check_targets(targets, self.config.vocab_size)
            if targets.shape != idx.shape:
                raise ValueError(
                    f"targets shape {tuple(targets.shape)} must equal idx shape {tuple(idx.shape)}"
                )
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return logits, loss

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """The final hidden states (B, T, n_embd), after the last LayerNorm (input of the LM head)."""
        return self._trunk(idx)[0]

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights of every layer and head: (n_layer, B, n_head, T, T), explicit path."""
        return torch.stack(self._trunk(idx, need_weights=True)[1])

    def new_kv_cache(
        self, batch_size: int, max_length: int | None = None, device=None, dtype=None
    ) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences of up to ``max_length`` positions.

        ``max_length`` defaults to block_size; it may exceed it except with learned positions.
        It holds ``kv_heads`` heads per layer: grouped-query attention shrinks it by n_head / n_kv_head.
        """
        c = self.config
        max_length = c.block_size if max_length is None else max_length
        if not isinstance(max_length, int) or max_length <= 0:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        if c.pos_encoding == "learned" and max_length > c.block_size:
            raise ValueError(f"max_length {max_length} exceeds block_size {c.block_size} (learned positions)")
        p = self.transformer.wte.weight
        device, dtype = p.device if device is None else device, p.dtype if dtype is None else dtype
        return KVCache(c.n_layer, batch_size, c.kv_heads, c.head_dim, max_length, device=device, dtype=dtype)

    def generate(self, *args, **kwargs) -> torch.Tensor:
        """Continue a prompt: :func:`gptmini.generate.generate` with this model first (same arguments)."""
        from gptmini.generate import generate

        return generate(self, *args, **kwargs)

    # ----- counting ------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once each (a tied head is not counted twice); see param_count_formula."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.transformer.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token of this model's shape: ``GPTConfig.flops_per_token``."""
        return self.config.flops_per_token(seq_len)

    # ----- training ------------------------------------------------------------------------------

    def configure_optimizer(
        self, weight_decay: float, learning_rate: float, betas=(0.9, 0.95), device_type: str = "cpu"
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (≥ 2-D: linear weights, embeddings) only, fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},  # biases, LayerNorm gains
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=tuple(betas), fused=device_type == "cuda")

    # ----- persistence: safetensors + JSON, never pickle ----------------------------------------

    def _saved_state(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        if self.config.tie_weights:
            del state["lm_head.weight"]  # the same tensor as transformer.wte.weight
        return state

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/model.safetensors`` and ``directory/config.json``; return the directory.

        Each file is written beside its final name and renamed over it, so an interrupted save leaves
        every file either old or new, never half written. The weights also carry the config in their
        metadata: :meth:`load` refuses a pair of files from two different saves.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self._saved_state().items()}
        config = self.config.to_dict()
        metadata = {"format": "pt", "library": "gptmini", "config": json.dumps(config, sort_keys=True)}
        _write_replacing(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata=metadata))
        text = json.dumps(config, indent=2) + "\n"
        _write_replacing(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location=None) -> GPT:
        """Read a model written by :meth:`save`, checking every tensor's name and shape first."""

        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} not found: not a directory written by GPT.save")
        config = _read_config(directory / CONFIG_NAME)
        device = _load_device(map_location)
        state = _read_weights(directory / WEIGHTS_NAME, device)
        _check_same_save(directory, config)
        dtype = next(iter(state.values())).dtype if state else None  # keep the saved precision
        model = cls(config).to(device=device, dtype=dtype)
        expected = model._saved_state()
        for name, tensor in state.items():
            if name not in expected:
                raise ValueError(
                    f"{directory / WEIGHTS_NAME}: unexpected tensor {name!r} (not in this config's model)"
                )
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"{directory / WEIGHTS_NAME}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                    f"the config needs {tuple(expected[name].shape)}"
                )
        missing = [name for name in expected if name not in state]
        if missing:
            raise ValueError(
                f"{directory / WEIGHTS_NAME}: missing tensor {missing[0]!r} ({len(missing)} missing)"
            )
        model.load_state_dict(state, strict=False)  # strict=False only for the tied lm_head.weight
        return model

    # ----- interoperability with transformers (implemented in hf.py, imported on first use) --------

    @classmethod
    def from_hf(cls, hf_model) -> GPT:
        """A GPT with the weights of a transformers ``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``Qwen3ForCausalLM``."""
        from gptmini.hf import from_hf

        return from_hf(hf_model, cls)

    def to_hf(self):
        """This model as the transformers class of its shape: ``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``Qwen3ForCausalLM``."""
        from gptmini.hf import to_hf

        return to_hf(self)

    @classmethod
    def from_pretrained(cls, name: str = "gpt2", **kwargs) -> GPT:
        """GPT-2 weights from the Hugging Face hub ("gpt2", "gpt2-medium", ...) or a local directory."""
        from gptmini.hf import from_pretrained

        return from_pretrained(name, cls, **kwargs)


def _check_targets(targets: torch.Tensor, vocab_size: int) -> None:
    """Targets are int64 ids in 0..vocab_size-1 or -100 (ignored), and at least one is not ignored."""
    if not isinstance(targets, torch.Tensor) or targets.dtype != torch.long:
        got = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"targets must be a torch.int64 (long) tensor of token ids or -100, got {got}")
    if torch.compiler.is_compiling():  # data-dependent: skipped when compiled
        return
    counted = targets[targets != -100]
    if counted.numel() == 0:
        raise ValueError(
            f"no target to score: all {targets.numel()} targets are -100 (ignored) or the sequence is empty; "
            "the mean loss over zero tokens is undefined"
        )
    lo, hi = int(counted.min()), int(counted.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"target {lo if lo < 0 else hi} is outside the vocabulary 0..{vocab_size - 1} (or -100: ignored)"
        )


def _read_config(path: Path) -> GPTConfig:
    """A GPTConfig from a config.json written by GPT.save; errors name the file."""
    d = read_json(path, "the GPTConfig fields of a model written by GPT.save")
    missing = [name for name in CONFIG_FILE_FIELDS if name not in d]
    if missing:
        raise ValueError(
            f"{path} lacks the field(s) {missing}: every config.json written by GPT.save has them"
        )
    try:
        return GPTConfig.from_dict(d)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None


def _load_device(map_location) -> torch.device:
    """``map_location`` as a device that exists here (None: the CPU)."""
    try:
        device = torch.device("cpu" if map_location is None else map_location)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"map_location {map_location!r} is not a device: {err}") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ValueError(
            f"map_location {map_location!r}: no {device.type} device on this machine; "
            f"use 'cpu' (or None), or one of: {', '.join(k for k, ok in available.items() if ok)}"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"map_location {map_location!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def _write_replacing(path: Path, write) -> None:
    """``write(tmp)`` into a file beside ``path``, flushed to disk, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_same_save(directory: Path, config: GPTConfig) -> None:
    """The config stored in the weights' metadata (by GPT.save) must be config.json's."""
    from safetensors import safe_open

    with safe_open(directory / WEIGHTS_NAME, framework="pt") as f:
        stored = (f.metadata() or {}).get("config")
    if stored is None:  # written before the config was stored with the weights, or by another tool
        return
    try:
        saved = GPTConfig.from_dict(json.loads(stored)).to_dict()
    except (ValueError, TypeError) as err:
        raise ValueError(f"{directory / WEIGHTS_NAME}: its stored config is unreadable: {err}") from None
    if saved != config.to_dict():
        diff = sorted(k for k in saved if saved[k] != config.to_dict().get(k))
        raise ValueError(
            f"{directory}: {CONFIG_NAME} and {WEIGHTS_NAME} come from different saves (they disagree on "
            f"{', '.join(diff)}); an interrupted or mixed save: save the model again"
        )


def _read_weights(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of a model.safetensors; a truncated or corrupted file is a ValueError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(path, device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file (truncated or corrupted?): {err}"
        ) from None
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise ValueError(
                f"{path}: tensor {name!r} has dtype {tensor.dtype}; model weights are floating point"
            )
    return state
