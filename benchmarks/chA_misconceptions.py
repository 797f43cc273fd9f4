"""Appendix A's experiments: four language models of the same size, trained on the same characters of the
training plays, and measured on the held-out plays.

- ``gpt``: gptmini's GPT, causal self-attention, next-character prediction (what a GPT is);
- ``mlm``: the same network without the causal mask, trained as BERT is (Devlin et al. 2019): 15% of
  the characters are hidden (80% replaced by a [MASK] token, 10% by a random character, 10% left) and
  predicted from both sides;
- ``bidir_lm``: the same network without the causal mask, trained on next-character prediction: every
  position can read the character it is asked to predict;
- ``lstm``: a two-layer LSTM language model (Hochreiter and Schmidhuber 1997) with as many parameters as
  the GPT, trained on next-character prediction with the same batches, steps and schedule.

Measured: the training loss along the way; the loss with the future hidden (each prefix of a window
fed alone, the next character predicted at its end), by prefix length; filling in blanks; text sampled
left to right and the share of its words that occur in the training plays; full validation loss and
training speed of the GPT and the LSTM.

    OMP_NUM_THREADS=1 nice python benchmarks/chA_misconceptions.py   # writes benchmarks/results/chA_misconceptions.json
    OMP_NUM_THREADS=1 nice python benchmarks/chA_misconceptions.py --seeds 0 1 2  # GPT vs MLM, three seeds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from ch11_common import char_corpus, fixed_batches, full_val_loss, mean_loss, run_info
from runinfo import command_line, write_json
from torch import nn

from gptmini import GPT, GPTConfig
from gptmini.attention import CausalSelfAttention
from gptmini.data import corpus_text, get_batch
from gptmini.positional import apply_rope
from gptmini.train import TrainConfig, lr_at

SHAPE = dict(n_layer=3, n_head=4, n_embd=96)
MASK_RATE = 0.15


class BidirectionalSelfAttention(CausalSelfAttention):
    """CausalSelfAttention with the mask removed: every position attends to every position, as in BERT."""

    def forward(self, x, rope=None, kv_cache=None, layer=0, need_weights=False):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (
            t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v)
        )  # (B, nh, T, hd)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # no mask: position t sees t+1, t+2, ...
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C)), None


def encoder(vocab_size: int, block_size: int) -> GPT:
    """gptmini's GPT with every attention layer made bidirectional (same weights, same parameter count)."""
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, pos_encoding="rope", **SHAPE))
    for block in model.transformer.h:
        block.attn.__class__ = BidirectionalSelfAttention
    return model


class LSTMLanguageModel(nn.Module):
    """Embedding → multi-layer LSTM → linear head: the state after character t is all it knows of x_≤t."""

    def __init__(self, vocab_size: int, n_embd: int, hidden: int, n_layer: int = 2):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.lstm = nn.LSTM(n_embd, hidden, num_layers=n_layer, batch_first=True)
        self.lm_head = nn.Linear(hidden, vocab_size)

    def forward(self, idx, targets=None):
        h, _ = self.lstm(self.wte(idx))  # (B, T, hidden), computed one position after the other
        logits = self.lm_head(h)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lstm_param_count(vocab_size: int, n_embd: int, hidden: int, n_layer: int = 2) -> int:
    """Embedding V·e; per layer four gates, each a matrix on [input, h] plus two biases; head h·V + V."""
    gates = sum(4 * hidden * ((n_embd if i == 0 else hidden) + hidden + 2) for i in range(n_layer))
    return vocab_size * n_embd + gates + hidden * vocab_size + vocab_size


def lstm_matching(n_params: int, vocab_size: int, n_embd: int) -> LSTMLanguageModel:
    """The two-layer LSTM whose hidden size brings its parameter count closest to ``n_params``."""
    hidden = min(range(8, 2048), key=lambda h: abs(lstm_param_count(vocab_size, n_embd, h) - n_params))
    model = LSTMLanguageModel(vocab_size, n_embd, hidden)
    assert model.num_params() == lstm_param_count(vocab_size, n_embd, hidden)
    return model


def mask_for_mlm(x: torch.Tensor, mask_id: int, vocab_size: int, gen: torch.Generator):
    """BERT's corruption: choose 15% of positions; 80% → [MASK], 10% → random character, 10% unchanged."""
    chosen = torch.rand(x.shape, generator=gen) < MASK_RATE
    roll = torch.rand(x.shape, generator=gen)
    inputs = x.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = torch.randint(vocab_size, x.shape, generator=gen)[swap]
    targets = torch.where(chosen, x, torch.full_like(x, -100))  # loss only where a character was chosen
    return inputs, targets


