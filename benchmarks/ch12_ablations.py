"""Chapter 12's ablations: a GPT-2-style small model, then one of today's changes at a time, at equal training time.

The baseline is the small CPU model (4 layers, 4 heads, 128 dims, context 64, batch 12, dropout 0) in
GPT-2's shape: learned positions, LayerNorm, GELU MLP, biases, tied embeddings, multi-head attention,
AdamW with lr 2e-3 → 2e-4 (cosine, 100 warmup steps). Each variant changes one thing (``VARIANTS``);
"modern" changes all of them at once.

Equal training time: a timing pass first trains every variant for a few chunks of steps, interleaved
(variant 1, 2, ..., 1, 2, ...), and takes each one's median seconds per step. Time is the CPU time of
the process (``time.process_time``; one thread), which on a shared machine is what the wall-clock of
an idle core would be: other people's work delays the run but is not counted. The budget is the time
the baseline takes for ``--baseline-steps`` steps; each variant gets the steps that fit that time at
its own speed, baseline_steps × (baseline s/step) / (variant s/step), and its cosine schedule ends
there. The runs follow, one at a time, seeds in the outer loop; their training CPU seconds (and
wall-clock seconds) are recorded too. After each run the full held-out loss is measured (every val
token once, in order; not part of the budget), with a curve of estimates on the way (20 fixed random
val batches, not timed either).

    OMP_NUM_THREADS=1 nice python benchmarks/ch12_ablations.py [--baseline-steps 400] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from runinfo import run_info, write_json

from gptmini import data
from gptmini.model import GPT, GPTConfig
from gptmini.tokenizer import CharTokenizer
from gptmini.train import TrainConfig, Trainer

SMALL = dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
GPT2 = dict(pos_encoding="learned", norm="layernorm", mlp="gelu", bias=True, tie_weights=True)
TRAIN = dict(
    batch_size=12, learning_rate=2e-3, min_lr=2e-4, warmup_steps=100, weight_decay=0.1, beta1=0.9,
    beta2=0.99, grad_clip=1.0, eval_iters=1,  # the estimate train() ends with: one batch (see val_loss)
)  # fmt: skip
# one change at a time: (model fields, train fields)
VARIANTS = {
    "baseline (GPT-2)": ({}, {}),
    "RMSNorm": (dict(norm="rmsnorm"), {}),
    "SwiGLU": (dict(mlp="swiglu"), {}),
    "ReLU²": (dict(mlp="relu2"), {}),
    "rotary": (dict(pos_encoding="rope"), {}),
    "GQA (2 kv heads)": (dict(n_kv_head=2), {}),
    "no biases": (dict(bias=False), {}),
    "untied": (dict(tie_weights=False), {}),
    "QK-norm": (dict(qk_norm=True), {}),
    "soft-cap 30": (dict(logit_softcap=30.0), {}),
    "Muon": ({}, dict(optimizer="muon")),
    "modern (all)": (
        dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False, tie_weights=False,
             qk_norm=True, logit_softcap=30.0),
        dict(optimizer="muon"),
    ),
}  # fmt: skip


def make_trainer(name: str, seed: int, steps: int, vocab_size: int, train_ids, val_ids) -> Trainer:
    """The variant's model (initialised from ``seed``) and a trainer whose schedule ends at ``steps``."""
    model_kw, train_kw = VARIANTS[name]
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, **SMALL, **(GPT2 | model_kw)))
    tc = TrainConfig(
        max_steps=steps, eval_interval=0, progress=False, device="cpu", seed=seed, **(TRAIN | train_kw)
    )
    return Trainer(model, train_ids, val_ids, tc)


def train_seconds(trainer: Trainer, until: int) -> float:
    """Train to step ``until``; the CPU seconds it took, less the one-batch evaluation train() ends with."""
    start = time.process_time()
    trainer.train(until=until)
    seconds = time.process_time() - start
    start = time.process_time()  # the same evaluation again takes the same time: take it off
    trainer.evaluate()
    return seconds - (time.process_time() - start)


