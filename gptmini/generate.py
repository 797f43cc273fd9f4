"""Sampling text from a GPT: greedy decoding, temperature, top-k, top-p, repetition penalty, KV cache.

Arguments and defaults follow ``transformers``' ``generate``: decoding is greedy unless
``do_sample=True``, the prompt may be passed as ``input_ids=``, and ``num_beams > 1`` runs beam
search (:mod:`gptmini.beam`).

Each step turns the logits of the last position into the next token. The logit processors below are
small pure functions on a (B, V) tensor of logits, applied in the order ``transformers`` uses:
repetition penalty, temperature, top-k, top-p. Greedy decoding (``do_sample=False`` or
``temperature=0``) takes the argmax, the first index on ties, as ``torch.argmax`` does.

With ``use_cache=True`` the prompt goes through the model once (prefill) and every later step feeds
only the newest token, reading the keys and values of earlier positions from a preallocated
:class:`~gptmini.attention.KVCache`. That one-token step runs as
:class:`~gptmini.decode_step.OneTokenStep`, the model's forward pass written out flat for a single
position: the same logits bit for bit, without most of the fixed costs of a forward pass.

Context window. A model with ``"learned"`` positions only knows positions 0..block_size-1, so it
always sees the last ``block_size`` tokens of the sequence (a sliding window, as in nanoGPT). Once
the sequence is longer than that, every token moves to a new position at each step and the cached
keys and values, computed at the old positions, no longer apply: the cache is then emptied and the
whole window is re-prefilled at every step, so each new token costs a forward pass over
``block_size`` tokens, the same as without the cache. The other encodings run past block_size, as the
model allows, and see the whole sequence. Cached and uncached decoding therefore feed the model the
same tokens at the same positions, and greedy outputs are identical.

Length. Give exactly one of ``max_new_tokens`` (tokens to add) or ``max_length`` (total length, prompt
included, as in ``transformers``); there is no hidden default, and giving both is an error (where
``transformers`` lets max_new_tokens win with a warning). Generation stops earlier when every
row has produced an ``eos_token_id``.

:func:`generate` returns the whole sequences; :func:`stream` yields each new column of tokens as soon
as it is chosen, for printing text while it is being written.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator

import torch

from gptmini.decode_step import OneTokenStep

# ----- logit processors: (B, V) logits in, (B, V) logits out ---------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, idx: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make tokens already in each row of idx (B, T) less likely (CTRL): logit/p if logit > 0 else logit*p."""
    seen = logits.gather(1, idx)  # (B, T) the logits of the tokens that occurred (repeats included)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, idx, seen)  # a token that occurs twice is penalised once


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by temperature (> 0): below 1 sharpens the distribution, above 1 flattens it."""
    return logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k largest logits of each row, set the rest to -inf.

    Ties: every logit equal to the k-th largest value is kept, so a row with ties at the boundary
    keeps more than k tokens (the choice among equals would otherwise be arbitrary).
    """
    top_k = min(top_k, logits.size(-1))
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1) the k-th largest value
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches top_p.

    Going down the tokens from most to least likely, a token is kept while the probability of the
    tokens before it is still below top_p; the most likely token is therefore always kept.
    """
    if top_p >= 1.0:
        return logits  # everything; the cumulative sum may round to 1 before the tail is reached
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V) mass up to and including each token
    drop_sorted = torch.zeros_like(cum, dtype=torch.bool)
    drop_sorted[..., 1:] = cum[..., :-1] >= top_p  # the mass before the token already reaches top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def process_logits(
    logits: torch.Tensor,
    idx: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Apply repetition penalty (over idx), temperature, top-k and top-p to logits (B, V), in that order."""
    if repetition_penalty != 1.0 and idx is not None:
        logits = apply_repetition_penalty(logits, idx, repetition_penalty)
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


# A temperature this small counts as 0 (greedy): logits divided by it overflow float32 to inf, and
# sampling at it would pick the argmax anyway.
GREEDY_BELOW = 1e-30


