"""Chapter 07's sweep: what each decoding strategy does to quality, repetition and diversity.

The committed character model (``load_checkpoint("shakespeare-char")``) continues ``--prompts``
passages of the held-out plays, ``--samples`` times each, under every setting of a sweep: greedy,
temperature, top-k, top-p, and the repetition penalty. A prompt is the first ``--prompt-len``
characters of a speech (the speaker's name, a colon, the first words) and every sample adds
``--new`` characters, so that prompt and sample together fit the model's training context of 128
characters. Each setting is scored by

- ``loglik``: the average log-probability per character of the samples under the model itself
  (temperature 1, no filter), the quantity decoding trades against diversity;
- ``real_words``: the share of the samples' words that occur in the training plays (a misspelt
  word is not one); the last word of a sample, which may be cut off, is not counted;
- ``distinct2``: distinct word bigrams over all bigrams of all samples of a setting pooled
  (Li et al. 2016): 1 when no two places in any sample share a bigram, low when samples are copies;
- ``repeat2``: the share of a sample's word bigrams that already occurred earlier in the same
  sample (loops such as "of the stand of the stand"), averaged over samples.

The same numbers are computed for the passages that really follow the prompts in the plays, the
reference a decoding strategy should come close to. Seeded (``seed=0`` for every setting).

    OMP_NUM_THREADS=1 nice python benchmarks/ch07_diversity.py   # writes benchmarks/results/ch07_diversity.json
"""

from __future__ import annotations

import argparse
import re
import time

import torch
from runinfo import run_info, write_json

from gptmini.checkpoints import load_checkpoint
from gptmini.data import corpus_text
from gptmini.generate import generate

SETTINGS = (
    [("greedy", {"do_sample": False})]
    + [(f"temperature {t}", {"temperature": t}) for t in (0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5)]
    + [(f"top-k {k}", {"top_k": k}) for k in (2, 3, 5, 10, 20, 40)]
    + [(f"top-p {p}", {"top_p": p}) for p in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)]
    + [(f"greedy, penalty {r}", {"do_sample": False, "repetition_penalty": r}) for r in (1.1, 1.3, 1.5)]
    + [(f"temperature 1.0, penalty {r}", {"repetition_penalty": r}) for r in (1.1, 1.3)]
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def real_word_share(texts: list[str], vocabulary: set[str]) -> float:
    found = [w for t in texts for w in words(t)[:-1]]  # the last word may be cut off
    return sum(w in vocabulary for w in found) / max(1, len(found))


def bigrams(text: str) -> list[tuple[str, str]]:
    w = words(text)
    return list(zip(w, w[1:], strict=False))


def distinct2(texts: list[str]) -> float:
    pooled = [b for t in texts for b in bigrams(t)]
    return len(set(pooled)) / max(1, len(pooled))


def repeat2(text: str) -> float:
    grams = bigrams(text)
    return sum(g in grams[:i] for i, g in enumerate(grams)) / max(1, len(grams))


@torch.no_grad()
def loglik(model, seqs: torch.Tensor, prompt_len: int) -> float:
    """Mean log-probability per character of seqs[:, prompt_len:] given what precedes them."""
    logits, _ = model(seqs[:, :-1])
    logp = logits.float().log_softmax(-1).gather(-1, seqs[:, 1:, None])[..., 0]  # (N, L-1)
    return float(logp[:, prompt_len - 1 :].mean())


def score(model, tok, seqs: torch.Tensor, prompt_len: int, vocabulary: set[str]) -> dict:
    texts = [tok.decode(row[prompt_len:].tolist()) for row in seqs]
    return {
        "loglik": loglik(model, seqs, prompt_len),
        "real_words": real_word_share(texts, vocabulary),
        "distinct2": distinct2(texts),
        "repeat2": sum(map(repeat2, texts)) / len(texts),
        "example": texts[0],
    }


def prompts_from_val(tok, n: int, prompt_len: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n speech openings spread evenly over the held-out plays, and the real text that follows."""
    val = corpus_text("val")
    starts = [m.end() for m in re.finditer(r"\n\n", val) if m.end() + prompt_len + new < len(val)]
    chosen = [starts[i * len(starts) // n] for i in range(n)]
    windows = torch.tensor([tok.encode(val[s : s + prompt_len + new]) for s in chosen])
    return windows[:, :prompt_len], windows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=8, help="samples per prompt (num_return_sequences)")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new", type=int, default=96)
    p.add_argument("--out", default="benchmarks/results/ch07_diversity.json")
    args = p.parse_args()
    start = time.perf_counter()
    model, tok = load_checkpoint("shakespeare-char")
    assert args.prompt_len + args.new <= model.config.block_size, "stay inside the training context"
    vocabulary = set(words(corpus_text("train")))
    prompts, real = prompts_from_val(tok, args.prompts, args.prompt_len, args.new)
    results = {"held-out text": score(model, tok, real, args.prompt_len, vocabulary)}
    for name, kwargs in SETTINGS:
        sampling = {"do_sample": True} | kwargs  # generate is greedy unless asked: sample, but where "greedy"
        seqs = generate(model, prompts, args.new, num_return_sequences=args.samples, seed=0, **sampling)
        results[name] = score(model, tok, seqs, args.prompt_len, vocabulary) | {"settings": kwargs}
        r = results[name]
        print(f"{name:32s} loglik {r['loglik']:6.3f}  real words {r['real_words']:.3f}  "
              f"distinct-2 {r['distinct2']:.3f}  repeat-2 {r['repeat2']:.3f}", flush=True)  # fmt: skip
    out = {
        **run_info(),
        "args": vars(args),
        "prompts": [tok.decode(row.tolist()) for row in prompts],
        "total_seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }
    write_json(args.out, out)
    print(f"in {out['total_seconds']} s")


if __name__ == "__main__":
    main()
