"""BPE training speed and compression: gptmini against Hugging Face ``tokenizers``.

Both learn a byte-level BPE with the GPT-2 pre-tokenisation, 256 byte tokens and ``<|endoftext|>``, at
the same vocabulary size, on the training plays only; characters per token are measured on the held-out
(val) plays, which neither tokenizer has seen. Each training is timed ``--repeats`` times, alternating the
two implementations so that both see the same disturbances from other work on the machine, and the best
time of each is kept. Targets: gptmini trains within 10x of ``tokenizers`` (a Rust library) and reaches
the same characters per token on the val split within 2%.

    nice python benchmarks/bench_tokenizer.py | tee benchmarks/results/bench_tokenizer.txt  # also writes .json
"""

import argparse
import os
import platform
import time

import tokenizers
from runinfo import run_info, write_json
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from gptmini.data import corpus_text
from gptmini.tokenizer import BPETokenizer

EOT = "<|endoftext|>"


def train_gptmini(text: str, vocab_size: int) -> BPETokenizer:
    return BPETokenizer.train(text, vocab_size=vocab_size, special_tokens=(EOT,))


def train_hf(text: str, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, as in gptmini
        show_progress=False,
    )
    # Lines, so that tokenizers can spread the pre-tokenisation over its threads.
    tok.train_from_iterator(text.splitlines(keepends=True), trainer)
    return tok


def timed(fn):
    """Seconds that ``fn()`` took, and its result."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", default="benchmarks/results/bench_tokenizer.json", help="JSON results ('' for none)"
    )
    args = parser.parse_args()

    train, val = corpus_text("train"), corpus_text("val")
    print(
        f"corpus: train split {len(train):,} characters (trained on), val split {len(val):,} characters (measured on)"
    )
    print(
        f"python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
        f"{os.cpu_count()} CPUs, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}"
    )
    print()
    header = (
        f"{'vocab':>6} | {'gptmini s':>9} | {'tokenizers s':>12} | {'ratio':>6} | "
        f"{'gptmini chars/tok':>17} | {'tokenizers chars/tok':>20} | {'diff':>6} | {'encode train s':>14}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for vocab_size in args.vocab_sizes:
        t_ours, t_hf = [], []
        for _ in range(args.repeats):  # alternate, so that both meet the same load
            t, ours = timed(lambda v=vocab_size: train_gptmini(train, v))
            t_ours.append(t)
            t, hf = timed(lambda v=vocab_size: train_hf(train, v))
            t_hf.append(t)
        assert ours.vocab_size == hf.get_vocab_size() == vocab_size
        # Encoding the training text, each time with a fresh tokenizer (an empty cache of pieces).
        t_encode = min(
            timed(lambda t=ours: BPETokenizer.from_dict(t.to_dict()).encode(train))[0]
            for _ in range(args.repeats)
        )
        ids = ours.encode(val)
        assert ours.decode(ids) == val
        cpt_ours, cpt_hf = len(val) / len(ids), len(val) / len(hf.encode(val).ids)
        diff = cpt_ours / cpt_hf - 1
        same_ids = ours.to_hf().encode(val).ids == ids
        print(
            f"{vocab_size:>6} | {min(t_ours):>9.2f} | {min(t_hf):>12.2f} | {min(t_ours) / min(t_hf):>5.2f}x | "
            f"{cpt_ours:>17.3f} | {cpt_hf:>20.3f} | {diff:>+6.1%} | {t_encode:>14.2f}"
        )
        if not same_ids:
            print("  warning: gptmini's export to tokenizers gives different ids on the val split")
        rows.append(
            {
                "vocab_size": vocab_size,
                "gptmini_train_s": t_ours,
                "tokenizers_train_s": t_hf,
                "ratio_best": min(t_ours) / min(t_hf),
                "gptmini_chars_per_token_val": cpt_ours,
                "tokenizers_chars_per_token_val": cpt_hf,
                "gptmini_encode_train_s": t_encode,
                "export_same_ids": same_ids,
            }
        )
    print()
    print("ratio = gptmini training seconds / tokenizers training seconds, best of each (target <= 10x);")
    print("diff = relative difference in characters per token on the val split (target within 2%);")
    print("encode train s = seconds for gptmini to encode the training split.")
    print(f"Times: the best of {args.repeats} runs of each, the two implementations alternating.")
    if args.out:
        result = run_info() | {
            "args": vars(args),
            "tokenizers": tokenizers.__version__,
            "python": platform.python_version(),
            "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS", "unset"),
            "train_chars": len(train),
            "val_chars": len(val),
            "rows": rows,
        }
        write_json(args.out, result)


if __name__ == "__main__":
    main()