# ----- checking the arguments ----------------------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_sampling(temperature, top_k, top_p, repetition_penalty) -> None:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no top-k), got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (or None for no top-p), got {top_p!r}")
    if not (isinstance(repetition_penalty, int | float) and math.isfinite(repetition_penalty)):
        raise ValueError(
            f"repetition_penalty must be a finite number > 0 (1.0 means none), got {repetition_penalty!r}"
        )
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0 means none), got {repetition_penalty!r}")


def _check_prompt(idx, vocab_size: int, device: torch.device) -> torch.Tensor:
    idx = torch.as_tensor(idx)
    if idx.numel() == 0:  # before the dtype: torch.as_tensor([]) is a float32 tensor
        raise ValueError(
            f"the prompt is empty (idx shape {tuple(idx.shape)}); give at least one token per row"
        )
    if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    if idx.ndim == 1:
        idx = idx[None, :]  # (T,) -> (1, T)
    if idx.ndim != 2:
        raise ValueError(f"idx must have shape (batch, time) or (time,), got {tuple(idx.shape)}")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"token id {lo if lo < 0 else hi} in idx is outside the vocabulary 0..{vocab_size - 1}"
        )
    return idx.to(device=device, dtype=torch.long)


def _count_new_tokens(t_prompt: int, max_new_tokens, max_length) -> int:
    if (max_new_tokens is None) == (max_length is None):
        raise ValueError(
            "give exactly one of max_new_tokens (tokens to add) or max_length (total length, prompt "
            f"included); got max_new_tokens={max_new_tokens!r}, max_length={max_length!r}"
        )
    if max_new_tokens is not None:
        if not (_is_int(max_new_tokens) and max_new_tokens >= 0):
            raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
        return max_new_tokens
    if not (_is_int(max_length) and max_length >= t_prompt):
        raise ValueError(f"max_length must be an integer >= the prompt length {t_prompt}, got {max_length!r}")
    return max_length - t_prompt


def _as_token_list(name: str, value, vocab_size: int) -> list[int]:
    values = [value] if _is_int(value) else list(value)
    if not values or not all(_is_int(v) and 0 <= v < vocab_size for v in values):
        raise ValueError(
            f"{name} must be a token id in 0..{vocab_size - 1} or a non-empty list of them, got {value!r}"
        )
    return values


# ----- the decoding loop ---------------------------------------------------------------------------


@torch.inference_mode()  # lighter than no_grad: no version counters, no autograd bookkeeping
def _next_logits(model, out: torch.Tensor, t: int, cache, window: int | None, step=None) -> torch.Tensor:
    """Logits (B, V) of the token after out[:, :t], seeing the last `window` tokens (None: all).

    ``step`` (a :class:`OneTokenStep`, or None) runs a cached step of one new token. The logits are
    inference tensors; what is computed from them outside this function (the tokens, written into
    ``out``) is an ordinary tensor, so generated sequences can be trained on.
    """
    start = 0 if window is None else max(0, t - window)
    if cache is None:
        logits, _ = model(out[:, start:t])  # (B, t - start, V)
        return logits[:, -1]
    if start > 0:  # the window slid: every token moved to a new position, the cached keys are stale
        cache.reset()
    if step is not None and start + cache.length == t - 1:  # one token not cached yet: the flat step
        return step(out[:, t - 1])
    logits, _ = model(out[:, start + cache.length : t], kv_cache=cache)  # only the tokens not cached yet
    return logits[:, -1]


def _next_token(
    logits: torch.Tensor, seen: torch.Tensor, greedy: bool, settings: dict, generator
) -> torch.Tensor:
    """The next token (B, 1) from the last position's logits (B, V); seen (B, t) are the tokens so far."""
    logits = logits.float()
    if greedy:  # temperature, top-k and top-p never change the argmax; the repetition penalty can
        if settings["repetition_penalty"] != 1.0:
            logits = apply_repetition_penalty(logits, seen, settings["repetition_penalty"])
        return logits.argmax(dim=-1, keepdim=True)
    probs = process_logits(logits, seen, **settings).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)


