"""Training-step throughput of gptmini's GPT (a benchmark, not a test).

CPU: the book's small config (4 layers, 4 heads, 128 dims, context 64, batch 12), the fast attention
path (``torch.nn.functional.scaled_dot_product_attention``) against the explicit one
(softmax(QKᵀ/√d)V written out), measured in the same run, alternating, with the same weights.

CUDA (when available): the GPT-2 124M shape (12 layers, 12 heads, 768 dims, context 1024, vocabulary
padded to 50304), bf16 autocast + torch.compile + flash attention + fused AdamW, with the model FLOPs
utilisation

    MFU = tokens/s × (6N + 12·L·T·d) / peak FLOP/s

where N is the non-embedding parameter count (``GPT.flops_per_token``): 6N for the weight matmuls
forward and backward, 12·L·T·d for the attention scores and weighted values. The peak defaults to an
H100 SXM's dense bf16 989 TFLOP/s (``--peak-tflops``).

Run:  python benchmarks/bench_model.py | tee benchmarks/results/bench_model.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from gptmini.model import GPT, GPTConfig

CPU_CONFIG = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
GPT2_124M = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0)


def train_step(model, opt, x, y, autocast_dtype=None) -> None:
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        _, loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def time_steps(step, n: int, sync=lambda: None) -> float:
    """Seconds per call of ``step``, over n calls."""
    sync()
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - start) / n


def bench_cpu(batch: int, steps: int, rounds: int) -> None:
    torch.manual_seed(0)
    models = {impl: GPT(GPTConfig(**CPU_CONFIG, attn_impl=impl)) for impl in ("sdpa", "explicit")}
    models["explicit"].load_state_dict(models["sdpa"].state_dict())
    opts = {impl: m.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu") for impl, m in models.items()}
    T = CPU_CONFIG["block_size"]
    x = torch.randint(0, CPU_CONFIG["vocab_size"], (batch, T))
    y = torch.randint(0, CPU_CONFIG["vocab_size"], (batch, T))
    times = {impl: [] for impl in models}
    for impl in models:  # warm-up
        for _ in range(3):
            train_step(models[impl], opts[impl], x, y)
    for _ in range(rounds):  # alternate, so that load changes on the machine hit both paths alike
        for impl in models:
            times[impl].append(time_steps(lambda i=impl: train_step(models[i], opts[i], x, y), steps))
    n = models["sdpa"].num_params()
    print(
        f"CPU training step, {CPU_CONFIG['n_layer']} layers, {CPU_CONFIG['n_head']} heads, "
        f"{CPU_CONFIG['n_embd']} dims, context {T}, batch {batch}, {n:,} parameters, "
        f"{torch.get_num_threads()} threads, {rounds} alternating rounds of {steps} steps"
    )
    # The best round is the least disturbed by other work on the machine (as timeit reports the minimum).
    best = {impl: batch * T / min(ts) for impl, ts in times.items()}
    for impl, ts in times.items():
        print(
            f"  {impl:9s} best {best[impl]:8,.0f} tokens/s ({min(ts) * 1e3:.1f} ms/step), "
            f"median {batch * T / statistics.median(ts):8,.0f} tokens/s"
        )
    print(
        f"  fast path / explicit path throughput ratio (best rounds): {best['sdpa'] / best['explicit']:.2f}"
    )


def bench_cuda(
    batch: int, steps: int, peak_tflops: float, compile: bool = True, config: dict = GPT2_124M
) -> None:
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda")
    model = GPT(GPTConfig(**config)).to(device)
    opt = model.configure_optimizer(0.1, 6e-4, (0.9, 0.95), "cuda")
    runner = torch.compile(model) if compile else model
    T = config["block_size"]
    x = torch.randint(0, config["vocab_size"], (batch, T), device=device)
    y = torch.randint(0, config["vocab_size"], (batch, T), device=device)

    def step():
        train_step(runner, opt, x, y, torch.bfloat16)

    start = time.perf_counter()
    for _ in range(3):  # compile and warm up
        step()
    torch.cuda.synchronize()
    warmup = time.perf_counter() - start
    seconds = statistics.median(time_steps(step, steps, torch.cuda.synchronize) for _ in range(3))
    tokens_per_s = batch * T / seconds
    flops = model.flops_per_token(T)
    mfu = tokens_per_s * flops / (peak_tflops * 1e12)
    print(
        f"CUDA training step on {torch.cuda.get_device_name()}, GPT-2 124M shape "
        f"({model.num_params():,} parameters, vocabulary {config['vocab_size']}), context {T}, batch {batch}, "
        f"bf16 autocast, torch.compile={compile}, SDPA (flash), fused AdamW; median of 3 rounds of {steps} steps"
    )
    print(f"  compile + warm-up: {warmup:.1f} s")
    print(
        f"  {tokens_per_s:,.0f} tokens/s ({seconds * 1e3:.1f} ms/step), "
        f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak memory"
    )
    print(
        f"  FLOPs/token = 6N + 12·L·T·d = {flops / 1e6:.1f} MFLOP; MFU = {mfu:.1%} of {peak_tflops:g} TFLOP/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-batch", type=int, default=12)
    parser.add_argument("--cpu-steps", type=int, default=5, help="steps per round")
    parser.add_argument("--cpu-rounds", type=int, default=30)
    parser.add_argument("--gpu-batch", type=int, default=16)
    parser.add_argument("--gpu-steps", type=int, default=20, help="steps per round")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="the GPU's peak dense bf16 TFLOP/s (default: H100 SXM, 989)",
    )
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice); on a shared, busy machine "
        "1 thread avoids OpenMP threads waiting on each other",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs{load}"
    )
    bench_cpu(args.cpu_batch, args.cpu_steps, args.cpu_rounds)
    if torch.cuda.is_available():
        bench_cuda(args.gpu_batch, args.gpu_steps, args.peak_tflops, compile=not args.no_compile)
    else:
        print("CUDA: not available on this machine; the GPT-2 124M GPU measurement was skipped")


if __name__ == "__main__":
    main()
