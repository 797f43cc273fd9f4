"""Chapter 03's cost measurement: time and peak memory of one causal attention call against the sequence
length T, for the explicit formula (which materialises the T×T score matrix) and PyTorch's fused
``scaled_dot_product_attention`` (a blocked, flash-style kernel on the CPU and on CUDA, which never does).

One call: batch 1, 12 heads of 64 dimensions (GPT-2 small's shape), causal. The memory is the peak
allocated *by the call*, above the inputs already in memory: on CUDA (bfloat16) from PyTorch's allocator
statistics; on the CPU (float32), where PyTorch keeps no such statistics, from the process's peak
resident memory, each (T, path) measured in a fresh worker process so that one measurement cannot hide
another. The explicit path is skipped where its score matrices would take more than a quarter of the
free memory (recorded with the bytes it would need).

    OMP_NUM_THREADS=1 nice python benchmarks/ch03_attention_cost.py   # -> benchmarks/results/ch03_attention_cost.json

Times: ``seconds`` is the best wall time of ``--repeats`` calls (after a warm-up), ``median_seconds``
their median, ``cpu_seconds`` the best CPU time of the process, the honest measure of a CPU call's
work on a machine shared with other jobs (on CUDA it only counts the launching thread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from runinfo import cpu_name, write_json

from gptmini.attention import causal_mask, scaled_dot_product_attention
from gptmini.device import auto_device

PATHS = ("explicit", "fused")


def explicit(q, k, v):
    return scaled_dot_product_attention(q, k, v, causal_mask(q.shape[2], k.shape[2], device=q.device))[0]


def fused(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def inputs(T: int, n_head: int, head_dim: int, device, dtype):
    g = torch.Generator(device=device).manual_seed(0)
    return torch.randn(3, 1, n_head, T, head_dim, generator=g, device=device, dtype=dtype).unbind(0)


def explicit_bytes(T: int, n_head: int, element_size: int) -> int:
    """What the explicit path holds at its peak: two (n_head, T, T) score tensors and the boolean mask."""
    return 2 * n_head * T * T * element_size + T * T


def timed(fn, q, k, v, repeats: int, sync) -> dict:
    """Best and median wall seconds of ``repeats`` calls, and the best CPU seconds of the process.

    On a shared machine the wall time includes waiting for a core; the CPU time (all threads of
    this process) does not, so it measures the work of a CPU call even when the machine is busy.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(q, k, v)
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return dict(seconds=min(wall), median_seconds=statistics.median(wall), cpu_seconds=min(cpu))


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_worker(path: str, T: int, n_head: int, head_dim: int, repeats: int) -> dict:
    """One (path, T) on the CPU, in this (fresh) process: peak resident bytes added by one call, then time."""
    fn = dict(explicit=explicit, fused=fused)[path]
    fn(*inputs(16, n_head, head_dim, "cpu", torch.float32))  # load the code paths with a tiny call
    q, k, v = inputs(T, n_head, head_dim, "cpu", torch.float32)
    base = resident_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
    out = fn(q, k, v)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del out
    # If an earlier moment had a higher peak than this call, ru_maxrss would not move: say so.
    assert peak_after > peak_before or T <= 256, "the call did not raise the peak resident memory"
    return dict(**timed(fn, q, k, v, repeats, lambda: None), peak_bytes=max(peak_after - base, 0))


def cuda_measure(fn, q, k, v, repeats: int) -> dict:
    """Peak bytes one call allocates above what is already allocated, and its times."""
    fn(q, k, v)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn(q, k, v)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return dict(**timed(fn, q, k, v, repeats, torch.cuda.synchronize), peak_bytes=peak)


def free_bytes(cuda: bool) -> int:
    if cuda:
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":") for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--min-log2-t", type=int, default=7, help="shortest T = 2**this")
    parser.add_argument("--max-log2-t", type=int, default=None, help="longest T = 2**this (13 CPU, 17 CUDA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/ch03_attention_cost.json")
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        path, T = args.worker[0], int(args.worker[1])
        print(json.dumps(cpu_worker(path, T, args.n_head, args.head_dim, args.repeats)))
        return

    device = auto_device()
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    element_size = torch.tensor([], dtype=dtype).element_size()
    max_log2 = args.max_log2_t or (17 if cuda else 13)
    free = free_bytes(cuda)
    load_at_start = os.getloadavg()
    rows = []
    for log2_t in range(args.min_log2_t, max_log2 + 1):
        T = 2**log2_t
        row = dict(T=T)
        if cuda:
            q, k, v = inputs(T, args.n_head, args.head_dim, device, dtype)
        for name in PATHS:
            need = explicit_bytes(T, args.n_head, element_size)
            if name == "explicit" and need > free / 4:
                row[name] = dict(skipped=True, need_bytes=need)
                continue
            if cuda:
                try:
                    row[name] = cuda_measure(
                        dict(explicit=explicit, fused=fused)[name], q, k, v, args.repeats
                    )
                except torch.OutOfMemoryError:
                    row[name] = dict(skipped=True, need_bytes=need)
                torch.cuda.empty_cache()
            else:
                worker = [sys.executable, __file__, "--worker", name, str(T), "--n-head", str(args.n_head),
                          "--head-dim", str(args.head_dim), "--repeats", str(args.repeats)]  # fmt: skip
                result = subprocess.run(worker, capture_output=True, text=True, check=True)
                row[name] = json.loads(result.stdout)
        rows.append(row)
        print(row, flush=True)

    threads, niceness = os.environ.get("OMP_NUM_THREADS"), os.nice(0)
    prefix = (f"OMP_NUM_THREADS={threads} " if threads else "") + (f"nice -n {niceness} " if niceness else "")
    out = dict(
        command=prefix + shlex.join(["python", *sys.argv]),
        args={k: v for k, v in vars(args).items() if k != "worker"},
        device=torch.cuda.get_device_name() if cuda else "cpu",
        cpu=cpu_name(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        dtype=str(dtype).removeprefix("torch."),
        memory="torch.cuda.max_memory_allocated" if cuda else "peak resident set size (ru_maxrss)",
        free_bytes_at_start=free,
        load_average=dict(
            start=load_at_start, end=os.getloadavg()
        ),  # 1, 5, 15 minutes: a busy machine is slower
        torch=torch.__version__,
        python=platform.python_version(),
        rows=rows,
    )
    write_json(args.out, out)


if __name__ == "__main__":
    main()