def train(
    model, kind: str, train_ids, steps: int, batch_size: int, block: int, vocab_size: int, seed: int = 0
):
    """AdamW (decay on matrices), warmup 100 steps then cosine 2e-3 → 2e-4, clipping 1.0; same batches for all.

    ``seed`` changes the order of the training windows (and the MLM's corruption), not the model's init.
    """
    tc = TrainConfig(max_steps=steps, learning_rate=2e-3, min_lr=2e-4, warmup_steps=100)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=tc.learning_rate,
        betas=(tc.beta1, tc.beta2),
    )
    gen, mask_gen = torch.Generator().manual_seed(1337 + seed), torch.Generator().manual_seed(7 + seed)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        if kind == "mlm":  # the same windows as the language models read, corrupted
            x, _ = get_batch(train_ids, batch_size, block, gen)
            x, y = mask_for_mlm(x, vocab_size, vocab_size, mask_gen)
        else:
            x, y = get_batch(train_ids, batch_size, block, gen)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "train_loss": losses,
        "seconds": round(seconds, 1),
        "tokens_per_sec": round(steps * batch_size * block / seconds),
    }


@torch.no_grad()
def next_logits(model, kind: str, ctx: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Logits of the character after each row of ``ctx`` (B, t), with nothing to its right."""
    if kind == "mlm":  # BERT can only be asked: what is the hidden character at the end?
        ctx = torch.cat([ctx, torch.full((ctx.shape[0], 1), mask_id)], dim=1)
    return model(ctx)[0][:, -1]


@torch.no_grad()
def future_hidden_nll(model, kind, val_ids, block: int, mask_id: int, n: int = 128) -> list[float]:
    """NLL of character t+1 given characters 1..t alone, for t = 1..block (the MLM gets a [MASK] at the end)."""
    x, y = fixed_batches(val_ids, 1, n, block, seed=11)[0]
    width = block - 1 if kind == "mlm" else block  # the MLM needs one place for its [MASK]
    out = []
    for t in range(1, width + 1):
        logits = next_logits(model, kind, x[:, :t], mask_id)
        out.append(F.cross_entropy(logits, y[:, t - 1]).item())
    return out


@torch.no_grad()
def fill_blanks(model, kind, val_ids, block: int, mask_id: int, n: int = 256) -> dict:
    """Hide 15% of the characters of val windows (never the first); predict each hidden one.

    The MLM sees both sides (the hidden characters replaced by [MASK]); a GPT sees only what is on
    the left, as it always does: its prediction at position t−1 is its guess for position t.
    """
    x, _ = fixed_batches(val_ids, 1, n, block, seed=12)[0]
    hide = torch.rand(x.shape, generator=torch.Generator().manual_seed(13)) < MASK_RATE
    hide[:, 0] = False
    if kind == "mlm":
        logits = model(torch.where(hide, torch.full_like(x, mask_id), x))[0]  # (n, block, V')
        logits, targets = logits[hide], x[hide]
    else:
        logits = model(x)[0][:, :-1]  # position t−1 predicts t
        logits, targets = logits[hide[:, 1:]], x[:, 1:][hide[:, 1:]]
    logits = logits[:, :mask_id] if kind == "mlm" else logits  # never predict [MASK] itself
    return {
        "hidden": int(targets.numel()),
        "nll": F.cross_entropy(logits, targets).item(),
        "accuracy": (logits.argmax(-1) == targets).float().mean().item(),
    }


@torch.no_grad()
def fill_one_blank(model, kind, val_ids, block: int, mask_id: int, n: int = 256) -> list[int]:
    """The symmetric version of ``fill_blanks``: each hidden character is predicted on its own.

    The same windows and hidden positions as ``fill_blanks``, but every other character is the true
    one for both models: the GPT sees the true text to the left of the blank, the MLM the true text on
    both sides with one [MASK] at the blank. Returns 1 (right) or 0 for every hidden character, in order.
    """
    x, _ = fixed_batches(val_ids, 1, n, block, seed=12)[0]
    hide = torch.rand(x.shape, generator=torch.Generator().manual_seed(13)) < MASK_RATE
    hide[:, 0] = False
    rows, cols = torch.nonzero(hide, as_tuple=True)  # one blank each, in reading order
    if kind == "mlm":
        inputs = x[rows].clone()  # (n_hidden, block): one copy of its window per blank
        inputs[torch.arange(len(rows)), cols] = mask_id
        logits = torch.cat([model(chunk)[0] for chunk in inputs.split(256)])
        logits = logits[torch.arange(len(rows)), cols, :mask_id]  # never predict [MASK] itself
    else:
        logits = model(x)[0][rows, cols - 1]  # position t−1 predicts t from x_<t
    return (logits.argmax(-1) == x[rows, cols]).int().tolist()


def seeds_experiment(seeds: list[int], steps: int, batch_size: int, block: int) -> dict:
    """Train the GPT and the MLM with each seed (init and batches) and score blanks and left to right."""
    tok, train_ids, val_ids = char_corpus()
    V, mask_id = tok.vocab_size, tok.vocab_size
    out, cpu_start = {}, time.process_time()
    for seed in seeds:
        for kind in ("gpt", "mlm"):
            torch.manual_seed(seed)
            if kind == "gpt":
                model = GPT(GPTConfig(vocab_size=V, block_size=block, pos_encoding="rope", **SHAPE))
            else:
                model = encoder(V + 1, block)
            train(model, kind, train_ids, steps, batch_size, block, V, seed=seed)
            nll = future_hidden_nll(model, kind, val_ids, block, mask_id)
            out.setdefault(kind, {})[str(seed)] = {
                "one_blank_correct": fill_one_blank(model, kind, val_ids, block, mask_id),
                "left_to_right_nll": sum(nll) / len(nll),
            }
            r = out[kind][str(seed)]
            print(kind, seed, f"blanks {sum(r['one_blank_correct']) / len(r['one_blank_correct']):.4f}",
                  f"left to right {r['left_to_right_nll']:.3f}", flush=True)  # fmt: skip
    return {"seeds": seeds, "steps": steps, "cpu_seconds": round(time.process_time() - cpu_start, 1),
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()], "by_model": out}  # fmt: skip


@torch.no_grad()
def sample(model, kind, prompt: list[int], n_new: int, block: int, mask_id: int, seed: int) -> list[int]:
    """Draw n_new characters one at a time (temperature 1), each from the logits at the end of the context."""
    gen = torch.Generator().manual_seed(seed)
    ids = list(prompt)
    width = block - 1 if kind == "mlm" else block
    for _ in range(n_new):
        logits = next_logits(model, kind, torch.tensor([ids[-width:]]), mask_id)[0, :mask_id]
        ids.append(int(torch.multinomial(F.softmax(logits, -1), 1, generator=gen)))
    return ids


def word_validity(text: str, known: set[str]) -> float:
    words = re.findall(r"[A-Za-z']+", text)
    return sum(w.lower() in known for w in words) / max(1, len(words))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/chA_misconceptions.json")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="only the GPT-vs-MLM comparison, once per seed; added to --out"
    )
    args = parser.parse_args()
    if args.seeds:
        result = seeds_experiment(args.seeds, args.steps, args.batch_size, args.block_size)
        result["command"] = command_line()
        existing = json.loads(Path(args.out).read_text())
        existing["blanks_by_seed"] = result
        write_json(args.out, existing)
        return
    started = time.perf_counter()
    tok, train_ids, val_ids = char_corpus()
    V, block, mask_id = (
        tok.vocab_size,
        args.block_size,
        tok.vocab_size,
    )  # [MASK] is one id past the characters
    known = {w.lower() for w in re.findall(r"[A-Za-z']+", corpus_text("train"))}
    prompt = tok.encode("HAMLET:\nTo be, or not to be")

    torch.manual_seed(0)
    models = {
        "gpt": GPT(GPTConfig(vocab_size=V, block_size=block, pos_encoding="rope", **SHAPE)),
        "mlm": encoder(V + 1, block),
        "bidir_lm": encoder(V, block),
    }
    models["lstm"] = lstm_matching(models["gpt"].num_params(), V, SHAPE["n_embd"])
    val_batches = fixed_batches(val_ids, 32, args.batch_size, block, seed=0)
    results = {}
    for kind, model in models.items():
        torch.manual_seed(0)
        run = train(model, kind, train_ids, args.steps, args.batch_size, block, V)
        run["params"] = sum(p.numel() for p in model.parameters())
        if kind != "mlm":
            run["val_teacher_forced"] = mean_loss(model, val_batches)  # the loss a training log reports
        run["future_hidden_nll"] = future_hidden_nll(model, kind, val_ids, block, mask_id)
        run["blanks"] = fill_blanks(model, kind, val_ids, block, mask_id)
        text = tok.decode(sample(model, kind, prompt, 400, block, mask_id, seed=0)[len(prompt) :])
        run["sample"], run["sample_word_validity"] = text, word_validity(text, known)
        if kind in ("gpt", "lstm"):
            run["val_full"] = full_val_loss(model, val_ids, block)
        if kind == "lstm":
            run["hidden"] = model.lstm.hidden_size
        results[kind] = run
        print(
            kind,
            {k: v for k, v in run.items() if k not in ("train_loss", "future_hidden_nll", "sample")},
            flush=True,
        )
    # the seeds' comparison (--seeds) is a separate measurement kept in the same file
    kept = {}
    if os.path.exists(args.out):
        kept = {k: v for k, v in json.loads(Path(args.out).read_text()).items() if k == "blanks_by_seed"}
    write_json(
        args.out,
        {
            **kept,
            **run_info(started),
            "shape": SHAPE,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "block_size": block,
            "mask_rate": MASK_RATE,
            "prompt": tok.decode(prompt),
            "training_words": len(known),
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
