"""Chapter 11's distillation experiment: a small GPT trained on the training plays from scratch, and the
same small GPT trained to match the committed character model's next-character distributions
(Hinton et al. 2015), with equal steps, equal batches and equal learning-rate schedules.

Three students, identical at initialisation (seed 0) and fed identical batches (seed 1337):

- ``scratch``: cross-entropy with the true next character (the ordinary language-model loss);
- ``soft``: cross-entropy with the teacher's whole distribution at temperature 1 (equal, up to a
  constant, to KL(teacher || student));
- ``hinton``: 0.5 · T² · KL at temperature T = 2, plus 0.5 · cross-entropy with the true character.

Every student is scored by its ordinary cross-entropy on every character of the held-out plays.

    OMP_NUM_THREADS=1 nice python benchmarks/ch11_distill.py   # writes benchmarks/results/ch11_distill.json
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from ch11_common import char_corpus, fixed_batches, full_val_loss, mean_loss, run_info
from runinfo import write_json

from gptmini import GPT, GPTConfig, load_checkpoint
from gptmini.data import get_batch
from gptmini.train import TrainConfig, lr_at

STUDENT = dict(n_layer=2, n_head=2, n_embd=64)
METHODS = {"scratch": (0.0, 1.0), "soft": (1.0, 1.0), "hinton": (0.5, 2.0)}  # name: (alpha, temperature)


def distillation_loss(student_logits, teacher_logits, targets, alpha: float, temperature: float):
    """alpha · T² · KL(softmax(teacher/T) || softmax(student/T)) + (1 − alpha) · cross-entropy(targets)."""
    s = student_logits.flatten(0, 1)  # (B·T, vocab)
    loss = (1 - alpha) * F.cross_entropy(s, targets.flatten()) if alpha < 1 else 0.0
    if alpha > 0:
        log_q = F.log_softmax(s / temperature, dim=-1)
        p = F.softmax(teacher_logits.flatten(0, 1) / temperature, dim=-1)
        kl = F.kl_div(log_q, p, reduction="batchmean")  # Σ p (log p − log q), averaged over positions
        loss = loss + alpha * temperature**2 * kl
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--out", default="benchmarks/results/ch11_distill.json")
    args = parser.parse_args()
    started = time.perf_counter()
    teacher, tok = load_checkpoint("shakespeare-char")
    block = teacher.config.block_size
    _, train, val = char_corpus()
    val_batches = fixed_batches(val, 16, args.batch_size, block, seed=0)
    tc = TrainConfig(max_steps=args.steps, learning_rate=2e-3, min_lr=2e-4, warmup_steps=100)
    eval_steps = sorted({args.steps // 8, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps})
    result = {
        "teacher": {
            "config": teacher.config.to_dict(),
            "params": teacher.num_params(),
            "val_full": full_val_loss(teacher, val, block),
        },
        "student_config": STUDENT,
        "methods": {},
    }
    print("teacher", result["teacher"]["params"], round(result["teacher"]["val_full"], 4), flush=True)
    for name, (alpha, temperature) in METHODS.items():
        torch.manual_seed(0)
        student = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block, pos_encoding="rope", **STUDENT))
        opt = student.configure_optimizer(tc.weight_decay, tc.learning_rate, (tc.beta1, tc.beta2))
        gen = torch.Generator().manual_seed(1337)
        curve, t0 = [], time.perf_counter()
        for step in range(args.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, tc)
            x, y = get_batch(train, args.batch_size, block, gen)
            logits, _ = student(x)
            teacher_logits = None
            if alpha > 0:
                with torch.no_grad():
                    teacher_logits, _ = teacher(x)
            loss = distillation_loss(logits, teacher_logits, y, alpha, temperature)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step + 1 in eval_steps:
                curve.append({"step": step + 1, "val": mean_loss(student, val_batches)})
        seconds = time.perf_counter() - t0
        result["methods"][name] = {
            "alpha": alpha,
            "temperature": temperature,
            "params": student.num_params(),
            "curve": curve,
            "val_full": full_val_loss(student, val, block),
            "train_seconds": round(seconds, 1),
        }
        print(name, {k: v for k, v in result["methods"][name].items() if k != "curve"}, flush=True)
    result.update(
        steps=args.steps,
        batch_size=args.batch_size,
        block_size=block,
        schedule="AdamW, warmup 100 steps, cosine 2e-3 -> 2e-4, clip 1.0",
    )
    write_json(args.out, {**run_info(started), **result})


if __name__ == "__main__":
    main()
