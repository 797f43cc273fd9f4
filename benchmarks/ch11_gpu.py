"""Chapter 11's GPU benchmark: each training-speed technique measured on its own, on the GPT-2 small shape.

One training step (forward, backward, fused AdamW) of GPT-2 small (vocabulary padded to 50,304,
context 1,024) is timed under each of these settings, every one a change of one knob from the plain
float32 baseline, then all of them together:

    fp32            float32 matrix products (TF32 off), explicit attention, eager (no compile)
    tf32            TF32 tensor-core matrix products (torch.backends.cuda.matmul.allow_tf32)
    bf16            bfloat16 autocast
    sdpa            F.scaled_dot_product_attention (flash attention where supported)
    compile         torch.compile
    bf16+sdpa+compile

It needs a CUDA GPU; without one it says so and writes nothing.

    python benchmarks/ch11_gpu.py [--peak-tflops 989]   # writes benchmarks/results/ch11_gpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from runinfo import run_info, write_json

from gptmini import GPT, GPTConfig

SHAPE = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0)
SETTINGS = {  # name: (allow_tf32, autocast dtype, attention, compile)
    "fp32": (False, None, "explicit", False),
    "tf32": (True, None, "explicit", False),
    "bf16": (False, torch.bfloat16, "explicit", False),
    "sdpa": (False, None, "sdpa", False),
    "compile": (False, None, "explicit", True),
    "bf16+sdpa+compile": (True, torch.bfloat16, "sdpa", True),
}


def measure(name: str, batch: int, steps: int, rounds: int) -> dict:
    """Tokens per second of one setting: the median of ``rounds`` timings of ``steps`` steps."""
    tf32, dtype, attn, compile_ = SETTINGS[name]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = GPT(GPTConfig(**SHAPE, attn_impl=attn)).cuda()
    opt = model.configure_optimizer(0.1, 6e-4, (0.9, 0.95), "cuda")
    runner = torch.compile(model) if compile_ else model
    x = torch.randint(0, SHAPE["vocab_size"], (batch, SHAPE["block_size"]), device="cuda")
    y = torch.randint(0, SHAPE["vocab_size"], (batch, SHAPE["block_size"]), device="cuda")

    def step() -> float:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            _, loss = runner(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    start = time.perf_counter()
    for _ in range(3):  # compilation and warm-up
        step()
    torch.cuda.synchronize()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / steps)
    seconds = statistics.median(times)
    result = {
        "allow_tf32": tf32,
        "autocast": str(dtype).removeprefix("torch.") if dtype else None,
        "attn_impl": attn,
        "compile": compile_,
        "ms_per_step": seconds * 1e3,
        "tokens_per_sec": batch * SHAPE["block_size"] / seconds,
        "warmup_seconds": warmup,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "final_loss": float(loss),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--out", default="benchmarks/results/ch11_gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured, nothing written")
        sys.exit(0)
    flops_per_token = GPTConfig(**SHAPE).flops_per_token()
    runs = {}
    for name in SETTINGS:
        torch.cuda.empty_cache()
        r = measure(name, args.batch, args.steps, args.rounds)
        r["mfu_of_bf16_peak"] = r["tokens_per_sec"] * flops_per_token / (args.peak_tflops * 1e12)
        runs[name] = r
        print(
            f"{name:<18}{r['tokens_per_sec']:>10,.0f} tokens/s  {r['ms_per_step']:>8.1f} ms/step  "
            f"{r['peak_memory_gib']:>5.1f} GiB  MFU {r['mfu_of_bf16_peak']:.1%}",
            flush=True,
        )
    write_json(
        args.out,
        {
            **run_info(),
            "gpu": torch.cuda.get_device_name(),
            "load_average": list(os.getloadavg()),
            "shape": SHAPE,
            "batch": args.batch,
            "flops_per_token": flops_per_token,
            "peak_tflops": args.peak_tflops,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
