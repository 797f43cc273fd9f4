"""Positional encodings: how a permutation-blind attention layer learns where each token stands.

Four choices, picked by ``GPTConfig.pos_encoding``:

- ``"learned"``: a trained table of absolute position vectors added to the token embedding (GPT-2).
  It only knows the ``block_size`` positions it was trained on; the model lives in ``model.py``
  as the ``nn.Embedding`` ``transformer.wpe``.
- ``"sinusoidal"``: the fixed sin/cos table of Vaswani et al. (2017), added to the token embedding
  (unscaled: the token embedding is *not* multiplied by sqrt(n_embd) as in the paper).
- ``"rope"``: rotary position embedding (Su et al. 2021), a rotation of every query and key in every
  layer, so that q·k depends only on the offset between the two positions (half-split layout:
  dimension i pairs with i + head_dim/2, as in GPT-NeoX and ``transformers``; see ``apply_rope``;
  or, with ``GPTConfig.rope_layout = "interleaved"``, i pairs with its neighbour, as in Meta's Llama
  code and the paper; see ``apply_rope_interleaved``).
- ``"none"``: no position signal at all; causal masking alone still leaks some order information.

The sinusoidal and rotary tables are computed for any length, cached, and grown on demand, so those
models run beyond ``block_size`` (chapter 04 measures how well they extrapolate).
"""

from __future__ import annotations

import torch
from torch import nn

POS_ENCODINGS = ("learned", "sinusoidal", "rope", "none")
ROPE_LAYOUTS = ("half", "interleaved")


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The (length, dim) table PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos(p / base^(2i/dim))."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (L, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)  # (ceil(dim/2),)
    angle = pos / base ** (two_i / dim)  # (L, ceil(dim/2))
    table = torch.empty(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])  # an odd dim has one more sin column than cos
    return table.float()


def rope_angles(length: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """The (length, head_dim // 2) rotation angles p * base^(-2i/head_dim) of RoPE."""
    inv_freq = base ** -(torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hd/2,)
    return torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (L, hd/2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x[..., i], x[..., i + hd/2]) of x (B, nh, T, hd) by the angles in cos/sin (T, hd/2).

    This is the *half-split* layout (GPT-NeoX, and ``transformers``' ports of Llama and Qwen): dimension i
    is paired with dimension i + head_dim/2, not with its neighbour i+1 as in the paper and in Meta's
    own Llama code (``apply_rope_interleaved``). The two layouts are the same rotation up to a fixed
    permutation of the head dimensions, which the ports apply to the q and k weights.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hd/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the adjacent pairs (x[..., 2i], x[..., 2i+1]) of x (B, nh, T, hd) by the angles in cos/sin (T, hd/2).

    The *interleaved* layout of the RoPE paper and Meta's Llama code. It equals :func:`apply_rope`
    on a permuted head: if ``perm = [0, 2, 4, ..., hd-2, 1, 3, ..., hd-1]`` then
    ``apply_rope_interleaved(x)[..., perm] == apply_rope(x[..., perm])``, which is why checkpoints
    converted from Meta's format to ``transformers`` have the rows of their q and k projections
    permuted head by head (:func:`interleaved_to_half`).
    """
    pairs = x.unflatten(-1, (-1, 2))  # (B, nh, T, hd/2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]  # (B, nh, T, hd/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def interleaved_to_half(head_dim: int) -> torch.Tensor:
    """The permutation [0, 2, ..., hd-2, 1, 3, ..., hd-1] of one head's dimensions: interleaved -> half."""
    return torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))


class _GrowingTable(nn.Module):
    """A table over positions (dim 0), computed by ``make(length)``, cached and grown on demand."""

    def _init_table(self, initial_length: int) -> None:
        # Not persistent: the table is a function of the config, so it stays out of checkpoints.
        self.register_buffer("table", self.make(initial_length), persistent=False)

    def make(self, length: int) -> torch.Tensor:
        raise NotImplementedError

    def rows(self, start: int, length: int) -> torch.Tensor:
        """Rows start .. start+length-1 of the table, growing it (to a power of two) if needed."""
        end = start + length
        if end > self.table.shape[0]:
            size = 1 << (end - 1).bit_length()
            with torch.inference_mode(False):  # grown during generation, the table must still train
                self.table = self.make(size).to(device=self.table.device, dtype=self.table.dtype)
        return self.table[start:end]


class SinusoidalPositionalEncoding(_GrowingTable):
    """The fixed sinusoidal table of Vaswani et al. (2017); ``forward`` gives rows start..start+T-1."""

    def __init__(self, n_embd: int, initial_length: int, base: float = 10000.0):
        super().__init__()
        self.n_embd, self.base = n_embd, base
        self._init_table(initial_length)

    def make(self, length: int) -> torch.Tensor:
        return sinusoidal_table(length, self.n_embd, self.base)  # (L, n_embd)

    def forward(self, start: int, length: int) -> torch.Tensor:
        return self.rows(start, length)  # (T, n_embd)


class RotaryEmbedding(_GrowingTable):
    """cos and sin of the RoPE angles; ``forward`` gives both for positions start..start+T-1."""

    def __init__(self, head_dim: int, initial_length: int, base: float = 10000.0):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self._init_table(initial_length)

    def make(self, length: int) -> torch.Tensor:
        angle = rope_angles(length, self.head_dim, self.base)  # (L, hd/2)
        return torch.stack((angle.cos(), angle.sin()), dim=1).float()  # (L, 2, hd/2)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows(start, length)  # (T, 2, hd/2)
        return rows[:, 0], rows[:, 1]  # cos, sin: (T, hd/2) each
