"""Beam search: follow the num_beams most likely sequences instead of only the single most likely token.

Greedy decoding takes the most likely token at every step, but the most likely *sequence* may begin
with a token that is not the most likely one. Beam search keeps ``num_beams`` partial sequences
(beams). At each step every beam is extended by every token of the vocabulary, each extension is
scored by the sum of its log-probabilities, and the ``num_beams`` best extensions that do not end
become the next beams. With ``num_beams=1`` it is greedy decoding.

A beam *ends* when it produces an ``eos_token_id`` or reaches the maximum length. It is then a
finished hypothesis, ranked by its score divided by ``n ** length_penalty``, ``n`` the number of
tokens it generated (the eos token included): ``length_penalty > 0`` favours longer sequences,
``< 0`` shorter ones. Each prompt keeps its ``num_beams`` best finished hypotheses, and returns the
``num_return_sequences`` best of them, shorter ones padded with ``pad``.

When to stop (``early_stopping``, as in ``transformers``): once a prompt holds ``num_beams`` finished
hypotheses, ``True`` stops it at once; ``False`` stops it when its best running beam, divided by its
current length ** length_penalty, cannot beat the worst finished one (a heuristic: the beam could
still improve if length_penalty > 0); ``"never"`` uses the maximum length in that test when
length_penalty > 0, which is exact. Generation ends when every prompt has stopped.

This is ``transformers``' beam search (version 5) step for step, and is tested to return the same
tokens and scores. Only the search is here: beam *sampling* (``do_sample=True`` with beams) is not.
"""

from __future__ import annotations

import torch

from gptmini.decode_step import OneTokenStep
from gptmini.generate import _next_logits, apply_repetition_penalty


def beam_search(
    model,
    prompt: torch.Tensor,
    n_new: int,
    num_beams: int,
    *,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    eos: list[int] | None = None,
    pad: int = 0,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search after prompt (B, T) for up to n_new tokens (>= 1), arguments checked by generate.

    Returns (sequences (B*num_return_sequences, length), scores (B*num_return_sequences,)): each
    prompt's best finished hypotheses, best first, and their length-penalised scores.
    """
    B, T = prompt.shape
    V, nb = model.config.vocab_size, num_beams
    max_len = T + n_new
    window = model.config.block_size if model.config.pos_encoding == "learned" else None
    device = prompt.device
    eos_ids = torch.tensor(eos or [], dtype=torch.long, device=device)
    # candidates kept per step: enough that at least num_beams of them do not end with an eos token
    n_candidates = min(max(2, 1 + len(eos_ids)) * nb, nb * V)
    first_row = torch.arange(B, device=device)[:, None] * nb  # (B, 1) row of each prompt's first beam

    out = torch.empty(B * nb, max_len, dtype=torch.long, device=device)  # the running beams, row by row
    out[:, :T] = prompt.repeat_interleave(nb, dim=0)
    # every beam starts as the prompt: count the first copy only, or the same extension would be
    # picked num_beams times
    scores = torch.zeros(B, nb, dtype=torch.float32, device=device)  # (B, nb) each beam's summed log-probs
    scores[:, 1:] = float("-inf")
    finished: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(B)]  # (score, tokens), best first
    done = [False] * B

    was_training = model.training
    model.eval()
    try:
        cache = step = None
        if use_cache:
            room = max_len - 1 if window is None else min(window, max_len - 1)
            cache = model.new_kv_cache(B * nb, max_length=max(room, 1))
            if OneTokenStep.unsupported(model) is None:
                step = OneTokenStep(model, cache)
        logits = _next_logits(model, out, T, cache, window, step)  # (B*nb, V) the prefill
        for t in range(T, max_len):
            n = t + 1 - T  # tokens generated, this one included
            log_probs = logits.float().log_softmax(dim=-1)  # (B*nb, V)
            if repetition_penalty != 1.0:
                log_probs = apply_repetition_penalty(log_probs, out[:, :t], repetition_penalty)
            total = (scores[:, :, None] + log_probs.view(B, nb, V)).view(B, nb * V)
            cand_scores, cand = total.topk(n_candidates, dim=-1)  # (B, K) best first
            cand_beam, cand_token = cand // V, cand % V  # which beam each candidate extends, with what
            ends = torch.isin(cand_token, eos_ids) | (t + 1 == max_len)  # (B, K)

            # finished hypotheses: only the num_beams best candidates may end, the rest are spares
            penalised = (cand_scores / n**length_penalty).tolist()
            for b in range(B):
                if done[b]:
                    continue
                for k in range(nb):
                    if ends[b, k]:
                        beam = out[first_row[b, 0] + cand_beam[b, k], :t]  # the beam it extends
                        _add(finished[b], penalised[b][k], torch.cat([beam, cand_token[b, k, None]]), nb)

            # the next beams: the num_beams best candidates that do not end
            keep = cand_scores.masked_fill(ends, float("-inf")).topk(nb, dim=-1).indices  # (B, nb)
            scores = cand_scores.gather(1, keep)
            rows = (first_row + cand_beam.gather(1, keep)).flatten()  # (B*nb,) the beam each continues
            out = out[rows]
            out[:, t] = cand_token.gather(1, keep).flatten()
            if cache is not None:  # each beam's keys and values follow it
                _reorder(cache, rows)

            for b in range(B):
                done[b] = done[b] or _is_done(
                    finished[b], nb, scores[b, 0], n, n_new, length_penalty, early_stopping
                )
            if all(done) or t + 1 == max_len:
                break
            logits = _next_logits(model, out, t + 1, cache, window, step)
    finally:
        model.train(was_training)

    best = [hyp for hyps in finished for hyp in hyps[:num_return_sequences]]
    length = max(len(tokens) for _, tokens in best)
    sequences = torch.full((len(best), length), pad, dtype=torch.long, device=device)
    for i, (_, tokens) in enumerate(best):
        sequences[i, : len(tokens)] = tokens
    return sequences, torch.tensor([score for score, _ in best])


def _add(hyps: list, score: float, tokens: torch.Tensor, num_beams: int) -> None:
    """Add a finished hypothesis to hyps (best first), keeping the num_beams best."""
    hyps.append((score, tokens))
    hyps.sort(key=lambda hyp: hyp[0], reverse=True)
    del hyps[num_beams:]


def _is_done(hyps: list, num_beams: int, best_running: torch.Tensor, n: int, n_new: int, length_penalty,
             early_stopping) -> bool:  # fmt: skip
    """Whether a prompt can stop: it holds num_beams finished hypotheses and no running beam can beat them.

    best_running is the score of its best running beam after n generated tokens (of at most n_new).
    """
    if len(hyps) < num_beams:
        return False
    if early_stopping is True:
        return True
    # the best score the best running beam could reach: at its current length, or (exactly, when
    # longer is better) at the maximum length
    length = n_new if early_stopping == "never" and length_penalty > 0 else n
    return float(best_running / length**length_penalty) <= hyps[-1][0]  # the worst finished score


def _reorder(cache, rows: torch.Tensor) -> None:
    """Make row i of every layer's keys and values those of row rows[i]."""
    for buffers in (cache.k, cache.v):
        for layer, x in enumerate(buffers):
            buffers[layer] = x.index_select(0, rows)