def _decode(model, prompt, n_new, *, greedy, settings, eos, pad, use_cache, generator) -> Iterator[tuple]:
    """Write up to n_new tokens after prompt (B, T) into a preallocated buffer; yield (buffer, length)."""
    B, T = prompt.shape
    cfg = model.config
    window = cfg.block_size if cfg.pos_encoding == "learned" else None
    out = torch.empty(B, T + n_new, dtype=torch.long, device=prompt.device)  # filled left to right
    out[:, :T] = prompt
    cache = step = None
    if eos is not None:
        eos = torch.tensor(eos, device=prompt.device)
        finished = torch.zeros(B, 1, dtype=torch.bool, device=prompt.device)
    was_training = model.training
    model.eval()
    try:
        if use_cache:  # room for every position fed to the model (the last token is never fed)
            room = T + n_new - 1 if window is None else min(window, T + n_new - 1)
            cache = model.new_kv_cache(B, max_length=max(room, 1))
            if OneTokenStep.unsupported(model) is None:
                step = OneTokenStep(model, cache)
        logits = _next_logits(model, out, T, cache, window, step)  # the prefill: the whole prompt at once
        for t in range(T, T + n_new):
            token = _next_token(logits, out[:, :t], greedy, settings, generator)  # (B, 1)
            if eos is not None:
                token = token.masked_fill(finished, pad)  # finished rows are padded
                finished |= torch.isin(token, eos)
            out[:, t : t + 1] = token
            yield out, t + 1
            if t + 1 == T + n_new or (eos is not None and bool(finished.all())):
                return
            logits = _next_logits(model, out, t + 1, cache, window, step)  # one token with the cache
    finally:
        model.train(was_training)


def _start(model, idx, input_ids, max_new_tokens, max_length, do_sample, temperature, top_k, top_p,
           repetition_penalty, num_return_sequences, num_beams, length_penalty, early_stopping, eos_token_id,
           pad_token_id, seed, generator):  # fmt: skip
    """Check every argument; return the prompt (B, T), the number of new tokens and how to choose them."""
    if (idx is None) == (input_ids is None):
        raise ValueError("give the prompt once, as idx (the second positional argument) or as input_ids=")
    _check_sampling(temperature, top_k, top_p, repetition_penalty)
    if not (_is_int(num_return_sequences) and num_return_sequences >= 1):
        raise ValueError(f"num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    greedy = not do_sample or temperature < GREEDY_BELOW
    _check_beams(num_beams, num_return_sequences, length_penalty, early_stopping, greedy)
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both")
    device = next(model.parameters()).device
    vocab_size = model.config.vocab_size
    idx = _check_prompt(idx if input_ids is None else input_ids, vocab_size, device)
    n_new = _count_new_tokens(idx.shape[1], max_new_tokens, max_length)
    eos = None if eos_token_id is None else _as_token_list("eos_token_id", eos_token_id, vocab_size)
    if pad_token_id is not None and not (_is_int(pad_token_id) and 0 <= pad_token_id < vocab_size):
        raise ValueError(f"pad_token_id must be a token id in 0..{vocab_size - 1}, got {pad_token_id!r}")
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    return idx, n_new, dict(greedy=greedy, settings=settings, eos=eos, pad=pad, generator=generator)


def _check_beams(num_beams, num_return_sequences, length_penalty, early_stopping, greedy) -> None:
    if not (_is_int(num_beams) and num_beams >= 1):
        raise ValueError(f"num_beams must be an integer >= 1 (1: no beam search), got {num_beams!r}")
    if not (isinstance(length_penalty, int | float) and math.isfinite(length_penalty)):
        raise ValueError(
            f"length_penalty must be a finite number (1.0: divide by the length), got {length_penalty!r}"
        )
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        raise ValueError(f'early_stopping must be True, False or "never", got {early_stopping!r}')
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(
            f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams}): beam search "
            "returns the best of its num_beams finished sequences"
        )
    if num_beams > 1 and not greedy:
        raise ValueError(
            "beam sampling (do_sample=True with num_beams > 1) is not supported: use do_sample=False for beam "
            "search, or num_beams=1 to sample"
        )


