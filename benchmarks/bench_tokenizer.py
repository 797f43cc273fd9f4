"""BPE training speed and compression: gptmini against Hugging Face ``tokenizers``, measured in one run.

Both learn a byte-level BPE with the GPT-2 pre-tokenisation, 256 byte tokens and ``<|endoftext|>``, at
the same vocabulary size, on the whole corpus. Targets: gptmini trains within 10x of ``tokenizers``
(a Rust library) and reaches the same characters per token on the val split within 2%.

    python benchmarks/bench_tokenizer.py [--vocab-sizes 1024 4096] [--repeats 1]
"""

import argparse
import os
import platform
import time

import tokenizers
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


def best_time(fn, repeats: int):
    """The fastest of ``repeats`` runs (the least disturbed by other work on the machine), and the result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    text, val = corpus_text("all"), corpus_text("val")
    print(f"corpus: {len(text):,} characters (all), val split {len(val):,} characters")
    print(
        f"python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
        f"{os.cpu_count()} CPUs, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}"
    )
    print()
    header = (
        f"{'vocab':>6} | {'gptmini s':>9} | {'tokenizers s':>12} | {'ratio':>6} | "
        f"{'gptmini chars/tok':>17} | {'tokenizers chars/tok':>20} | {'diff':>6} | {'encode all s':>12}"
    )
    print(header)
    print("-" * len(header))
    for vocab_size in args.vocab_sizes:
        t_ours, ours = best_time(lambda v=vocab_size: train_gptmini(text, v), args.repeats)
        t_hf, hf = best_time(lambda v=vocab_size: train_hf(text, v), args.repeats)
        assert ours.vocab_size == hf.get_vocab_size() == vocab_size
        # Encoding the whole corpus, each time with a fresh tokenizer (an empty cache of pieces).
        t_encode, _ = best_time(lambda t=ours: BPETokenizer.from_dict(t.to_dict()).encode(text), args.repeats)
        ids = ours.encode(val)
        assert ours.decode(ids) == val
        cpt_ours, cpt_hf = len(val) / len(ids), len(val) / len(hf.encode(val).ids)
        diff = cpt_ours / cpt_hf - 1
        print(
            f"{vocab_size:>6} | {t_ours:>9.2f} | {t_hf:>12.2f} | {t_ours / t_hf:>5.1f}x | "
            f"{cpt_ours:>17.3f} | {cpt_hf:>20.3f} | {diff:>+6.1%} | {t_encode:>12.2f}"
        )
        if ours.to_hf().encode(val).ids != ids:
            print("  warning: gptmini's export to tokenizers gives different ids on the val split")
    print()
    print("ratio = gptmini training seconds / tokenizers training seconds (target <= 10x);")
    print("diff = relative difference in characters per token on the val split (target within 2%);")
    print("encode all s = seconds for gptmini to encode the whole corpus. Times: the best of --repeats runs.")


if __name__ == "__main__":
    main()
