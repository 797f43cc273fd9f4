"""Chapter 06's sweep: learning rate, batch size, and overfitting a small slice of the corpus.

Every run trains the same small character-level GPT (4 layers, 4 heads, 128 dims, rotary positions,
context 64) with ``gptmini.Trainer`` (AdamW, linear warmup then cosine decay to a tenth of the peak,
gradient clipping at 1.0, weight decay 0.1) from the same initial weights (seed 1337) and is scored
every few steps on the same fixed windows of the training and validation plays:

- ``lr``: peak learning rates from 3e-4 to 3e-2 at batch 12, 400 steps each;
- ``batch``: batch sizes 3, 12 and 48 at learning rate 3e-3 with the same number of *tokens*
  (the schedule's warmup and length matched in tokens), so the batch-12 run is shared with ``lr``;
- ``batch_lr``: the peak learning rate retuned for batches 3 and 48 (3e-3 was chosen at batch 12):
  batch 3 at 3e-4 and 1e-3, batch 48 at 1e-3, 1e-2 and 3e-2, the same number of tokens;
- ``overfit``: the first 5,000 characters of the training plays only (dropout 0 and 0.2),
  at learning rate 3e-3, against the lr=3e-3 run of ``lr`` on all of them.

    OMP_NUM_THREADS=1 nice python benchmarks/ch06_sweep.py   # writes benchmarks/results/ch06_sweep.json

``--groups overfit`` (say) reruns one group and keeps the other runs already in ``--out``;
``--missing-only`` runs only the runs of those groups that ``--out`` does not hold yet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from runinfo import cpu_name

from gptmini import data
from gptmini.model import GPT, GPTConfig
from gptmini.tokenizer import CharTokenizer
from gptmini.train import TrainConfig, Trainer

MODEL = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, bias=True, pos_encoding="rope")
TOKENS = 400 * 12  # sequences per run (400 steps at batch 12)
WARMUP = 40 * 12  # warmup, in sequences
EVAL_POINTS = 20
SLICE = 5_000
GROUPS = ["lr", "batch", "batch_lr", "overfit"]


@torch.no_grad()
def fixed_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    loss = model(x, y)[1].item()
    model.train()
    return loss


def run(name: str, group: str, tok, train_ids, eval_sets, lr: float, batch_size: int, dropout: float = 0.0):
    steps, warmup = TOKENS // batch_size, round(WARMUP / batch_size)
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, dropout=dropout, **MODEL))
    tc = TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        min_lr=lr / 10,
        warmup_steps=warmup,
        weight_decay=0.1,
        beta1=0.9,
        beta2=0.99,
        grad_clip=1.0,
        eval_interval=0,
        eval_iters=1,  # the trainer's own estimate is not used; fixed windows below are
        seed=1337,
        device="cpu",
        progress=False,
    )
    trainer = Trainer(model, train_ids, None, tc)
    marks = sorted({round(steps * k / EVAL_POINTS) for k in range(1, EVAL_POINTS + 1)})
    evals = [{"step": 0, "tokens": 0, **{s: fixed_loss(model, *xy) for s, xy in eval_sets.items()}}]
    start, diverged = time.perf_counter(), None
    for mark in marks:
        try:
            trainer.train(until=mark)
        except FloatingPointError:
            diverged = trainer.step
            break
        losses = {s: fixed_loss(model, *xy) for s, xy in eval_sets.items()}
        evals.append({"step": mark, "tokens": mark * batch_size * MODEL["block_size"], **losses})
    seconds = time.perf_counter() - start
    last = evals[-1]
    print(
        f"{name:<22} {trainer.step:>5} steps {seconds:6.1f} s   train {last['train']:.3f}  val {last['val']:.3f}"
        + (f"   diverged at step {diverged}" if diverged is not None else ""),
        flush=True,
    )
    return {
        "group": group,
        "learning_rate": lr,
        "batch_size": batch_size,
        "dropout": dropout,
        "steps": steps,
        "warmup_steps": warmup,
        "train_tokens": len(train_ids),
        "seconds": round(seconds, 1),
        "diverged_at": diverged,
        "evals": evals,
        "train_loss": [round(v, 4) for v in trainer.history.train_loss],
    }


def windows(ids: np.ndarray, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return data.get_batch(ids, n, MODEL["block_size"], torch.Generator().manual_seed(seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/ch06_sweep.json")
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--groups", nargs="+", default=GROUPS, choices=GROUPS, help="which runs to (re)do")
    parser.add_argument("--missing-only", action="store_true", help="skip runs that --out already holds")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    tok = CharTokenizer.from_text(data.corpus_text("all"))
    train_ids, val_ids = data.tokenize_corpus(tok, "train"), data.tokenize_corpus(tok, "val")
    small = train_ids[:SLICE]
    full_sets = {
        "train": windows(train_ids, args.eval_windows, 1),
        "val": windows(val_ids, args.eval_windows, 2),
    }
    slice_sets = {"train": windows(small, args.eval_windows, 1), "val": full_sets["val"]}

    out = Path(args.out)
    kept = {}
    if set(args.groups) != set(GROUPS) and out.is_file():
        kept = {k: r for k, r in json.loads(out.read_text())["runs"].items() if r["group"] not in args.groups}
    if args.missing_only and out.is_file():
        kept = json.loads(out.read_text())["runs"]
    runs = {}
    if "lr" in args.groups:
        for lr in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2):
            if f"lr={lr:g}" not in kept:
                runs[f"lr={lr:g}"] = run(f"lr={lr:g}", "lr", tok, train_ids, full_sets, lr, 12)
    if "batch" in args.groups:
        for b in (3, 48):
            if f"batch={b}" not in kept:
                runs[f"batch={b}"] = run(f"batch={b}", "batch", tok, train_ids, full_sets, 3e-3, b)
    if "batch_lr" in args.groups:
        for b, lr in ((3, 3e-4), (3, 1e-3), (48, 1e-3), (48, 1e-2), (48, 3e-2)):
            name = f"batch={b}, lr={lr:g}"
            if name not in kept:
                runs[name] = run(name, "batch_lr", tok, train_ids, full_sets, lr, b)
    if "overfit" in args.groups:
        for p in (0.0, 0.2):
            if f"slice, dropout={p:g}" not in kept:
                runs[f"slice, dropout={p:g}"] = run(
                    f"slice, dropout={p:g}", "overfit", tok, small, slice_sets, 3e-3, 12, dropout=p
                )
    machine = {
        "cpu": cpu_name(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    for r in runs.values():
        r["machine"] = machine  # runs kept from an earlier invocation keep theirs

    def order(kv):
        # by group, then batch size and learning rate (a stable sort keeps the overfit runs' order)
        return GROUPS.index(kv[1]["group"]), kv[1]["batch_size"], kv[1]["learning_rate"]

    runs = dict(sorted({**kept, **runs}.items(), key=order))

    result = {
        "command": "OMP_NUM_THREADS=1 nice python benchmarks/ch06_sweep.py",
        "argv": sys.argv[1:],
        "model": MODEL,
        "vocab_size": tok.vocab_size,
        "sequences_per_run": TOKENS,
        "warmup_sequences": WARMUP,
        "eval_windows": args.eval_windows,
        "slice_characters": SLICE,
        "machine": machine,  # of this invocation; each run records its own
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    total = sum(r["seconds"] for r in runs.values())
    print(f"{len(runs)} runs, {total / 60:.1f} min of training; wrote {args.out}")
    assert math.isfinite(total)


if __name__ == "__main__":
    main()
