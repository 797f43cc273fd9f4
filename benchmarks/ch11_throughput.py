"""Chapter 11's speed measurements on the CPU, one thread: training throughput against model size and
against context length, and the speed, size and loss of the character model quantized to int8.

- matmul: the FLOP/s of a large float32 matrix product, the practical peak of this core;
- sizes: tokens/s of a training step (forward, backward, AdamW) for GPTs from 28 thousand to 25 million
  parameters, context 128, 1,024 tokens per step; FLOP/s achieved = tokens/s × (6N + 12·L·T·d);
- context: the 4-layer, 128-dimension GPT at contexts 64 … 2048, 2,048 tokens per step, with PyTorch's
  fused attention (``sdpa``) and with the (T, T) score matrix written out (``explicit``);
- quantization: the committed character model in float32 and with every nn.Linear dynamically
  quantized to int8 (``torch.ao.quantization.quantize_dynamic``), its serialized size, forward speed
  and loss over every character of the held-out plays; the same speed comparison for a wider model.

Times are the best of several rounds (the round least disturbed by other work on the machine).

    OMP_NUM_THREADS=1 nice python benchmarks/ch11_throughput.py   # writes benchmarks/results/ch11_throughput.json
"""

from __future__ import annotations

import argparse
import io
import time
import warnings

import torch
from ch11_common import char_corpus, full_val_loss, run_info
from runinfo import write_json

from gptmini import GPT, GPTConfig, load_checkpoint

SIZES = [(1, 32, 1), (2, 64, 2), (4, 128, 4), (4, 256, 4), (6, 384, 6), (8, 512, 8)]
CONTEXTS = [64, 128, 256, 512, 1024, 2048]


def best_seconds(fn, rounds: int, per_round: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        best = min(best, (time.perf_counter() - start) / per_round)
    return best


def matmul_flops(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_seconds(lambda: a @ b, rounds=5, per_round=5)


def train_step_seconds(cfg: GPTConfig, batch: int, rounds: int = 3) -> float:
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = model.configure_optimizer(0.1, 1e-3)
    x = torch.randint(cfg.vocab_size, (batch, cfg.block_size))

    def step():
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return best_seconds(step, rounds, per_round=2)


def quantized(model):
    """Every nn.Linear replaced by a dynamically quantized int8 one (the deprecation warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def serialized_bytes(model) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


@torch.no_grad()
def forward_seconds(model, x) -> float:
    return best_seconds(lambda: model(x), rounds=5, per_round=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/ch11_throughput.json")
    args = parser.parse_args()
    started = time.perf_counter()
    result = {"matmul_flops": matmul_flops()}
    print(f"matmul {result['matmul_flops'] / 1e9:.1f} GFLOP/s", flush=True)

    result["sizes"] = []
    for n_layer, n_embd, n_head in SIZES:
        cfg = GPTConfig(
            vocab_size=79, block_size=128, n_layer=n_layer, n_head=n_head, n_embd=n_embd, pos_encoding="rope"
        )
        seconds = train_step_seconds(cfg, batch=8)
        model = GPT(cfg)
        row = dict(
            n_layer=n_layer,
            n_embd=n_embd,
            params=model.num_params(),
            flops_per_token=model.flops_per_token(),
            tokens_per_sec=8 * 128 / seconds,
        )
        row["flops_per_sec"] = row["tokens_per_sec"] * row["flops_per_token"]
        result["sizes"].append(row)
        print(row, flush=True)

    result["contexts"] = []
    for T in CONTEXTS:
        row = dict(T=T, batch=2048 // T)
        for impl in ("sdpa", "explicit"):
            cfg = GPTConfig(
                vocab_size=79,
                block_size=T,
                n_layer=4,
                n_head=4,
                n_embd=128,
                pos_encoding="rope",
                attn_impl=impl,
            )
            row[impl] = 2048 / train_step_seconds(cfg, batch=2048 // T)  # tokens/s
        row["flops_per_token"] = GPTConfig(
            vocab_size=79, block_size=T, n_layer=4, n_head=4, n_embd=128
        ).flops_per_token()
        result["contexts"].append(row)
        print(row, flush=True)

    model, tok = load_checkpoint("shakespeare-char")
    int8 = quantized(model)
    _, _, val = char_corpus()
    x = torch.randint(tok.vocab_size, (16, 128), generator=torch.Generator().manual_seed(0))
    result["quantization"] = {
        "char_model": {
            "float32_bytes": serialized_bytes(model),
            "int8_bytes": serialized_bytes(int8),
            "float32_forward_tokens_per_sec": x.numel() / forward_seconds(model, x),
            "int8_forward_tokens_per_sec": x.numel() / forward_seconds(int8, x),
            "float32_val_full": full_val_loss(model, val, 128),
            "int8_val_full": full_val_loss(int8, val, 128),
        }
    }
    print(result["quantization"], flush=True)
    torch.manual_seed(0)
    wide = GPT(GPTConfig(vocab_size=79, block_size=128, n_layer=4, n_head=12, n_embd=768)).eval()
    result["quantization"]["wide_model"] = {
        "n_layer": 4,
        "n_embd": 768,
        "params": wide.num_params(),
        "float32_forward_tokens_per_sec": x.numel() / forward_seconds(wide, x),
        "int8_forward_tokens_per_sec": x.numel() / forward_seconds(quantized(wide), x),
    }
    print(result["quantization"]["wide_model"], flush=True)
    write_json(args.out, {**run_info(started), **result})


if __name__ == "__main__":
    main()
