"""Generation speed: gptmini without and with the KV cache against transformers' generate().

A GPT-2-shaped model with random weights (4 layers, 4 heads, n_embd 128, a 2048-token vocabulary,
context 512: the size of the book's Shakespeare models) is built in transformers and copied into
gptmini with ``GPT.from_hf``, so all three decode greedily with identical weights and must produce
the same tokens (checked). The table gives new tokens per second (batch x new tokens / seconds,
prefill included) for 256 new tokens after a 16-token prompt at batch 1 and 8: the uncached run the
best of ``--slow-repeat`` runs (it recomputes the whole sequence at every step and takes most of the
run's time), the others the best of ``--repeat`` runs, alternated so that a busy moment of a shared machine hits them alike.
Below the table, the time of one decoding step is split: the prefill plus one cached one-token step
per new token and nothing else, run as generate runs it (``OneTokenStep``, the forward pass written
flat) and as the model's ordinary forward pass (module by module), which generate used before. One
torch thread by default: on a small shared CPU, more threads make small matrix products slower and
the timings erratic. On CUDA, when a GPU is present, the same table.

    python benchmarks/bench_generate.py | tee benchmarks/results/bench_generate.txt  # also writes .json
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import transformers
from runinfo import command_line, cpu_name, run_info, write_json

from gptmini.decode_step import OneTokenStep
from gptmini.generate import generate
from gptmini.model import GPT


def build_models(args, device: torch.device) -> tuple[transformers.GPT2LMHeadModel, GPT]:
    """A random GPT-2-shaped transformers model and the gptmini copy of its weights, both in eval mode."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                                  vocab_size=args.vocab_size, n_positions=args.context,
                                  bos_token_id=0, eos_token_id=None, tie_word_embeddings=False)  # fmt: skip
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # larger weights than the init, so the greedy tokens vary from step to step
        for p in hf.parameters():
            p.mul_(2.0)
    return hf.to(device), GPT.from_hf(hf).to(device).eval()


def decoders(hf, model, n_new: int) -> dict:
    """The three ways to decode greedily, each a function of the prompt (B, T) -> (B, T + n_new)."""
    return {
        "gptmini, no cache": lambda idx: generate(model, idx, n_new, do_sample=False, use_cache=False),
        "gptmini, KV cache": lambda idx: generate(model, idx, n_new, do_sample=False),
        "transformers": lambda idx: hf.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False,
                                                max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=0),
    }  # fmt: skip


def timed(fn, idx: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Wall-clock seconds of one call fn(idx), and its output."""
    if idx.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(idx)
    if idx.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def bare_steps(model: GPT, n_new: int, flat: bool):
    """Prefill, then n_new one-token steps with the cache and nothing else: the floor of a decoding step.

    ``flat``: the steps run as ``OneTokenStep`` (what generate uses); otherwise as model(token, kv_cache).
    """

    @torch.inference_mode()
    def run(idx: torch.Tensor) -> None:
        cache = model.new_kv_cache(idx.shape[0], max_length=idx.shape[1] + n_new)
        model(idx, kv_cache=cache)
        if flat:
            step, last = OneTokenStep(model, cache), idx[:, -1]
            for _ in range(n_new):
                step(last)
        else:
            for _ in range(n_new):
                model(idx[:, -1:], kv_cache=cache)

    return run


def table(args, device: torch.device) -> dict:
    """Measure and print tokens/s for every batch size on one device; return the rows by batch size."""
    hf, model = build_models(args, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n## {device.type}: n_layer={args.n_layer} n_head={args.n_head} n_embd={args.n_embd} "
          f"vocab={args.vocab_size} context={args.context} ({n_params / 1e6:.1f}M parameters), "
          f"prompt {args.prompt} tokens, {args.new_tokens} new tokens, greedy")  # fmt: skip
    header = f"{'batch':>5} | {'no cache':>9} | {'KV cache':>9} | {'transformers':>12} | cache/transformers | cache/no-cache"
    print(f"new tokens per second\n{header}\n{'-' * len(header)}")
    gen = torch.Generator().manual_seed(1)
    notes, rows = [], {}
    for batch in args.batch:
        idx = torch.randint(0, args.vocab_size, (batch, args.prompt), generator=gen).to(device)
        runs = decoders(hf, model, args.new_tokens)
        for fn in decoders(hf, model, 8).values():
            timed(fn, idx)  # warm-up: first calls allocate memory and pick kernels
        best, outs = {}, {}
        slow = "gptmini, no cache"
        # the slow one: the best of a few runs, so that one busy moment cannot set the headline
        for _ in range(args.slow_repeat):
            t, out = timed(runs[slow], idx)
            if t < best.get(slow, float("inf")):
                best[slow], outs[slow] = t, out
        runs["flat step"] = bare_steps(model, args.new_tokens, flat=True)
        runs["module forward"] = bare_steps(model, args.new_tokens, flat=False)
        for _ in range(args.repeat):  # the fast ones alternate, so a busy moment of the machine hits them all
            for name in ("gptmini, KV cache", "transformers", "flat step", "module forward"):
                t, out = timed(runs[name], idx)
                best[name] = min(best.get(name, float("inf")), t)
                if out is not None:
                    outs[name] = out
        same = all(torch.equal(o, outs["transformers"]) for o in outs.values())
        r_nc, r_c, r_hf = (batch * args.new_tokens / best[name] for name in list(runs)[:3])
        print(f"{batch:>5} | {r_nc:>9.0f} | {r_c:>9.0f} | {r_hf:>12.0f} | {r_c / r_hf:>17.1f}x | "
              f"{r_c / r_nc:>13.1f}x   same tokens: {'yes' if same else 'NO'}")  # fmt: skip
        ms = {name: 1e3 * t / args.new_tokens for name, t in best.items()}
        notes.append(f"batch {batch}, ms per new token: gptmini generate {ms['gptmini, KV cache']:.3f} (bare steps: "
                     f"flat {ms['flat step']:.3f}, module forward {ms['module forward']:.3f}), "
                     f"transformers {ms['transformers']:.3f}")  # fmt: skip
        rows[batch] = {"tokens_per_second": {"no_cache": round(r_nc, 1), "cache": round(r_c, 1),
                                             "transformers": round(r_hf, 1)},
                       "ms_per_new_token": {name: round(v, 4) for name, v in ms.items()},
                       "same_tokens": same}  # fmt: skip
    print("\n".join(notes))
    return {"model": {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
                      "vocab_size": args.vocab_size, "context": args.context, "parameters": n_params},
            "batches": rows}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--slow-repeat", type=int, default=3, help="runs of the uncached decoder (best kept)")
    p.add_argument(
        "--out", default="benchmarks/results/bench_generate.json", help="JSON results ('' for none)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: steady on a shared CPU)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {command_line()}\n# torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}, {cpu_name()}, {os.cpu_count()} CPU cores, "
          f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    result = {**run_info(), "args": vars(args), "transformers": transformers.__version__}
    result["cpu"] = table(args, torch.device("cpu"))
    if torch.cuda.is_available():
        result["cuda"] = {"gpu": torch.cuda.get_device_name(), **table(args, torch.device("cuda"))}
    else:
        print("\n(no CUDA GPU here: CUDA table skipped)")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