def seconds_per_step(vocab_size, train_ids, val_ids, rounds: int, chunk: int) -> dict[str, float]:
    """Each variant's median seconds per training step, measured in interleaved chunks."""
    trainers = {n: make_trainer(n, 0, 10_000, vocab_size, train_ids, val_ids) for n in VARIANTS}
    times = {n: [] for n in VARIANTS}
    for trainer in trainers.values():
        trainer.train(until=5)  # warm-up: first-call allocations are not the variant's speed
    for _ in range(rounds):
        for name, trainer in trainers.items():
            times[name].append(train_seconds(trainer, trainer.step + chunk) / chunk)
    return {n: statistics.median(t) for n, t in times.items()}


@torch.no_grad()
def val_loss(model: GPT, val_ids: np.ndarray, n_batches: int | None = None) -> float:
    """Mean loss over every val token once, in order (None), or over n_batches fixed random batches."""
    model.eval()
    if n_batches is None:  # 64 windows a batch: the same mean as 12, sooner
        batches = data.eval_batches(val_ids, 64, model.config.block_size)
    else:
        gen = torch.Generator().manual_seed(0)
        batches = (data.get_batch(val_ids, 12, model.config.block_size, gen) for _ in range(n_batches))
    total, count = 0.0, 0
    for x, y in batches:
        total, count = total + model(x, y)[1].item() * y.numel(), count + y.numel()
    model.train()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--baseline-steps", type=int, default=400, help="budget: the baseline's time for these"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--curve-points", type=int, default=4)
    parser.add_argument("--timing-rounds", type=int, default=5)
    parser.add_argument("--timing-chunk", type=int, default=10)
    parser.add_argument("--only", nargs="*", default=None, help="a subset of the variants (for a quick try)")
    parser.add_argument("--out", default="benchmarks/results/ch12_ablations.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only:
        for name in list(VARIANTS):
            if name not in args.only:
                del VARIANTS[name]

    tok = CharTokenizer.from_text(data.corpus_text("all"))
    train_ids, val_ids = data.tokenize_corpus(tok, "train"), data.tokenize_corpus(tok, "val")
    load = [os.getloadavg()[0]]
    sps = seconds_per_step(tok.vocab_size, train_ids, val_ids, args.timing_rounds, args.timing_chunk)
    base = next(iter(VARIANTS))
    steps = {n: round(args.baseline_steps * sps[base] / s) for n, s in sps.items()}
    for n in VARIANTS:
        print(f"{n:<18} {1000 * sps[n]:6.1f} CPU ms/step  -> {steps[n]:>5} steps", flush=True)

    runs = {n: [] for n in VARIANTS}

    def save(complete: bool) -> None:  # after every run, so that a stopped sweep keeps what it measured
        result = dict(
            run_info(),
            complete=complete,
            baseline_steps=args.baseline_steps,
            seeds=args.seeds,
            seconds_per_step={n: round(s, 5) for n, s in sps.items()},
            steps=steps,
            load_average_1min=[round(x, 2) for x in load],
            model=SMALL | GPT2,
            train=TRAIN,
            variants={n: dict(model=m, train=t) for n, (m, t) in VARIANTS.items()},
            runs=runs,
        )
        write_json(args.out, result)

    for seed in args.seeds:
        for name in VARIANTS:
            trainer = make_trainer(name, seed, steps[name], tok.vocab_size, train_ids, val_ids)
            curve, seconds, wall = [], 0.0, time.perf_counter()
            marks = [round(steps[name] * (i + 1) / args.curve_points) for i in range(args.curve_points)]
            for until in marks:
                seconds += train_seconds(trainer, until)
                curve.append(
                    (trainer.step, round(seconds, 2), round(val_loss(trainer.model, val_ids, 20), 4))
                )
            wall = time.perf_counter() - wall  # training and the curve's estimates
            full = val_loss(trainer.model, val_ids)
            load.append(os.getloadavg()[0])
            runs[name].append(
                dict(seed=seed, steps=trainer.step, seconds=round(seconds, 1), wall_seconds=round(wall, 1),
                     full_val_loss=round(full, 4),
                     curve=curve, params=trainer.model.num_params())
            )  # fmt: skip
            print(
                f"seed {seed}  {name:<18} {trainer.step:>5} steps {seconds:6.1f} CPU s ({wall:.0f} s)  full val {full:.4f}"
                f"  (load {load[-1]:.2f})",
                flush=True,
            )
            save(complete=False)
    save(complete=True)


if __name__ == "__main__":
    main()
