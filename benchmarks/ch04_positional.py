"""Chapter 04's experiment: the same small GPT trained with each positional encoding, then evaluated
at the training context length and beyond it (extrapolation).

The models differ only in ``pos_encoding`` ("learned", "sinusoidal", "rope", "none"); they share the
architecture, the initial random state, the batches (one seeded generator each, same seed) and the
optimisation (AdamW, linear warmup then cosine decay, gradient clipping), so the validation loss is a
fair comparison under one budget. Each model is then scored on the held-out plays with windows of
``--eval-lengths`` characters; a learned table has no rows beyond ``block_size``, so that model is
scored only at lengths it can read. The per-position loss (averaged over windows) shows where in a
long window a model starts to fail.

A last measurement asks how much each model uses the *order* of the text: on the same held-out
windows of ``block_size`` characters, the loss of the prediction at the last position, first with the
window as it is, then with the characters before the last one shuffled (the last character, the
one the prediction is made at, stays). A model that only counted which characters came before
would not notice the shuffle. For the learned encoding, the trained position table of the first
seed is saved too.

One more variant, "sinusoidal-scaled", is gptmini's sinusoidal model with its table multiplied by
0.02·√2, so that the table's entries have the root-mean-square 0.02 of the token embeddings at
initialisation (Vaswani et al. reach a similar balance by multiplying the token embedding by
√n_embd instead). Unscaled, every position vector is about 35 times longer than a token vector
when training starts.

    python benchmarks/ch04_positional.py            # writes benchmarks/results/ch04_positional.json

On a CPU the script uses ``$OMP_NUM_THREADS`` threads when that is set, else two (the book's
reference machine); the JSON records the exact command line, the CPU and the thread count.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import time

import numpy as np
import torch
from runinfo import cpu_name, write_json

from gptmini.data import corpus_text, eval_batches, get_batch, tokenize_corpus
from gptmini.device import auto_device
from gptmini.model import GPT, GPTConfig
from gptmini.positional import POS_ENCODINGS
from gptmini.tokenizer import CharTokenizer
from gptmini.train import TrainConfig, lr_at

SCALED = "sinusoidal-scaled"
VARIANTS = (*POS_ENCODINGS, SCALED)
SINUSOID_SCALE = 0.02 * math.sqrt(2)  # a sin/cos table has RMS 1/√2; the token table's init std is 0.02


def build(cfg: GPTConfig, variant: str) -> GPT:
    """GPT(cfg); for the scaled variant, with the sinusoidal table (and any regrown one) rescaled."""
    model = GPT(cfg)
    if variant == SCALED:
        pe = model.sinusoidal
        unscaled = pe.make
        pe.make = lambda length: unscaled(length) * SINUSOID_SCALE  # used again when the table grows
        pe.table = pe.make(pe.table.shape[0])
    return model


def train(cfg: GPTConfig, variant: str, train_ids: np.ndarray, args, seed: int, device):
    """A plain AdamW loop; returns the model, the training loss every ``args.log_every`` steps, seconds."""
    torch.manual_seed(seed)
    model = build(cfg, variant).to(device)
    opt = model.configure_optimizer(0.1, args.lr, (0.9, 0.95), device_type=device.type)
    # warmup, then cosine decay to lr/10 at the last step: the package's schedule
    schedule = TrainConfig(
        max_steps=args.steps, learning_rate=args.lr, min_lr=args.lr / 10, warmup_steps=args.warmup
    )
    gen = torch.Generator().manual_seed(1000 + seed)  # the same batches for every encoding
    history, running = [], 0.0
    start = time.perf_counter()
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule)
        x, y = get_batch(train_ids, args.batch_size, cfg.block_size, generator=gen, device=device)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if (step + 1) % args.log_every == 0:
            history.append(round(running / args.log_every, 4))
            running = 0.0
    return model, history, time.perf_counter() - start


@torch.no_grad()
def evaluate(
    model: GPT, val_ids: np.ndarray, length: int, batch_size: int, device
) -> tuple[float, list[float]]:
    """Mean loss over full windows of ``length`` tokens of ``val_ids``, and the mean loss at each position."""
    model.eval()
    per_position = torch.zeros(length, dtype=torch.float64)
    n_windows = 0
    for x, y in eval_batches(val_ids, batch_size, length, device=device):
        if x.shape[1] != length:  # the short remainder window: not the same positions, left out
            continue
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)
        per_position += loss.double().sum(0).cpu()
        n_windows += x.shape[0]
    per_position /= n_windows
    return float(per_position.mean()), [round(v, 4) for v in per_position.tolist()]


@torch.no_grad()
def order_sensitivity(model: GPT, val_ids: np.ndarray, length: int, batch_size: int, device, seed: int = 0):
    """Loss at the last position of each window of ``length``: the text as it is, and with x[:-1] shuffled."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, n = torch.zeros(2, dtype=torch.float64), 0
    for x, y in eval_batches(val_ids, batch_size, length, device=device):
        if x.shape[1] != length:
            continue
        shuffled = x.clone()
        for row in range(x.shape[0]):
            shuffled[row, :-1] = x[row, :-1][torch.randperm(length - 1, generator=gen).to(device)]
        for i, inp in enumerate((x, shuffled)):
            logits, _ = model(inp)
            loss = torch.nn.functional.cross_entropy(logits[:, -1], y[:, -1], reduction="sum")
            total[i] += loss.double().cpu()
        n += x.shape[0]
    return dict(in_order=round(float(total[0] / n), 4), prefix_shuffled=round(float(total[1] / n), 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encodings", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--eval-tokens", type=int, default=131072, help="the first N val characters")
    parser.add_argument("--out", default="benchmarks/results/ch04_positional.json")
    args = parser.parse_args()

    device = auto_device()
    if device.type == "cpu":
        threads = os.environ.get("OMP_NUM_THREADS")
        torch.set_num_threads(int(threads) if threads else min(2, os.cpu_count() or 1))
    tok = CharTokenizer.from_text(corpus_text("all"))
    train_ids, val_ids = tokenize_corpus(tok, "train"), tokenize_corpus(tok, "val")[: args.eval_tokens + 1]
    results, start = [], time.perf_counter()
    for encoding in args.encodings:
        for seed in args.seeds:
            cfg = GPTConfig(
                vocab_size=tok.vocab_size,
                block_size=args.block_size,
                n_layer=args.n_layer,
                n_head=args.n_head,
                n_embd=args.n_embd,
                pos_encoding="sinusoidal" if encoding == SCALED else encoding,
            )
            model, history, seconds = train(cfg, encoding, train_ids, args, seed, device)
            row = dict(
                encoding=encoding, seed=seed, params=model.num_params(), train_seconds=round(seconds, 1)
            )
            row["train_loss"] = history
            row["val"] = {}
            for length in args.eval_lengths:
                if encoding == "learned" and length > cfg.block_size:
                    continue  # no position vectors beyond block_size: the model cannot read such a window
                mean, per_position = evaluate(model, val_ids, length, 64, device)
                row["val"][str(length)] = dict(loss=round(mean, 4), per_position=per_position)
            row["last_position"] = order_sensitivity(model, val_ids, cfg.block_size, 64, device)
            if encoding == "learned" and seed == args.seeds[0]:  # what the trained table looks like
                wpe = model.transformer.wpe.weight.detach().cpu()
                row["wpe"] = [[round(v, 4) for v in r] for r in wpe.tolist()]  # (block_size, n_embd)
            results.append(row)
            shown = "  ".join(f"{k}: {v['loss']:.4f}" for k, v in row["val"].items())
            order = row["last_position"]
            print(
                f"{encoding:<17} seed {seed}  {seconds:6.1f} s  val loss at length {shown}  last position: "
                f"{order['in_order']:.4f} in order, {order['prefix_shuffled']:.4f} shuffled",
                flush=True,
            )

    threads_env = os.environ.get("OMP_NUM_THREADS")
    env_prefix = f"OMP_NUM_THREADS={threads_env} " if threads_env else ""
    out = dict(
        command=env_prefix + "python " + shlex.join(sys.argv),
        args=vars(args),
        machine=dict(
            device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            platform=platform.platform(),
            processor=cpu_name(),
            torch=torch.__version__,
            threads=torch.get_num_threads(),
        ),
        total_seconds=round(time.perf_counter() - start, 1),
        results=results,
    )
    write_json(args.out, out)


if __name__ == "__main__":
    main()
