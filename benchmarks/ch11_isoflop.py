"""Chapter 11's IsoFLOP profiles: at each of three compute budgets, GPTs of up to nine widths are each
trained for exactly the number of characters the budget buys, so a profile (loss against size at fixed
compute) can show where, for that budget, a model is neither too small nor too briefly trained
(Hoffmann et al. 2022, approach 2).

A budget C buys D = C / F characters for a model of F training FLOPs per token
(``GPTConfig.flops_per_token``: 6N + 12·L·T·d). Every model has two layers of two heads, rotary
positions, and a width from 4 to 96 (0.9 k to 230 k parameters; a width that would need more than
8,000 steps at a budget is left out there, to bound the CPU time). Each run is a complete run with its
own schedule (warmup over the first tenth, cosine decay from 1e-2 to 1e-3 at its last step), as
Chinchilla's were, on 8 windows of 64 characters per step from the training plays (seed 1337, the same
batches in the same order for every model). The loss is measured once, at the end, on the same 128
windows of the held-out plays (65,536 characters, seed 0) for every model.

    OMP_NUM_THREADS=1 nice python benchmarks/ch11_isoflop.py   # writes benchmarks/results/ch11_isoflop.json
    OMP_NUM_THREADS=1 nice python benchmarks/ch11_isoflop.py --widths 4 \
        --out benchmarks/results/ch11_isoflop_w4.json   # width 4, run beside it, in a file of its own
"""

from __future__ import annotations

import argparse
import time

import torch
from ch11_common import char_corpus, fixed_batches, mean_loss, run_info
from runinfo import write_json

from gptmini import GPT, GPTConfig
from gptmini.train import TrainConfig, Trainer

BUDGETS = [1e10, 3e10, 1e11]  # training FLOPs
WIDTHS = [8, 12, 16, 24, 32, 48, 64, 96]  # n_embd; n_layer = n_head = 2
MAX_STEPS = 8000  # a size that would need more steps than this at a budget is not run there (CPU time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/ch11_isoflop.json")
    parser.add_argument("--widths", type=int, nargs="*", default=WIDTHS)
    args = parser.parse_args()
    started = time.perf_counter()
    tok, train, val = char_corpus()
    val_batches = fixed_batches(val, 128, args.batch_size, args.block_size, seed=0)  # 65,536 characters
    tokens_per_step = args.batch_size * args.block_size
    runs = []
    for budget in BUDGETS:
        for width in args.widths:
            cfg = GPTConfig(
                vocab_size=tok.vocab_size,
                block_size=args.block_size,
                n_layer=2,
                n_head=2,
                n_embd=width,
                pos_encoding="rope",
            )
            flops_per_token = cfg.flops_per_token(args.block_size)
            steps = max(1, round(budget / (flops_per_token * tokens_per_step)))
            if steps > MAX_STEPS:
                continue
            torch.manual_seed(0)
            model = GPT(cfg)
            tc = TrainConfig(
                max_steps=steps,
                batch_size=args.batch_size,
                learning_rate=1e-2,
                min_lr=1e-3,
                warmup_steps=max(1, steps // 10),
                lr_schedule="cosine",
                eval_interval=0,
                eval_iters=1,
                progress=False,
                device="cpu",
            )
            t0 = time.perf_counter()
            Trainer(model, train, None, tc).train()
            seconds = time.perf_counter() - t0
            run = {
                "budget": budget,
                "n_embd": width,
                "params": model.num_params(),
                "flops_per_token": flops_per_token,
                "steps": steps,
                "tokens": steps * tokens_per_step,
                "flops": steps * tokens_per_step * flops_per_token,
                "val": mean_loss(model, val_batches),
                "train_seconds": round(seconds, 1),
            }
            runs.append(run)
            print(run, flush=True)
    runs.sort(key=lambda r: (r["budget"], r["n_embd"]))
    result = {
        **run_info(started),
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "n_layer": 2,
        "n_head": 2,
        "learning_rate": "1e-2, warmup over the first tenth of the steps, cosine to 1e-3 at the last",
        "val_characters": 128 * tokens_per_step,
        "runs": runs,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
