"""Chapter 11's scaling sweep: five GPTs of growing size, each trained on the same characters of the
training plays, with the validation loss recorded along the way and, at the end, over every character
of the held-out plays.

Every model sees the same batches (seed 1337): 1,000 steps of 16 windows of 64 characters, 1.02 M
tokens, less than a quarter of one pass over the training plays, so no model sees a character twice.
The learning rate warms up for 50 steps and then stays constant at 2e-3, so that the loss measured at
an intermediate step is that of a model trained for that many tokens (Kaplan et al. 2020 fit their
compute frontier the same way, from points along each run).

    OMP_NUM_THREADS=1 nice python benchmarks/ch11_scaling.py   # writes benchmarks/results/ch11_scaling.json
"""

from __future__ import annotations

import argparse
import time

import torch
from ch11_common import char_corpus, fixed_batches, full_val_loss, mean_loss, run_info
from runinfo import write_json

from gptmini import GPT, GPTConfig
from gptmini.train import TrainConfig, Trainer

SIZES = [(2, 32, 2), (2, 64, 2), (3, 96, 3), (4, 128, 4), (5, 160, 5)]  # (n_layer, n_embd, n_head)
EVAL_STEPS = [25, 50, 100, 200, 400, 700, 1000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/ch11_scaling.json")
    args = parser.parse_args()
    started = time.perf_counter()
    tok, train, val = char_corpus()
    val_batches = fixed_batches(val, 32, args.batch_size, args.block_size, seed=0)  # 32,768 characters
    runs = []
    for n_layer, n_embd, n_head in SIZES:
        torch.manual_seed(0)
        cfg = GPTConfig(
            vocab_size=tok.vocab_size,
            block_size=args.block_size,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            pos_encoding="rope",
        )
        model = GPT(cfg)
        tc = TrainConfig(
            max_steps=args.steps,
            batch_size=args.batch_size,
            learning_rate=2e-3,
            min_lr=2e-3,
            warmup_steps=50,
            lr_schedule="constant",
            eval_interval=0,
            eval_iters=1,
            progress=False,
            device="cpu",
        )
        trainer = Trainer(model, train, None, tc)
        curve, t0 = [], time.perf_counter()
        for step in [s for s in EVAL_STEPS if s <= args.steps]:
            trainer.train(until=step)
            curve.append(
                {
                    "step": step,
                    "tokens": step * args.batch_size * args.block_size,
                    "val": mean_loss(model, val_batches),
                }
            )
        seconds = time.perf_counter() - t0
        run = {
            "n_layer": n_layer,
            "n_embd": n_embd,
            "n_head": n_head,
            "params": model.num_params(),
            # Kaplan's N: attention 4d² and MLP 8d² per layer, no embeddings
            "params_non_embedding_kaplan": 12 * n_layer * n_embd**2,
            "flops_per_token": model.flops_per_token(args.block_size),
            "curve": curve,
            "final_train_batch_loss": trainer.history.train_loss[-1],
            "val_full": full_val_loss(model, val, args.block_size),
            "train_seconds": round(seconds, 1),
            "tokens_per_sec": round(trainer.history.tokens_per_sec),
        }
        runs.append(run)
        print({k: v for k, v in run.items() if k != "curve"}, flush=True)
    result = {
        **run_info(started),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        "tokens_per_model": args.steps * args.batch_size * args.block_size,
        "learning_rate": "2e-3 constant after 50 warmup steps",
        "val_curve_characters": 32 * args.batch_size * args.block_size,
        "runs": runs,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
