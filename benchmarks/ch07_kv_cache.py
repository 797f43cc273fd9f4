"""Chapter 07's timing: the time of each decoding step with and without the KV cache, by position.

The committed character model (``load_checkpoint("shakespeare-char")``, rotary positions, so it
accepts sequences longer than its training context of 128; past 128 its text degrades, but the
cost of a step does not depend on what the text says) continues a 9-character prompt greedily for
``--new`` characters, once with ``use_cache=True`` and once with ``use_cache=False``.
``gptmini.generate.stream`` yields every new token as soon as it is chosen, so the time between two
yields is the cost of one step: without the cache, a forward pass over the whole sequence so far;
with it, a forward pass over one token that reads the cached keys and values. Each setting runs
``--repeat`` times, alternated, and the fastest time of each step is kept (a busy moment of a
shared machine only ever slows a step down). Both runs must produce the same tokens (checked).

    OMP_NUM_THREADS=1 nice python benchmarks/ch07_kv_cache.py   # writes benchmarks/results/ch07_kv_cache.json
"""

from __future__ import annotations

import argparse
import time

import torch
from runinfo import run_info, write_json

from gptmini.checkpoints import load_checkpoint
from gptmini.generate import stream


def step_times(model, idx: torch.Tensor, new: int, use_cache: bool) -> tuple[list[float], torch.Tensor]:
    """Seconds from the call (prefill included) to the first token, then between successive tokens."""
    times, tokens = [], []
    last = time.perf_counter()
    for token in stream(model, idx, new, do_sample=False, use_cache=use_cache):
        now = time.perf_counter()
        times.append(now - last)
        tokens.append(token)
        last = now
    return times, torch.cat(tokens, dim=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompt", default="MACBETH:\n")
    p.add_argument("--new", type=int, default=1015)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/ch07_kv_cache.json")
    args = p.parse_args()
    start = time.perf_counter()
    model, tok = load_checkpoint("shakespeare-char")
    idx = torch.tensor([tok.encode(args.prompt)])
    step_times(model, idx, 16, True)  # warm-up: the first calls allocate memory and pick kernels
    step_times(model, idx, 16, False)
    best, outs = {}, {}
    for _ in range(args.repeat):
        for use_cache in (True, False):
            times, outs[use_cache] = step_times(model, idx, args.new, use_cache)
            old = best.get(use_cache, [float("inf")] * len(times))
            best[use_cache] = [min(a, b) for a, b in zip(old, times, strict=True)]
            print(f"use_cache={use_cache}: {sum(times):.2f} s", flush=True)
    assert torch.equal(outs[True], outs[False]), "cached and uncached decoding disagree"
    out = {
        **run_info(),
        "args": vars(args),
        "prompt_tokens": idx.shape[1],
        "same_tokens": True,
        "total_seconds": round(time.perf_counter() - start, 1),
        # step i produces the token at position prompt_tokens + i; step 0 includes the prefill
        "step_seconds": {
            "cache": [round(t, 6) for t in best[True]],
            "no_cache": [round(t, 6) for t in best[False]],
        },
    }
    write_json(args.out, out)
    print(f"in {out['total_seconds']} s")


if __name__ == "__main__":
    main()