def stream(
    model,
    idx=None,
    max_new_tokens: int | None = None,
    *,
    input_ids=None,
    max_length: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    num_return_sequences: int = 1,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield each new token column (B*num_return_sequences, 1) as it is produced; arguments as generate
    (no beam search: its tokens are only known at the end)."""
    idx, n_new, how = _start(model, idx, input_ids, max_new_tokens, max_length, do_sample, temperature, top_k,
                             top_p, repetition_penalty, num_return_sequences, 1, 1.0, False, eos_token_id,
                             pad_token_id, seed, generator)  # fmt: skip
    prompt = idx.repeat_interleave(num_return_sequences, dim=0)  # (B*n, T), copies of a row side by side
    steps = _decode(model, prompt, n_new, use_cache=use_cache, **how) if n_new else iter(())
    return (out[:, t - 1 : t] for out, t in steps)


def generate(
    model,
    idx=None,
    max_new_tokens: int | None = None,
    *,
    input_ids=None,
    max_length: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    num_return_sequences: int = 1,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue idx (B, T) or (T,): return prompt + new tokens, (B*num_return_sequences, length) int64.

    The prompt is ``idx`` or, as in ``transformers``, ``input_ids=``. Decoding is greedy unless
    ``do_sample=True`` (the default is False, as in ``transformers``); ``temperature=0``, or below
    ``GREEDY_BELOW`` (1e-30, where the scaled logits would overflow), is greedy too. ``seed`` makes
    sampling reproducible with a private ``torch.Generator`` (the global RNG is neither used nor
    changed), or pass your own ``generator``. Rows are repeated as in ``transformers``: all
    num_return_sequences rows of prompt 0 come first.

    ``num_beams > 1`` runs beam search (:mod:`gptmini.beam`, ``transformers``' semantics, with
    ``length_penalty`` and ``early_stopping``; these two are ignored otherwise): the
    num_return_sequences (<= num_beams) best finished sequences of each prompt, best first. Beam
    sampling (with ``do_sample=True``) is not supported.

    A row that produced an ``eos_token_id`` (one id or a list) is finished: its later positions hold
    ``pad_token_id`` (default: the first eos id), and generation stops once every row is finished.
    The model's train/eval mode is restored afterwards.
    """
    idx, n_new, how = _start(model, idx, input_ids, max_new_tokens, max_length, do_sample, temperature, top_k,
                             top_p, repetition_penalty, num_return_sequences, num_beams, length_penalty,
                             early_stopping, eos_token_id, pad_token_id, seed, generator)  # fmt: skip
    prompt = idx.repeat_interleave(num_return_sequences, dim=0)  # (B*n, T), copies of a row side by side
    if n_new == 0:
        return prompt
    if num_beams > 1:
        from gptmini.beam import beam_search  # beam.py builds on this module

        sequences, _ = beam_search(model, idx, n_new, num_beams, length_penalty=length_penalty,
                                   early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                                   eos=how["eos"], pad=how["pad"], repetition_penalty=repetition_penalty,
                                   use_cache=use_cache)  # fmt: skip
        return sequences
    out, t = prompt, prompt.shape[1]
    for out, t in _decode(model, prompt, n_new, use_cache=use_cache, **how):  # noqa: B007 (the last is kept)
        pass
    return out[:, :t]  # shorter than asked for when every row finished early


class _CallableModule(types.ModuleType):
    """``gptmini.generate`` is both this module and the function: importing the submodule (for example
    ``from gptmini.generate import stream``) makes Python bind the package attribute ``generate`` to the
    module, so the module forwards calls to :func:`generate` and ``gptmini.generate(model, idx, ...)``
    works either way."""

    def __call__(self, *args, **kwargs):
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
