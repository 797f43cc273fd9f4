"""Chapter 08's comparison: comedy or tragedy, on the held-out plays.

Passages of 128 characters are cut from the comedies and tragedies of each split
(``gptmini.finetune.genre_passages``); the split is by whole plays, so no play is on both sides.
Every training passage is used (``--train_per_play`` caps them); the classifiers are compared by
their accuracy on 800 passages of the four held-out plays:

- the majority class of the training passages;
- logistic regression on the bag of characters (each character's share of the passage);
- the pretrained character model, frozen, with a linear head on the last token's hidden state, and
  with one on the mean of all positions' hidden states (each head is the exact optimum of the
  regularised loss, ``fit_linear_probe``);
- full fine-tuning of every weight, and LoRA on the attention projections, with the head on the
  last token and with the head on the mean (``GPTClassifier(pool=...)``), all with AdamW from a small
  random head that learns at its own, larger rate (``--head_lr``), for ``--steps`` steps; two seeds
  for the mean-pooled runs (``--seeds``), one for the last-token runs (``--last_seeds``).

It also records what full fine-tuning changed (``‖ΔW‖/‖W‖`` of every tensor) and what LoRA's update
is (its rank and relative size). Everything runs in one process on one CPU thread.

    nice python benchmarks/ch08_finetune.py   # writes benchmarks/results/ch08_finetune.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from gptmini.checkpoints import load_checkpoint
from gptmini.finetune import (
    GPTClassifier,
    LoRALinear,
    class_balance,
    count_trainable,
    encode_passages,
    evaluate,
    finetune,
    fit_linear_probe,
    genre_passages,
    pooled_states,
    relative_change,
)

LR = {"full": 5e-4, "lora": 2e-3}  # the backbone's (or LoRA's) learning rate; the head has --head_lr


def task(args) -> dict:
    train = genre_passages("train", length=args.length, max_per_play=args.train_per_play)
    val = genre_passages("val", length=args.length, max_per_play=args.val_per_play)
    return {"train": train, "val": val}


def bag_of_characters(x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Each character's share of each row: x (N, T) -> (N, V)."""
    return torch.nn.functional.one_hot(x, vocab_size).float().mean(1)


def train_one(mode: str, pool: str, seed: int, args, data_: tuple) -> dict:
    (x, y), (xv, yv) = data_
    model, _ = load_checkpoint("shakespeare-char")
    torch.manual_seed(seed)
    clf = GPTClassifier(model, mode=mode, r=args.r, alpha=args.alpha, pool=pool)
    torch.nn.init.normal_(clf.head.weight, std=args.head_std)  # small and random: the gradient reaches h
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1000 + seed)
    curve_ix = torch.randperm(len(xv), generator=g)[: args.curve_val]  # a subset for the curve
    start = time.perf_counter()
    res = finetune(
        clf, (x, y), (xv[curve_ix], yv[curve_ix]), steps=args.steps, lr=LR[mode],
        head_lr=args.head_lr, batch_size=args.batch_size, seed=seed, eval_every=args.eval_every,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    val_loss, val_acc = evaluate(clf, xv, yv)
    out = {
        "mode": mode,
        "pool": pool,
        "seed": seed,
        "lr": LR[mode],
        "head_lr": args.head_lr,
        "trainable": count_trainable(clf),
        "train_seconds": round(seconds, 1),
        "train_loss": [round(v, 4) for v in res.train_loss],
        "eval_steps": res.eval_steps,
        "curve_val_loss": [round(v, 4) for v in res.val_loss],
        "curve_val_accuracy": [round(v, 4) for v in res.val_accuracy],
        "val_loss": round(val_loss, 4),
        "val_accuracy": round(val_acc, 4),
    }
    if mode == "full":
        out["relative_change"] = {
            k: round(v, 5) for k, v in relative_change(before, model.state_dict()).items()
        }
    else:
        out["lora"] = {}
        for name, m in model.named_modules():
            if isinstance(m, LoRALinear):
                dw = m.delta_weight().detach()
                out["lora"][name] = {
                    "rank": int(torch.linalg.matrix_rank(dw)),
                    "relative_norm": round(float(dw.norm() / m.base.weight.norm()), 5),
                    "singular_values": [round(float(s), 5) for s in torch.linalg.svdvals(dw)[:16]],
                }
    print(f"{mode} {pool} seed {seed}: accuracy {val_acc:.3f} in {seconds:.0f} s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--train_per_play", type=int, default=None)
    p.add_argument("--val_per_play", type=int, default=200)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--head_lr", type=float, default=3e-3)
    p.add_argument("--head_std", type=float, default=0.02)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--eval_every", type=int, default=25)
    p.add_argument("--curve_val", type=int, default=200)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--last_seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="benchmarks/results/ch08_finetune.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    model, tok = load_checkpoint("shakespeare-char")
    t = task(args)
    (x, y), (xv, yv) = (encode_passages(t[s], tok) for s in ("train", "val"))
    majority = int(y.float().mean() > 0.5)
    baselines = {"majority": float((yv == majority).float().mean())}
    V = tok.vocab_size
    bag = fit_linear_probe(bag_of_characters(x, V), y, l2=1e-3)
    with torch.no_grad():
        pred = (bag(bag_of_characters(xv, V))[:, 0] > 0).long()
    baselines["bag_of_characters"] = float((pred == yv).float().mean())
    t0 = time.perf_counter()
    features = [pooled_states(model, x, pool, batch_size=128) for pool in ("last", "mean")]
    frozen_info = {}
    for pool, f, l2 in zip(("last", "mean"), features, (1e-3, 1e-1), strict=True):
        frozen = GPTClassifier(model, mode="frozen", pool=pool)
        frozen.head = fit_linear_probe(f, y, l2=l2)
        frozen_loss, baselines[f"frozen_{pool}"] = evaluate(frozen, xv, yv)
        frozen_info[pool] = {"l2": l2, "val_loss": round(frozen_loss, 4)}
    frozen_seconds = time.perf_counter() - t0
    print(baselines, flush=True)
    jobs = [(m, "last", s) for s in args.last_seeds for m in ("full", "lora")]
    jobs += [(m, "mean", s) for s in args.seeds for m in ("full", "lora")]
    data_ = ((x, y), (xv, yv))
    runs = [train_one(m, pool, s, args, data_) for m, pool, s in jobs]
    result = {
        "command": "nice python benchmarks/ch08_finetune.py",
        "args": vars(args),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads_per_run": 1,
            "parallel_runs": 1,
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "train": {"passages": len(x), "plays": sorted({q.play for q in t["train"]})},
        "val": {"passages": len(xv), "plays": sorted({q.play for q in t["val"]})},
        "balance": {"train": class_balance(t["train"]), "val": class_balance(t["val"])},
        "baselines": {k: round(v, 4) for k, v in baselines.items()},
        "frozen": {
            "trainable": count_trainable(frozen),
            "seconds": round(frozen_seconds, 1),
            **frozen_info,
        },
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
