"""Quality at a fixed budget: gptmini's training recipe against the classic nanoGPT CPU recipe.

Both train the small CPU model (4 layers, 4 heads, 128 dims, context 64, batch 12, dropout 0) for the
same number of steps on the character-level corpus with the book's split. The two runs are interleaved
in chunks of steps, so that a busy machine slows both alike; speed is the training time alone (the
evaluations are not counted). The script prints steps/s, wall-clock and the full validation loss
(every val token, in order) of each, and the val loss of each at equal wall-clock.

    python benchmarks/bench_train.py [--steps 2000] [--chunk 250] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gptmini import data
from gptmini.model import GPT, GPTConfig
from gptmini.tokenizer import CharTokenizer
from gptmini.train import TrainConfig, Trainer

SMALL = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True)
BASELINE = dict(
    model=dict(pos_encoding="learned"), train=dict(learning_rate=1e-3, min_lr=1e-4, warmup_steps=100)
)
# What changed: rotary positions instead of learned ones, and twice the peak learning rate (small
# models tolerate it; with warmup and clipping it is stable), decaying to a tenth of it.
GPTMINI = dict(model=dict(pos_encoding="rope"), train=dict(learning_rate=2e-3, min_lr=2e-4, warmup_steps=100))
SHARED_TRAIN = dict(
    batch_size=12, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, eval_iters=50, seed=1337
)


def make_trainer(recipe: dict, steps: int, tok, train_ids, val_ids) -> Trainer:
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **SMALL, **recipe["model"]))
    tc = TrainConfig(
        max_steps=steps, eval_interval=0, progress=False, device="cpu", **SHARED_TRAIN, **recipe["train"]
    )
    return Trainer(model, train_ids, val_ids, tc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/bench_train.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tok = CharTokenizer.from_text(data.corpus_text("all"))
    train_ids, val_ids = data.tokenize_corpus(tok, "train"), data.tokenize_corpus(tok, "val")
    runs = {
        name: make_trainer(r, args.steps, tok, train_ids, val_ids)
        for name, r in (("nanoGPT recipe", BASELINE), ("gptmini recipe", GPTMINI))
    }
    curves: dict[str, list[tuple[int, float, float]]] = {
        name: [] for name in runs
    }  # (step, train seconds, val)
    train_seconds = dict.fromkeys(runs, 0.0)
    for until in range(args.chunk, args.steps + args.chunk, args.chunk):
        for name, trainer in runs.items():
            start = time.perf_counter()
            trainer.train(until=min(until, args.steps))
            train_seconds[name] += time.perf_counter() - start
            # train() ends its chunk with an evaluation (50 random batches, a generator of their own):
            # the same evaluation again gives the same number and its time, which is not training time.
            start = time.perf_counter()
            estimate = trainer.evaluate()["val"]
            train_seconds[name] -= time.perf_counter() - start
            curves[name].append((trainer.step, train_seconds[name], estimate))
            print(
                f"{name:<15} step {trainer.step:>5}  {train_seconds[name]:7.1f} s  val (50 batches) {estimate:.4f}",
                flush=True,
            )

    results = {}
    for name, trainer in runs.items():
        trainer.tc.eval_iters = None  # the whole val split, every token once
        full_val = trainer.evaluate()["val"]
        results[name] = dict(
            steps=trainer.step,
            seconds=round(train_seconds[name], 1),
            steps_per_sec=round(trainer.step / train_seconds[name], 3),
            full_val_loss=round(full_val, 4),
            curve=curves[name],
        )
    base, ours = results["nanoGPT recipe"], results["gptmini recipe"]
    # Val loss at equal wall-clock: each curve interpolated at the shorter run's total time.
    t = min(base["seconds"], ours["seconds"])
    at_t = {
        k: float(np.interp(t, [c[1] for c in r["curve"]], [c[2] for c in r["curve"]]))
        for k, r in results.items()
    }

    print()
    print(
        f"{'recipe':<16}{'steps':>6}{'seconds':>9}{'steps/s':>9}{'full val loss':>15}{f'val @ {t:.0f} s':>14}"
    )
    for name, r in results.items():
        print(
            f"{name:<16}{r['steps']:>6}{r['seconds']:>9.1f}{r['steps_per_sec']:>9.3f}{r['full_val_loss']:>15.4f}{at_t[name]:>14.4f}"
        )
    print()
    print(f"speed per step, gptmini / nanoGPT recipe: {ours['steps_per_sec'] / base['steps_per_sec']:.2f}x")
    print(
        f"full val loss difference (gptmini - nanoGPT recipe): {ours['full_val_loss'] - base['full_val_loss']:+.4f} nats"
    )
    print(
        f"val loss difference at equal wall-clock: {at_t['gptmini recipe'] - at_t['nanoGPT recipe']:+.4f} nats"
    )
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"args": vars(args), "results": results, "val_at_equal_time": at_t}, indent=1)
    )


if __name__ == "__main__":
    main()
