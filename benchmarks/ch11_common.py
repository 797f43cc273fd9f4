"""Helpers shared by the scripts of chapter 11 and appendix A: the corpus as character ids, evaluation
on the held-out plays, and the facts about the run that every result file records."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch
from runinfo import command_line, cpu_name

from gptmini import data
from gptmini.checkpoints import checkpoint_dir, load_tokenizer


def char_corpus() -> tuple[object, np.ndarray, np.ndarray]:
    """The committed character tokenizer and the train / val plays as id arrays (int64)."""
    tok = load_tokenizer(checkpoint_dir("shakespeare-char") / "tokenizer.json")
    train = data.tokenize_corpus(tok, "train").astype(np.int64)
    val = data.tokenize_corpus(tok, "val").astype(np.int64)
    return tok, train, val


def fixed_batches(ids: np.ndarray, n_batches: int, batch_size: int, block_size: int, seed: int):
    """``n_batches`` random windows drawn once with a seeded generator (the same for every model)."""
    gen = torch.Generator().manual_seed(seed)
    return [data.get_batch(ids, batch_size, block_size, gen) for _ in range(n_batches)]


@torch.no_grad()
def mean_loss(model, batches) -> float:
    """Mean next-token cross-entropy (nats per character) of ``model(x, y)`` over ``batches``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        _, loss = model(x, y)
        total, count = total + loss.item() * y.numel(), count + y.numel()
    model.train(was_training)
    return total / count


@torch.no_grad()
def full_val_loss(model, val: np.ndarray, block_size: int, batch_size: int = 64) -> float:
    """Cross-entropy over every character of the held-out plays, each predicted once."""
    return mean_loss(model, data.eval_batches(val, batch_size, block_size))


def run_info(started: float) -> dict:
    """The command, versions, CPU, threads, load and wall time of this run."""
    return {
        "command": command_line(),  # as actually run: thread setting, nice, arguments
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
