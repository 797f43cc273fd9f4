"""Chapter 11: where transformers' generate() spends its time, on the model of bench_generate.py.

The GPT-2-shaped model with random weights of ``bench_generate.py`` (4 layers, 4 heads, n_embd 128,
a 2048-token vocabulary) decodes 256 new tokens greedily after a 16-token prompt, at batch 1, with
``transformers``' ``generate``. A forward pre-hook and a forward hook on the model time every call of
its forward pass (the prefill and one call per new token, the KV cache's updates included); the rest
of ``generate`` (preparing the inputs, the logits processors and stopping criteria, choosing and
appending the token) is the difference. The best of ``--repeat`` runs by total time, one torch thread.

    OMP_NUM_THREADS=1 nice python benchmarks/ch11_generate_profile.py   # writes benchmarks/results/ch11_generate_profile.json
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import transformers
from bench_generate import build_models
from runinfo import run_info, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-layer", dest="n_layer", type=int, default=4)
    parser.add_argument("--n-head", dest="n_head", type=int, default=4)
    parser.add_argument("--n-embd", dest="n_embd", type=int, default=128)
    parser.add_argument("--vocab-size", dest="vocab_size", type=int, default=2048)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/ch11_generate_profile.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    hf, _ = build_models(args, torch.device("cpu"))
    inside = {"seconds": 0.0, "calls": 0}
    started = {}

    def before(module, inputs):
        started["t"] = time.perf_counter()

    def after(module, inputs, output):
        inside["seconds"] += time.perf_counter() - started["t"]
        inside["calls"] += 1

    hf.register_forward_pre_hook(before)
    hf.register_forward_hook(after)
    idx = torch.randint(0, args.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    runs = []
    with torch.inference_mode():
        for _ in range(args.repeat):
            inside.update(seconds=0.0, calls=0)
            t0 = time.perf_counter()
            hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=args.new,
                        min_new_tokens=args.new, pad_token_id=0)  # fmt: skip
            total = time.perf_counter() - t0
            runs.append(
                {
                    "total_seconds": total,
                    "forward_seconds": inside["seconds"],
                    "forward_calls": inside["calls"],
                }
            )
    best = min(runs, key=lambda r: r["total_seconds"])
    share = best["forward_seconds"] / best["total_seconds"]
    print(
        f"generate: {best['total_seconds'] * 1e3 / args.new:.3f} ms per new token, of which the model's forward "
        f"{best['forward_seconds'] * 1e3 / args.new:.3f} ms ({share:.0%}), {best['forward_calls']} forward calls"
    )
    write_json(args.out, {**run_info(), "transformers": transformers.__version__, "load_average": list(os.getloadavg()),
                          "args": vars(args), "runs": runs, "best": best, "forward_share": share})  # fmt: skip


if __name__ == "__main__":
    main()
